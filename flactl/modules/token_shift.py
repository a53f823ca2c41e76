"""RWKV token shift: ``delta[t] = x[t-1] - x[t]`` per sequence (x[-1] = 0, or ``cache`` = the last token of
the previous call). Varlen via ``cu_seqlens`` (``x [1, total, D]``); nothing crosses a boundary.

Backward: ``dx[t] = dy[t+1] - dy[t]`` (the first term only inside the sequence); ``dcache[n] = dy[start_n]``.

Example::

    >>> delta = token_shift(torch.randn(2, 7, 64))
    >>> delta, last = token_shift(torch.randn(2, 7, 64), output_cache=True)   # last [2, 64]
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from flactl.ops.utils.validate import check_cu_seqlens

from ._common import check_float, next_pow2, use_triton

__all__ = ["token_shift", "token_shift_ref"]


@triton.jit
def token_shift_kernel(X, CACHE, Y, SEQ, CU, Tlen, TT, D, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
                       BACKWARD: tl.constexpr, HAS_CACHE: tl.constexpr, IS_VARLEN: tl.constexpr):
    i_t = tl.program_id(0)
    i_d = tl.program_id(1)
    o_t = (i_t * BLOCK_T + tl.arange(0, BLOCK_T)).to(tl.int64)
    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    m_t = o_t < TT
    m_d = o_d < D
    if IS_VARLEN:
        seq = tl.load(SEQ + o_t, mask=m_t, other=0).to(tl.int64)
        start = tl.load(CU + seq, mask=m_t, other=0).to(tl.int64)
        end = tl.load(CU + seq + 1, mask=m_t, other=0).to(tl.int64)
    else:
        seq = o_t // Tlen
        start = seq * Tlen
        end = start + Tlen
    m = m_t[:, None] & m_d[None, :]
    b_x = tl.load(X + o_t[:, None] * D + o_d[None, :], mask=m, other=0.).to(tl.float32)
    if BACKWARD:
        # dx[t] = dy[t+1] - dy[t]
        m_n = m_t & (o_t + 1 < end)
        b_n = tl.load(X + (o_t[:, None] + 1) * D + o_d[None, :], mask=m_n[:, None] & m_d[None, :], other=0.)
        b_y = b_n.to(tl.float32) - b_x
    else:
        m_p = m_t & (o_t > start)
        b_p = tl.load(X + (o_t[:, None] - 1) * D + o_d[None, :], mask=m_p[:, None] & m_d[None, :], other=0.)
        b_p = b_p.to(tl.float32)
        if HAS_CACHE:
            m_c = m_t & (o_t == start)
            b_c = tl.load(CACHE + seq[:, None] * D + o_d[None, :], mask=m_c[:, None] & m_d[None, :], other=0.)
            b_p += b_c.to(tl.float32)
        b_y = b_p - b_x
    tl.store(Y + o_t[:, None] * D + o_d[None, :], b_y.to(Y.dtype.element_ty), mask=m)


def _launch(x2, cache, seq, cu, Tlen, backward):
    TT, D = x2.shape
    y = torch.empty_like(x2)
    BLOCK_D = min(next_pow2(D), 256)
    BLOCK_T = max(1, min(64, 4096 // BLOCK_D))
    if TT > 0:
        grid = (triton.cdiv(TT, BLOCK_T), triton.cdiv(D, BLOCK_D))
        token_shift_kernel[grid](x2, cache, y, seq, cu, Tlen, TT, D, BLOCK_T=BLOCK_T, BLOCK_D=BLOCK_D,
                                 BACKWARD=backward, HAS_CACHE=cache is not None, IS_VARLEN=seq is not None,
                                 num_warps=4)
    return y


class _TokenShiftFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x2, cache, seq, cu, Tlen, starts, nonempty):
        ctx.save_for_backward(seq, cu, starts, nonempty)
        ctx.Tlen = Tlen
        ctx.has_cache = cache is not None
        return _launch(x2, cache, seq, cu, Tlen, False)

    @staticmethod
    def backward(ctx, dy):
        seq, cu, starts, nonempty = ctx.saved_tensors
        dy = dy.contiguous()
        dx = _launch(dy, None, seq, cu, ctx.Tlen, True)
        dcache = None
        if ctx.has_cache and ctx.needs_input_grad[1]:
            dcache = dy[starts.clamp(max=max(dy.shape[0] - 1, 0))] * nonempty[:, None].to(dy.dtype)
        return dx, dcache, None, None, None, None, None


def _bounds(B, T, cu_seqlens, device):
    if cu_seqlens is not None:
        cu = cu_seqlens.long()
        return cu[:-1], cu[1:]
    starts = torch.arange(B, device=device) * T
    return starts, starts + T


def token_shift_ref(x, cu_seqlens=None, cache=None):
    """Torch reference: per-sequence ``pad(x)[t-1] - x[t]``."""
    B, T, D = x.shape
    starts, ends = _bounds(B, T, cu_seqlens, x.device)
    xs = x.reshape(B * T, D)
    prev = torch.cat([xs.new_zeros(1, D), xs[:-1]], 0)
    is_first = torch.zeros(B * T, dtype=torch.bool, device=x.device)
    nonempty = ends > starts
    is_first[starts[nonempty]] = True
    first_val = torch.zeros_like(xs)
    if cache is not None:
        first_val = first_val.index_put((starts[nonempty],), cache[nonempty].to(xs.dtype))
    prev = torch.where(is_first[:, None], first_val, prev)
    return (prev - xs).view(B, T, D)


def token_shift(x: torch.Tensor, cu_seqlens: Optional[torch.Tensor] = None, cache: Optional[torch.Tensor] = None,
                output_cache: bool = False):
    """x ``[B, T, D]`` -> ``delta [B, T, D]`` (``x[t-1] - x[t]``); with ``output_cache`` also returns the last
    token of each sequence ``[N, D]`` (the cache for the next call; carried over for empty sequences)."""
    check_float("x", x)
    if x.dim() != 3:
        raise ValueError(f"x must have 3 dims [B, T, D], got shape {tuple(x.shape)}")
    B, T, D = x.shape
    N = check_cu_seqlens(cu_seqlens, B, T)
    if cache is not None and tuple(cache.shape) != (N, D):
        raise ValueError(f"cache must have shape [N, D] = {(N, D)}, got {tuple(cache.shape)}")
    starts, ends = _bounds(B, T, cu_seqlens, x.device)
    if use_triton(x):
        seq = None
        if cu_seqlens is not None:
            lens = ends - starts
            seq = torch.repeat_interleave(torch.arange(N, device=x.device, dtype=torch.int32), lens, output_size=B * T)
        y = _TokenShiftFn.apply(x.reshape(B * T, D).contiguous(), cache.contiguous() if cache is not None else None,
                                seq, cu_seqlens, T, starts, ends > starts).view(B, T, D)
    else:
        y = token_shift_ref(x, cu_seqlens, cache)
    if not output_cache:
        return y
    xs = x.reshape(B * T, D)
    nonempty = ends > starts
    last = xs[(ends - 1).clamp(min=0)] if B * T > 0 else x.new_zeros(N, D)
    prev = cache if cache is not None else x.new_zeros(N, D)
    last = torch.where(nonempty[:, None], last, prev.to(x.dtype))
    return y, last
