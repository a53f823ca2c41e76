"""Rotary position embedding (RoPE) on ``[B, T, H, D]`` tensors, out of place.

For position ``p`` and frequency ``f_i = base^(-2i/dim)`` a pair ``(x0, x1)`` is rotated by ``p*f_i``:
``y0 = x0 cos - x1 sin``, ``y1 = x0 sin + x1 cos``. Pairs are ``(i, i + dim/2)`` (half layout, GPT-NeoX /
Llama) or ``(2i, 2i+1)`` (``interleaved=True``, GPT-J). With ``dim < D`` only the first ``dim`` channels
rotate (partial rotary); the rest pass through. The backward is the same rotation with ``-sin``.

Positions: token ``t`` of sequence ``n`` sits at ``t + offset``; ``seqlen_offset`` is an int or a per
sequence LongTensor ``[B]`` (``[N]`` with ``cu_seqlens``) for cached decoding. Negative positions
(left padding) are clamped to 0. Varlen: ``x`` is ``[1, total, H, D]`` and positions restart at each
``cu_seqlens`` boundary. The kernel reads float32 cos/sin tables ``[L, dim/2]`` once per token.

Example::

    >>> rope = RotaryEmbedding(dim=64)
    >>> q, k = rope(torch.randn(2, 7, 4, 64), torch.randn(2, 7, 2, 64), seqlen_offset=3)
"""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn as nn
import triton
import triton.language as tl

from flactl.ops.utils.validate import check_cu_seqlens

from ._common import check_float, next_pow2, use_triton

__all__ = ["RotaryEmbedding", "rotary_embedding", "rotary_embedding_ref"]


@triton.jit
def rotary_kernel(X, Y, COS, SIN, POS, OFF, T, H, D, R2, L, s_xb, s_xt, s_xh, off_scalar,
                  BLOCK_H: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_P: tl.constexpr,
                  INTERLEAVED: tl.constexpr, CONJ: tl.constexpr, HAS_POS: tl.constexpr,
                  HAS_OFF: tl.constexpr, HAS_PASS: tl.constexpr):
    i_bt = tl.program_id(0).to(tl.int64)
    i_h = tl.program_id(1)
    i_b = i_bt // T
    i_t = i_bt % T
    if HAS_POS:
        pos = tl.load(POS + i_bt).to(tl.int64)
    elif HAS_OFF:
        pos = i_t + tl.load(OFF + i_b).to(tl.int64)
    else:
        pos = i_t + off_scalar
    pos = tl.minimum(tl.maximum(pos, 0), L - 1)
    o_r = tl.arange(0, BLOCK_R)
    m_r = o_r < R2
    b_cos = tl.load(COS + pos * R2 + o_r, mask=m_r, other=1.)
    b_sin = tl.load(SIN + pos * R2 + o_r, mask=m_r, other=0.)
    if CONJ:
        b_sin = -b_sin
    o_h = i_h * BLOCK_H + tl.arange(0, BLOCK_H)
    m_h = o_h < H
    p_x = X + i_b * s_xb + i_t * s_xt + o_h.to(tl.int64)[:, None] * s_xh
    p_y = Y + (i_bt * H + o_h.to(tl.int64)[:, None]) * D
    if INTERLEAVED:
        o_0 = 2 * o_r
        o_1 = 2 * o_r + 1
    else:
        o_0 = o_r
        o_1 = o_r + R2
    mask = m_h[:, None] & m_r[None, :]
    b_x0 = tl.load(p_x + o_0[None, :], mask=mask, other=0.).to(tl.float32)
    b_x1 = tl.load(p_x + o_1[None, :], mask=mask, other=0.).to(tl.float32)
    b_y0 = b_x0 * b_cos[None, :] - b_x1 * b_sin[None, :]
    b_y1 = b_x0 * b_sin[None, :] + b_x1 * b_cos[None, :]
    tl.store(p_y + o_0[None, :], b_y0.to(Y.dtype.element_ty), mask=mask)
    tl.store(p_y + o_1[None, :], b_y1.to(Y.dtype.element_ty), mask=mask)
    if HAS_PASS:
        o_p = 2 * R2 + tl.arange(0, BLOCK_P)
        m_p = m_h[:, None] & (o_p < D)[None, :]
        b_p = tl.load(p_x + o_p[None, :], mask=m_p, other=0.)
        tl.store(p_y + o_p[None, :], b_p, mask=m_p)


def _launch(x, cos, sin, pos, off, off_scalar, interleaved, conj):
    B, T, H, D = x.shape
    if x.stride(-1) != 1:
        x = x.contiguous()
    y = torch.empty(B, T, H, D, dtype=x.dtype, device=x.device)
    R2 = cos.shape[1]
    BLOCK_R = next_pow2(R2)
    BLOCK_P = next_pow2(D - 2 * R2) if D > 2 * R2 else 1
    BLOCK_H = max(1, min(next_pow2(H), 8192 // max(BLOCK_R * 2, 1)))
    if B * T > 0:
        grid = (B * T, triton.cdiv(H, BLOCK_H))
        rotary_kernel[grid](x, y, cos, sin, pos, off, T, H, D, R2, cos.shape[0], x.stride(0), x.stride(1),
                            x.stride(2), off_scalar, BLOCK_H=BLOCK_H, BLOCK_R=BLOCK_R, BLOCK_P=BLOCK_P,
                            INTERLEAVED=interleaved, CONJ=conj, HAS_POS=pos is not None, HAS_OFF=off is not None,
                            HAS_PASS=D > 2 * R2, num_warps=4 if BLOCK_H * BLOCK_R * 2 >= 2048 else 2)
    return y


class _RotaryFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cos, sin, pos, off, off_scalar, interleaved):
        ctx.save_for_backward(cos, sin, pos, off)
        ctx.cfg = (off_scalar, interleaved)
        return _launch(x, cos, sin, pos, off, off_scalar, interleaved, False)

    @staticmethod
    def backward(ctx, dy):
        cos, sin, pos, off = ctx.saved_tensors
        off_scalar, interleaved = ctx.cfg
        return _launch(dy, cos, sin, pos, off, off_scalar, interleaved, True), None, None, None, None, None, None


def _positions(B: int, T: int, seqlen_offsets, cu_seqlens, device) -> torch.Tensor:
    """Long [B, T] absolute position of every token (varlen: local index + per-sequence offset)."""
    if cu_seqlens is not None:
        cu = cu_seqlens.to(device=device, dtype=torch.long)
        lens = cu[1:] - cu[:-1]
        seq = torch.repeat_interleave(torch.arange(lens.numel(), device=device), lens, output_size=T)
        pos = torch.arange(T, device=device) - cu[:-1][seq]
        if isinstance(seqlen_offsets, torch.Tensor):
            pos = pos + seqlen_offsets.to(device=device, dtype=torch.long)[seq]
        else:
            pos = pos + int(seqlen_offsets)
        return pos.view(1, T)
    pos = torch.arange(T, device=device).view(1, T).expand(B, T)
    if isinstance(seqlen_offsets, torch.Tensor):
        return pos + seqlen_offsets.to(device=device, dtype=torch.long).view(B, 1)
    return pos + int(seqlen_offsets)


def rotary_embedding_ref(x, cos, sin, interleaved=False, seqlen_offsets=0, cu_seqlens=None, conj=False):
    """Plain torch RoPE (float32 math): the CPU path and the test reference."""
    B, T, H, D = x.shape
    R2 = cos.shape[1]
    pos = _positions(B, T, seqlen_offsets, cu_seqlens, x.device).clamp(0, cos.shape[0] - 1)
    c = cos.float()[pos].unsqueeze(2)
    s = sin.float()[pos].unsqueeze(2)
    if conj:
        s = -s
    xf = x.float()
    xr, rest = xf[..., :2 * R2], xf[..., 2 * R2:]
    if interleaved:
        x0, x1 = xr[..., 0::2], xr[..., 1::2]
        yr = torch.stack([x0 * c - x1 * s, x0 * s + x1 * c], dim=-1).flatten(-2)
    else:
        x0, x1 = xr[..., :R2], xr[..., R2:]
        yr = torch.cat([x0 * c - x1 * s, x0 * s + x1 * c], dim=-1)
    return torch.cat([yr, rest], dim=-1).to(x.dtype)


def rotary_embedding(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool = False,
                     inplace: bool = False, seqlen_offsets: Union[int, torch.Tensor] = 0,
                     cu_seqlens: Optional[torch.Tensor] = None, max_seqlen: Optional[int] = None) -> torch.Tensor:
    """Apply RoPE to ``x [B, T, H, D]`` with tables ``cos, sin [L, rotary_dim/2]`` (float32 recommended).

    ``seqlen_offsets``: int or LongTensor ``[B]`` (``[N]`` with ``cu_seqlens``). ``inplace`` is accepted
    for fla compatibility and ignored (the result is always a new tensor). Returns ``[B, T, H, D]``.
    """
    check_float("x", x)
    if x.dim() != 4:
        raise ValueError(f"x must have 4 dims [B, T, H, D], got shape {tuple(x.shape)}")
    B, T, H, D = x.shape
    for name, t in (("cos", cos), ("sin", sin)):
        check_float(name, t)
        if t.dim() != 2:
            raise ValueError(f"{name} must have 2 dims [L, rotary_dim/2], got shape {tuple(t.shape)}")
    if cos.shape != sin.shape:
        raise ValueError(f"cos and sin must have the same shape, got {tuple(cos.shape)} and {tuple(sin.shape)}")
    if 2 * cos.shape[1] > D:
        raise ValueError(f"rotary dim {2 * cos.shape[1]} (from cos) exceeds the head dim of x ({D})")
    N = check_cu_seqlens(cu_seqlens, B, T)
    if isinstance(seqlen_offsets, torch.Tensor):
        if seqlen_offsets.dim() != 1 or seqlen_offsets.numel() != N or seqlen_offsets.is_floating_point():
            raise ValueError(f"seqlen_offsets must be an int or an integer tensor [{N}] (one per sequence), "
                             f"got shape {tuple(seqlen_offsets.shape)} dtype {seqlen_offsets.dtype}")
    if not use_triton(x):
        return rotary_embedding_ref(x, cos, sin, interleaved, seqlen_offsets, cu_seqlens)
    cos = cos.float().contiguous()
    sin = sin.float().contiguous()
    pos = off = None
    off_scalar = 0
    if cu_seqlens is not None:
        pos = _positions(B, T, seqlen_offsets, cu_seqlens, x.device).to(torch.int32).reshape(-1)
    elif isinstance(seqlen_offsets, torch.Tensor):
        off = seqlen_offsets.to(device=x.device, dtype=torch.int64).contiguous()
    else:
        off_scalar = int(seqlen_offsets)
    return _RotaryFn.apply(x, cos, sin, pos, off, off_scalar, interleaved)


class RotaryEmbedding(nn.Module):
    """fla-compatible RoPE module: ``forward(q, k, seqlen_offset=0, cu_seqlens=None, max_seqlen=None)``
    returns rotated ``(q, k)``; q and k are ``[B, T, H, D]`` (k may have fewer heads). ``dim`` may be
    smaller than D (partial rotary). ``inv_freq`` is a non-persistent buffer (no state-dict keys)."""

    def __init__(self, dim: int, base: float = 10000.0, scale_base: Optional[float] = None,
                 interleaved: bool = False, pos_idx_in_fp32: bool = True, device=None):
        super().__init__()
        if not isinstance(dim, int) or dim < 2 or dim % 2:
            raise ValueError(f"dim must be a positive even int, got {dim!r}")
        if scale_base is not None:
            raise ValueError("scale_base (xPos) is not supported; pass scale_base=None")
        self.dim, self.base, self.interleaved = dim, float(base), interleaved
        self.scale_base, self.pos_idx_in_fp32 = scale_base, pos_idx_in_fp32
        self.register_buffer("inv_freq", self._compute_inv_freq(device), persistent=False)
        self._seq_len_cached = 0
        self._cos_cached = self._sin_cached = None

    def _compute_inv_freq(self, device=None):
        return 1.0 / (self.base ** (torch.arange(0, self.dim, 2, device=device, dtype=torch.float32) / self.dim))

    def reset_parameters(self):
        with torch.no_grad():
            self.inv_freq.copy_(self._compute_inv_freq(self.inv_freq.device))
        self._seq_len_cached = 0

    def _update_cos_sin_cache(self, seqlen: int, device):
        if (seqlen > self._seq_len_cached or self._cos_cached is None or self._cos_cached.device != device
                or self.inv_freq.device != device):
            # round up so generation does not rebuild the table at every step
            seqlen = max(seqlen, 256)
            seqlen = 1 << (seqlen - 1).bit_length() if seqlen <= 8192 else ((seqlen + 4095) // 4096) * 4096
            inv_freq = self._compute_inv_freq(device) if self.inv_freq.device.type == "meta" else self.inv_freq
            t = torch.arange(seqlen, device=device, dtype=torch.float32)
            freqs = torch.outer(t, inv_freq.to(device=device, dtype=torch.float32))
            self._cos_cached, self._sin_cached = torch.cos(freqs), torch.sin(freqs)
            self._seq_len_cached = seqlen

    def forward(self, q: torch.Tensor, k: torch.Tensor, seqlen_offset: Union[int, torch.Tensor] = 0,
                cu_seqlens: Optional[torch.Tensor] = None, max_seqlen: Optional[int] = None, **kwargs):
        check_float("q", q)
        check_float("k", k)
        if q.dim() != 4 or k.dim() != 4:
            raise ValueError(f"q and k must be [B, T, H, D], got q {tuple(q.shape)} k {tuple(k.shape)}")
        if q.shape[-1] < self.dim or k.shape[-1] < self.dim:
            raise ValueError(f"head dim of q/k ({q.shape[-1]}/{k.shape[-1]}) is smaller than rotary dim {self.dim}")
        T = q.shape[1] if max_seqlen is None else int(max_seqlen)
        if isinstance(seqlen_offset, torch.Tensor):
            T_needed = T + int(seqlen_offset.max().item()) if seqlen_offset.numel() else T
        else:
            T_needed = T + int(seqlen_offset)
        self._update_cos_sin_cache(max(T_needed, 1), q.device)
        q = rotary_embedding(q, self._cos_cached, self._sin_cached, self.interleaved, seqlen_offsets=seqlen_offset,
                             cu_seqlens=cu_seqlens)
        k = rotary_embedding(k, self._cos_cached, self._sin_cached, self.interleaved, seqlen_offsets=seqlen_offset,
                             cu_seqlens=cu_seqlens)
        return q, k

    def extra_repr(self) -> str:
        return f"dim={self.dim}, base={self.base}, interleaved={self.interleaved}"
