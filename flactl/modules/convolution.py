"""Causal depthwise short convolution (``ShortConvolution``) with varlen and one-step decoding.

For channel d and kernel width W (weight ``[D, 1, W]`` as in ``nn.Conv1d``):
    pre[t, d] = bias[d] + sum_{j<W} w[d, j] * x[t - (W-1) + j, d];   y = act(pre) (silu or identity)
Inputs before the start of a sequence are 0, or come from ``cache [N, D, W]`` (the last W inputs of
the previous call; slot W-1 is the most recent). Varlen: ``x [1, total, D]`` with ``cu_seqlens``;
nothing crosses a boundary. Decoding: ``causal_conv1d_update`` shifts the cache by one, appends the
new input and returns the output for that token (in place on the cache, like fla).

Kernels tile ``[BLOCK_T, BLOCK_D]`` and read the W shifted input tiles (cache hits after the first).
The backward recomputes ``pre`` (for silu') instead of storing it; dw/db are reduced per program.
Gradients do not flow into a passed-in ``cache`` on the Triton path (decoding caches are inference-only).

Example::

    >>> conv = ShortConvolution(hidden_size=64, kernel_size=4)
    >>> y, cache = conv(torch.randn(2, 9, 64), output_final_state=True)   # cache [2, 64, 4]
    >>> y1, cache = conv(torch.randn(2, 1, 64), cache=cache)              # one decoding step
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
import triton
import triton.language as tl

from flactl.ops.utils.validate import check_cu_seqlens

from ._common import check_float, next_pow2, num_programs_cap, use_triton

__all__ = ["ShortConvolution", "causal_conv1d", "causal_conv1d_update", "causal_conv1d_ref"]

_ACTS = {None: 0, "silu": 1, "swish": 1}


@triton.jit
def _seq_bounds(SEQ, CU, o_t, m_t, Tlen, IS_VARLEN: tl.constexpr):
    if IS_VARLEN:
        seq = tl.load(SEQ + o_t, mask=m_t, other=0).to(tl.int64)
        start = tl.load(CU + seq, mask=m_t, other=0).to(tl.int64)
        end = tl.load(CU + seq + 1, mask=m_t, other=0).to(tl.int64)
    else:
        seq = o_t // Tlen
        start = seq * Tlen
        end = start + Tlen
    return seq, start, end


@triton.jit
def _shifted(X, CACHE, src, start, seq, o_d, m_t, m_d, D, KW: tl.constexpr, HAS_CACHE: tl.constexpr):
    """x[src] for a tile of rows (src may precede the sequence start: then cache or 0)."""
    valid = (src >= start) & m_t
    b_x = tl.load(X + src[:, None] * D + o_d[None, :], mask=valid[:, None] & m_d[None, :], other=0.).to(tl.float32)
    if HAS_CACHE:
        ci = KW + (src - start)
        m_c = (~valid) & m_t & (ci >= 0)
        b_c = tl.load(CACHE + (seq[:, None] * D + o_d[None, :]) * KW + ci[:, None],
                      mask=m_c[:, None] & m_d[None, :], other=0.).to(tl.float32)
        b_x += b_c
    return b_x


@triton.jit
def _pre(X, W, BIAS, CACHE, o_u, start, seq, o_d, m_t, m_d, D,
         KW: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_CACHE: tl.constexpr, BLOCK_T: tl.constexpr,
         BLOCK_D: tl.constexpr):
    b_pre = tl.zeros([BLOCK_T, BLOCK_D], dtype=tl.float32)
    for j in tl.static_range(KW):
        b_w = tl.load(W + o_d * KW + j, mask=m_d, other=0.).to(tl.float32)
        b_pre += _shifted(X, CACHE, o_u - (KW - 1) + j, start, seq, o_d, m_t, m_d, D, KW, HAS_CACHE) * b_w[None, :]
    if HAS_BIAS:
        b_pre += tl.load(BIAS + o_d, mask=m_d, other=0.).to(tl.float32)[None, :]
    return b_pre


@triton.jit
def conv_fwd_kernel(X, W, BIAS, CACHE, Y, SEQ, CU, Tlen, TT, D,
                    KW: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, ACT: tl.constexpr,
                    HAS_BIAS: tl.constexpr, HAS_CACHE: tl.constexpr, IS_VARLEN: tl.constexpr):
    i_t = tl.program_id(0)
    i_d = tl.program_id(1)
    o_t = i_t.to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    m_t = o_t < TT
    m_d = o_d < D
    seq, start, end = _seq_bounds(SEQ, CU, o_t, m_t, Tlen, IS_VARLEN)
    b_y = _pre(X, W, BIAS, CACHE, o_t, start, seq, o_d, m_t, m_d, D, KW, HAS_BIAS, HAS_CACHE, BLOCK_T, BLOCK_D)
    if ACT == 1:
        b_y = b_y * tl.sigmoid(b_y)
    tl.store(Y + o_t[:, None] * D + o_d[None, :], b_y.to(Y.dtype.element_ty), mask=m_t[:, None] & m_d[None, :])


@triton.jit
def conv_bwd_kernel(X, W, BIAS, CACHE, DY, DX, DW_PART, DB_PART, SEQ, CU, Tlen, TT, D, blocks_per_prog,
                    KW: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, ACT: tl.constexpr,
                    HAS_BIAS: tl.constexpr, HAS_CACHE: tl.constexpr, IS_VARLEN: tl.constexpr):
    i_p = tl.program_id(0)
    i_d = tl.program_id(1)
    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    m_d = o_d < D
    o_w = tl.arange(0, BLOCK_W)
    b_dw = tl.zeros([BLOCK_D, BLOCK_W], dtype=tl.float32)
    b_db = tl.zeros([BLOCK_D], dtype=tl.float32)
    for i_b in range(i_p * blocks_per_prog, (i_p + 1) * blocks_per_prog):
        o_t = (i_b * BLOCK_T + tl.arange(0, BLOCK_T)).to(tl.int64)
        m_t = o_t < TT
        m = m_t[:, None] & m_d[None, :]
        seq, start, end = _seq_bounds(SEQ, CU, o_t, m_t, Tlen, IS_VARLEN)
        b_dy = tl.load(DY + o_t[:, None] * D + o_d[None, :], mask=m, other=0.).to(tl.float32)
        if ACT == 1:
            b_p = _pre(X, W, BIAS, CACHE, o_t, start, seq, o_d, m_t, m_d, D, KW, HAS_BIAS, HAS_CACHE, BLOCK_T, BLOCK_D)
            b_s = tl.sigmoid(b_p)
            b_dp = b_dy * b_s * (1. + b_p * (1. - b_s))
        else:
            b_dp = b_dy
        if HAS_BIAS:
            b_db += tl.sum(b_dp, axis=0)
        # dw[d, j] += sum_t dpre[t, d] * x[t - (W-1) + j, d]
        for j in tl.static_range(KW):
            b_xs = _shifted(X, CACHE, o_t - (KW - 1) + j, start, seq, o_d, m_t, m_d, D, KW, HAS_CACHE)
            b_dw += tl.where(o_w[None, :] == j, tl.sum(b_dp * b_xs, axis=0)[:, None], 0.)
        # dx[s, d] = sum_j w[d, j] * dpre[s + (W-1) - j, d]   (same sequence only)
        b_dx = tl.zeros([BLOCK_T, BLOCK_D], dtype=tl.float32)
        for j in tl.static_range(KW):
            b_w = tl.load(W + o_d * KW + j, mask=m_d, other=0.).to(tl.float32)
            if j == KW - 1:
                b_dpu = b_dp
            else:
                o_u = o_t + (KW - 1 - j)
                m_u = m_t & (o_u < end)
                b_dyu = tl.load(DY + o_u[:, None] * D + o_d[None, :], mask=m_u[:, None] & m_d[None, :],
                                other=0.).to(tl.float32)
                if ACT == 1:
                    b_pu = _pre(X, W, BIAS, CACHE, o_u, start, seq, o_d, m_u, m_d, D, KW, HAS_BIAS, HAS_CACHE,
                                BLOCK_T, BLOCK_D)
                    b_su = tl.sigmoid(b_pu)
                    b_dpu = b_dyu * b_su * (1. + b_pu * (1. - b_su))
                else:
                    b_dpu = b_dyu
            b_dx += b_dpu * b_w[None, :]
        tl.store(DX + o_t[:, None] * D + o_d[None, :], b_dx.to(DX.dtype.element_ty), mask=m)
    p_dw = DW_PART + (i_p.to(tl.int64) * D + o_d[:, None]) * KW + o_w[None, :]
    tl.store(p_dw, b_dw, mask=m_d[:, None] & (o_w < KW)[None, :])
    if HAS_BIAS:
        tl.store(DB_PART + i_p.to(tl.int64) * D + o_d, b_db, mask=m_d)


@triton.jit
def conv_step_kernel(X, W, BIAS, CACHE, Y, D, KW: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_W: tl.constexpr,
                     ACT: tl.constexpr, HAS_BIAS: tl.constexpr):
    i_n = tl.program_id(0).to(tl.int64)
    i_d = tl.program_id(1)
    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    o_w = tl.arange(0, BLOCK_W)
    m_d = o_d < D
    p_c = CACHE + (i_n * D + o_d[:, None]) * KW + o_w[None, :]
    b_c = tl.load(p_c + 1, mask=m_d[:, None] & (o_w < KW - 1)[None, :], other=0.)
    b_x = tl.load(X + i_n * D + o_d, mask=m_d, other=0.)
    b_c = tl.where((o_w == KW - 1)[None, :], b_x[:, None].to(b_c.dtype), b_c)
    b_w = tl.load(W + o_d[:, None] * KW + o_w[None, :], mask=m_d[:, None] & (o_w < KW)[None, :], other=0.)
    b_y = tl.sum(b_c.to(tl.float32) * b_w.to(tl.float32), axis=1)
    if HAS_BIAS:
        b_y += tl.load(BIAS + o_d, mask=m_d, other=0.).to(tl.float32)
    if ACT == 1:
        b_y = b_y * tl.sigmoid(b_y)
    tl.debug_barrier()
    tl.store(p_c, b_c.to(CACHE.dtype.element_ty), mask=m_d[:, None] & (o_w < KW)[None, :])
    tl.store(Y + i_n * D + o_d, b_y.to(Y.dtype.element_ty), mask=m_d)


def _conv_tiles(D: int, backward: bool = False):
    # Backward: small tiles, it keeps ~W+2 fp32 tiles live; [32, 64] over 128 threads stays in registers.
    # Forward: [16, 256] x 4 warps, the fastest of 24 tiles swept on the H100 (scripts/gpu_conv_sweep.py,
    # 16k tokens, graph-timed): 81% / 83% of copy bandwidth at D = 2048 / 4096, vs 75% / 76% for the
    # former [32, 128] (wider rows = longer contiguous reads per program; 64+ rows per tile spill).
    if backward:
        return 32, min(next_pow2(D), 64)
    return 16, min(next_pow2(D), 256)


class _ConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x2, weight, bias, cache, seq, cu, Tlen, act):
        TT, D = x2.shape
        KW = weight.shape[-1]
        w2 = weight.reshape(D, KW).contiguous()
        y = torch.empty_like(x2)
        BLOCK_T, BLOCK_D = _conv_tiles(D)
        if TT > 0:
            grid = (triton.cdiv(TT, BLOCK_T), triton.cdiv(D, BLOCK_D))
            conv_fwd_kernel[grid](x2, w2, bias, cache, y, seq, cu, Tlen, TT, D, KW=KW, BLOCK_T=BLOCK_T,
                                  BLOCK_D=BLOCK_D, ACT=act, HAS_BIAS=bias is not None, HAS_CACHE=cache is not None,
                                  IS_VARLEN=seq is not None, num_warps=4)
        ctx.save_for_backward(x2, w2, bias, cache, seq, cu)
        ctx.cfg = (Tlen, act, weight.shape, weight.dtype)
        return y

    @staticmethod
    def backward(ctx, dy):
        x2, w2, bias, cache, seq, cu = ctx.saved_tensors
        Tlen, act, wshape, wdtype = ctx.cfg
        TT, D = x2.shape
        KW = w2.shape[1]
        dy = dy.contiguous()
        BLOCK_T, BLOCK_D = _conv_tiles(D, backward=True)
        nblocks = max(1, triton.cdiv(TT, BLOCK_T))
        nd = triton.cdiv(D, BLOCK_D)
        P = max(1, min(nblocks, num_programs_cap(x2.device) // nd if num_programs_cap(x2.device) > nd else 1))
        bpp = triton.cdiv(nblocks, P)
        P = triton.cdiv(nblocks, bpp)
        dx = torch.empty_like(x2)
        dw_part = torch.empty(P, D, KW, dtype=torch.float32, device=x2.device)
        db_part = torch.empty(P, D, dtype=torch.float32, device=x2.device) if bias is not None else None
        if TT > 0:
            conv_bwd_kernel[(P, nd)](x2, w2, bias, cache, dy, dx, dw_part, db_part, seq, cu, Tlen, TT, D, bpp,
                                     KW=KW, BLOCK_W=next_pow2(KW), BLOCK_T=BLOCK_T, BLOCK_D=BLOCK_D, ACT=act, HAS_BIAS=bias is not None,
                                     HAS_CACHE=cache is not None, IS_VARLEN=seq is not None, num_warps=4)
            dw = dw_part.sum(0).to(wdtype).view(wshape)
            db = db_part.sum(0).to(bias.dtype) if bias is not None else None
        else:
            dw = torch.zeros(wshape, dtype=wdtype, device=x2.device)
            db = torch.zeros_like(bias) if bias is not None else None
        return dx, dw, db, None, None, None, None, None


def _seq_index(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    lens = cu_seqlens[1:] - cu_seqlens[:-1]
    return torch.repeat_interleave(torch.arange(lens.numel(), device=cu_seqlens.device, dtype=torch.int32),
                                   lens, output_size=total)


def causal_conv1d_ref(x, weight, bias=None, activation=None, cache=None, cu_seqlens=None):
    """Vectorised torch causal depthwise conv (the CPU path and test oracle). x [B, T, D] -> [B, T, D]."""
    B, T, D = x.shape
    KW = weight.shape[-1]
    w = weight.reshape(D, KW).float()
    TT = B * T
    xf = x.reshape(TT, D).float()
    t = torch.arange(TT, device=x.device)
    if cu_seqlens is not None:
        seq = _seq_index(cu_seqlens, TT).long()
        start = cu_seqlens.long()[seq]
    else:
        seq = t // max(T, 1)
        start = seq * T
    pre = torch.zeros(TT, D, device=x.device, dtype=torch.float32)
    for j in range(KW):
        src = t - (KW - 1) + j
        valid = src >= start
        xs = torch.where(valid[:, None], xf[src.clamp(min=0)], torch.zeros((), device=x.device))
        if cache is not None:
            ci = (KW + (src - start)).clamp(0, KW - 1)
            cv = cache.float()[seq, :, ci]
            xs = torch.where(valid[:, None], xs, cv)
        pre = pre + xs * w[:, j]
    if bias is not None:
        pre = pre + bias.float()
    if _ACTS[activation] == 1:
        pre = F.silu(pre)
    return pre.to(x.dtype).view(B, T, D)


def _final_cache(x, KW, cache, cu_seqlens):
    """[N, D, W]: the last W inputs of each sequence (older slots from ``cache`` or 0)."""
    B, T, D = x.shape
    if cu_seqlens is not None:
        cu = cu_seqlens.long()
        xs, starts, ends = x[0], cu[:-1], cu[1:]
    else:
        xs = x.reshape(B * T, D)
        starts = torch.arange(B, device=x.device) * T
        ends = starts + T
    idx = ends[:, None] - KW + torch.arange(KW, device=x.device)[None, :]          # [N, W]
    valid = idx >= starts[:, None]
    out = xs[idx.clamp(min=0)] * valid[..., None].to(x.dtype)                       # [N, W, D]
    if cache is not None:
        ci = (KW + idx - starts[:, None]).clamp(0, KW - 1)                           # [N, W]
        cv = torch.gather(cache, 2, ci[:, None, :].expand(-1, D, -1)).transpose(1, 2)
        out = torch.where(valid[..., None], out, cv.to(out.dtype))
    return out.transpose(1, 2).contiguous()


def causal_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                  activation: Optional[str] = None, cache: Optional[torch.Tensor] = None,
                  output_final_state: bool = False, cu_seqlens: Optional[torch.Tensor] = None):
    """Causal depthwise conv. x ``[B, T, D]``, weight ``[D, W]`` or ``[D, 1, W]``, bias ``[D]``,
    cache ``[N, D, W]`` (N = B, or #sequences with cu_seqlens). Returns ``(y [B, T, D], final_cache or None)``."""
    check_float("x", x)
    if x.dim() != 3:
        raise ValueError(f"x must have 3 dims [B, T, D], got shape {tuple(x.shape)}")
    B, T, D = x.shape
    check_float("weight", weight)
    if weight.dim() not in (2, 3) or weight.shape[0] != D or (weight.dim() == 3 and weight.shape[1] != 1):
        raise ValueError(f"weight must have shape [{D}, W] or [{D}, 1, W], got {tuple(weight.shape)}")
    KW = weight.shape[-1]
    if bias is not None and tuple(bias.shape) != (D,):
        raise ValueError(f"bias must have shape [{D}], got {tuple(bias.shape)}")
    if activation not in _ACTS:
        raise ValueError(f"activation must be one of {list(_ACTS)}, got {activation!r}")
    N = check_cu_seqlens(cu_seqlens, B, T)
    if cache is not None and tuple(cache.shape) != (N, D, KW):
        raise ValueError(f"cache must have shape [N, D, W] = {(N, D, KW)}, got {tuple(cache.shape)}")
    if use_triton(x):
        x2 = x.reshape(B * T, D).contiguous()
        seq = _seq_index(cu_seqlens, B * T) if cu_seqlens is not None else None
        cc = cache.contiguous() if cache is not None else None
        y = _ConvFn.apply(x2, weight, bias, cc, seq, cu_seqlens, T, _ACTS[activation]).view(B, T, D)
    else:
        y = causal_conv1d_ref(x, weight, bias, activation, cache, cu_seqlens)
    final = _final_cache(x.detach(), KW, cache, cu_seqlens) if output_final_state else None
    return y, final


def causal_conv1d_update(x: torch.Tensor, cache: torch.Tensor, weight: torch.Tensor,
                         bias: Optional[torch.Tensor] = None, activation: Optional[str] = None) -> torch.Tensor:
    """One decoding step. x ``[N, D]`` (one token per sequence), cache ``[N, D, W]`` updated in place.
    Returns y ``[N, D]``."""
    check_float("x", x)
    if x.dim() != 2:
        raise ValueError(f"x must have 2 dims [N, D] for a decoding step, got shape {tuple(x.shape)}")
    N, D = x.shape
    KW = weight.shape[-1]
    if weight.numel() != D * KW:
        raise ValueError(f"weight must have shape [{D}, 1, W], got {tuple(weight.shape)}")
    if cache is None or tuple(cache.shape) != (N, D, KW):
        raise ValueError(f"cache must have shape [N, D, W] = {(N, D, KW)}, got "
                         f"{None if cache is None else tuple(cache.shape)}")
    if activation not in _ACTS:
        raise ValueError(f"activation must be one of {list(_ACTS)}, got {activation!r}")
    if use_triton(x) and cache.is_contiguous():
        y = torch.empty_like(x)
        BLOCK_D = min(next_pow2(D), 256)
        conv_step_kernel[(N, triton.cdiv(D, BLOCK_D))](
            x.contiguous(), weight.reshape(D, KW).contiguous(), bias, cache, y, D, KW=KW, BLOCK_D=BLOCK_D,
            BLOCK_W=next_pow2(KW), ACT=_ACTS[activation], HAS_BIAS=bias is not None, num_warps=4)
        return y
    new = torch.cat([cache[..., 1:], x.unsqueeze(-1).to(cache.dtype)], dim=-1)
    cache.copy_(new)
    pre = (new.float() * weight.reshape(D, KW).float()).sum(-1)
    if bias is not None:
        pre = pre + bias.float()
    if _ACTS[activation] == 1:
        pre = F.silu(pre)
    return pre.to(x.dtype)


class ShortConvolution(nn.Conv1d):
    """fla-compatible short causal depthwise convolution (``weight [D, 1, W]``, optional ``bias [D]``).

    ``forward(x [B, T, D], residual=None, mask=None, cache=None, output_final_state=False, cu_seqlens=None)``
    returns ``(y [B, T, D], cache [N, D, W] or None)``. With a cache and one token per sequence it runs the
    decoding step (cache updated in place and returned).
    """

    def __init__(self, hidden_size: int, kernel_size: int, bias: bool = False, activation: Optional[str] = "silu",
                 backend: Optional[str] = "triton", device=None, dtype=None, **kwargs):
        if not isinstance(kernel_size, int) or kernel_size < 1:
            raise ValueError(f"kernel_size must be a positive int, got {kernel_size!r}")
        if activation not in _ACTS:
            raise ValueError(f"activation must be one of {list(_ACTS)}, got {activation!r}")
        super().__init__(hidden_size, hidden_size, kernel_size, groups=hidden_size, padding=kernel_size - 1,
                         bias=bias, device=device, dtype=dtype)
        self.hidden_size = hidden_size
        self.activation = activation
        self.backend = backend

    @property
    def state_size(self) -> int:
        return self.hidden_size * self.kernel_size[0]

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + (f", activation={self.activation}" if self.activation else "")

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None,
                cache: Optional[torch.Tensor] = None, output_final_state: bool = False,
                cu_seqlens: Optional[torch.Tensor] = None, **kwargs):
        check_float("x", x)
        if x.dim() != 3:
            raise ValueError(f"x must have 3 dims [B, T, D], got shape {tuple(x.shape)}")
        B, T, D = x.shape
        if D != self.hidden_size:
            raise ValueError(f"x must have last dim hidden_size={self.hidden_size}, got shape {tuple(x.shape)}")
        if mask is not None:
            if tuple(mask.shape) != (B, T):
                raise ValueError(f"mask must have shape [B, T] = {(B, T)}, got {tuple(mask.shape)}")
            x = x.mul(mask.unsqueeze(-1).to(x.dtype))
        N = B if cu_seqlens is None else cu_seqlens.numel() - 1
        if cache is not None and B * T == N:
            return self.step(x, residual, cache, output_final_state, cu_seqlens)
        y, final = causal_conv1d(x, self.weight, self.bias, self.activation, cache, output_final_state, cu_seqlens)
        if residual is not None:
            y = y + residual
        return y, final

    def step(self, x: torch.Tensor, residual: Optional[torch.Tensor], cache: torch.Tensor,
             output_final_state: bool = False, cu_seqlens: Optional[torch.Tensor] = None):
        """x ``[B, 1, D]`` (or ``[1, N, D]`` varlen, one token each); cache ``[N, D, W]`` updated in place."""
        shape = x.shape
        y = causal_conv1d_update(x.reshape(-1, shape[-1]), cache, self.weight, self.bias, self.activation)
        y = y.view(shape)
        if residual is not None:
            y = y + residual
        return y, cache
