"""Chunked HGRN: the same recurrence as ``fused_recurrent_hgrn`` with parallelism over time.

    h_t = exp(g_t) * h_{t-1} + x_t
Split each sequence into chunks of BT steps. With G_t the cumulative log-gate inside a chunk,
    h_t = local_t + exp(G_t) * h_in,   local_t = the recurrence started from 0 at the chunk start.
Kernel 1 computes every chunk's ``local`` in parallel (chunks x channel blocks); kernel 2 walks the
chunks of each sequence in order, adding exp(G_t) * h_in to whole [BT, BD] tiles at once.

The backward is the same scan reversed: dh_t = do_t + exp(g_{t+1}) dh_{t+1}. Inside a chunk the
factor on the carry is exp(sum_{s=t+1}^{end} g_s); the carry into a chunk is exp(g_next_start) *
dh_next_start (dht for the last chunk), and after the first chunk it is dh0. Kernel 2 also forms
dg_t = dh_t * exp(g_t) * h_{t-1} from the forward output.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..utils.backend import use_triton
from ..utils.index import prepare_chunk_indices
from .fused_recurrent import check_hgrn_inputs


@triton.jit
def chunk_hgrn_local_kernel(
    x, g, y, cu_seqlens, chunk_indices, T, D,
    BT: tl.constexpr, BD: tl.constexpr, REVERSE: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    """y = the recurrence inside each chunk from a zero state (forward), or the reversed recurrence
    with gates shifted by one step (REVERSE: y_t = x_t + exp(g_{t+1}) y_{t+1})."""
    i_d, i_t, i_b = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64), tl.program_id(2).to(tl.int64)
    if IS_VARLEN:
        i_n = tl.load(chunk_indices + i_t * 2).to(tl.int64)
        i_c = tl.load(chunk_indices + i_t * 2 + 1).to(tl.int64)
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        L = tl.load(cu_seqlens + i_n + 1).to(tl.int64) - bos
    else:
        i_c = i_t
        bos = i_b * T
        L = T
    o_d = i_d * BD + tl.arange(0, BD)
    m_d = o_d < D
    start = i_c * BT
    n = tl.minimum(BT, L - start)
    b_y = tl.zeros([BD], dtype=tl.float32)
    b_a = tl.zeros([BD], dtype=tl.float32)  # exp(g_{t+1}) for REVERSE; unused on the first step
    for i in range(0, n):
        if REVERSE:
            t = start + n - 1 - i
        else:
            t = start + i
        p = (bos + t) * D + o_d
        b_x = tl.load(x + p, mask=m_d, other=0.0).to(tl.float32)
        b_e = tl.exp(tl.load(g + p, mask=m_d, other=0.0).to(tl.float32))
        if REVERSE:
            b_y = b_a * b_y + b_x
            b_a = b_e
        else:
            b_y = b_e * b_y + b_x
        tl.store(y + p, b_y.to(y.dtype.element_ty), mask=m_d)


@triton.jit
def chunk_hgrn_carry_kernel(
    y, g, c0, cn, o, h0, dg, cu_seqlens, T, D,
    BT: tl.constexpr, BD: tl.constexpr, REVERSE: tl.constexpr, USE_C0: tl.constexpr,
    STORE_CN: tl.constexpr, USE_H0: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    """Adds the carried state to each chunk's local result (in place in y), chunk after chunk.
    Forward: the carry starts at c0 = h0 and ends as cn = ht. REVERSE: starts at c0 = dht, ends as
    cn = dh0, and writes dg from the forward output o (h0 supplies h_{-1} when USE_H0)."""
    i_d, i_n = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        L = tl.load(cu_seqlens + i_n + 1).to(tl.int64) - bos
    else:
        bos = i_n * T
        L = T
    o_d = i_d * BD + tl.arange(0, BD)
    m_d = o_d < D
    b_c = tl.zeros([BD], dtype=tl.float32)
    if USE_C0:
        b_c += tl.load(c0 + i_n * D + o_d, mask=m_d, other=0.0).to(tl.float32)
    NC = tl.cdiv(L, BT)
    for i in range(0, NC):
        if REVERSE:
            i_c = NC - 1 - i
        else:
            i_c = i
        o_t = i_c * BT + tl.arange(0, BT)
        m_t = o_t < L
        m = m_t[:, None] & m_d[None, :]
        p = (bos + o_t[:, None]) * D + o_d[None, :]
        b_g = tl.load(g + p, mask=m, other=0.0).to(tl.float32)
        b_y = tl.load(y + p, mask=m, other=0.0).to(tl.float32)
        b_G = tl.cumsum(b_g, axis=0)
        if REVERSE:
            # factor on the carry: exp(sum_{s=t+1}^{end} g_s)
            b_y = b_y + tl.exp(tl.sum(b_g, axis=0)[None, :] - b_G) * b_c[None, :]
            b_e = tl.exp(b_g)
            # h_{t-1}: the forward output one row up; h0 (or 0) at the sequence start
            b_hp = tl.load(o + p - D, mask=m & (o_t[:, None] > 0), other=0.0).to(tl.float32)
            if USE_H0:
                b_h0 = tl.load(h0 + i_n * D + o_d, mask=m_d, other=0.0).to(tl.float32)
                b_hp = tl.where((o_t == 0)[:, None], b_h0[None, :], b_hp)
            tl.store(dg + p, (b_y * b_e * b_hp).to(dg.dtype.element_ty), mask=m)
            # new carry: exp(g_start) * dh_start (the chunk's first row)
            b_c = tl.sum(tl.where((o_t == i_c * BT)[:, None], b_y * b_e, 0.0), axis=0)
        else:
            b_y = b_y + tl.exp(b_G) * b_c[None, :]
            b_c = tl.sum(tl.where((o_t == tl.minimum(i_c * BT + BT, L) - 1)[:, None], b_y, 0.0), axis=0)
        tl.store(y + p, b_y.to(y.dtype.element_ty), mask=m)
    if STORE_CN:
        tl.store(cn + i_n * D + o_d, b_c.to(cn.dtype.element_ty), mask=m_d)


def _scan(x, g, y, c0, cn, o, h0, dg, reverse, cu_seqlens, BT=64):
    """Run both kernels: y <- the (reversed) scan of x with carry c0; cn <- the last carry."""
    B, T, D = x.shape
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    BD = min(triton.next_power_of_2(D), 64)
    if cu_seqlens is not None:
        chunk_indices = prepare_chunk_indices(cu_seqlens, BT)
        grid = (triton.cdiv(D, BD), chunk_indices.shape[0], 1)
    else:
        chunk_indices = None
        grid = (triton.cdiv(D, BD), triton.cdiv(T, BT), B)
    if grid[1] > 0:
        chunk_hgrn_local_kernel[grid](x, g, y, cu_seqlens, chunk_indices, T, D, BT=BT, BD=BD, REVERSE=reverse,
                                      IS_VARLEN=cu_seqlens is not None)
    chunk_hgrn_carry_kernel[(triton.cdiv(D, BD), N)](
        y, g, c0, cn, o, h0, dg, cu_seqlens, T, D, BT=BT, BD=BD, REVERSE=reverse, USE_C0=c0 is not None,
        STORE_CN=cn is not None, USE_H0=h0 is not None, IS_VARLEN=cu_seqlens is not None)


class ChunkHGRNFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, g, initial_state, output_final_state, cu_seqlens):
        B, T, D = x.shape
        N = B if cu_seqlens is None else cu_seqlens.numel() - 1
        # the scan runs in float32 in place; o is cast to x's dtype at the end
        o = torch.empty(B, T, D, dtype=torch.float32, device=x.device)
        ht = torch.empty(N, D, dtype=torch.float32, device=x.device) if output_final_state else None
        _scan(x, g, o, initial_state, ht, None, None, None, False, cu_seqlens)
        ctx.save_for_backward(g, o, initial_state, cu_seqlens)
        ctx.x_dtype = x.dtype
        return o.to(x.dtype), ht

    @staticmethod
    def backward(ctx, do, dht):
        g, o, initial_state, cu_seqlens = ctx.saved_tensors
        B, T, D = g.shape
        N = B if cu_seqlens is None else cu_seqlens.numel() - 1
        dx = torch.empty(B, T, D, dtype=torch.float32, device=g.device)
        dg = torch.empty(B, T, D, dtype=torch.float32, device=g.device)
        dh0 = torch.empty(N, D, dtype=torch.float32, device=g.device) if initial_state is not None else None
        _scan(do.contiguous(), g, dx, dht.contiguous() if dht is not None else None, dh0, o, initial_state, dg,
              True, cu_seqlens)
        return (dx.to(ctx.x_dtype), dg.to(g.dtype), dh0.to(initial_state.dtype) if dh0 is not None else None,
                None, None)


def chunk_hgrn(
    x: torch.Tensor,
    g: torch.Tensor,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    cu_seqlens: Optional[torch.LongTensor] = None,
):
    """HGRN recurrence h_t = exp(g_t) * h_{t-1} + x_t, o_t = h_t, parallel over chunks of time.

    Args:
        x: inputs [B, T, D]; g: log forget gates [B, T, D] (<= 0).
        initial_state: [N, D] (N = B, or the number of sequences in ``cu_seqlens``).
        output_final_state: also return the float32 final state [N, D].
        cu_seqlens: int [N+1] packed-sequence offsets (B must be 1).
    Returns:
        (o [B, T, D] in x's dtype, final_state [N, D] float32 or None)

    Example:
        >>> x = torch.randn(1, 100, 64)
        >>> g = torch.nn.functional.logsigmoid(torch.randn(1, 100, 64))
        >>> o, ht = chunk_hgrn(x, g, output_final_state=True)
    """
    check_hgrn_inputs(x, g, initial_state, cu_seqlens)
    if not use_triton(x):
        from .torch_chunk import torch_chunk_hgrn
        return torch_chunk_hgrn(x, g, initial_state, output_final_state, cu_seqlens)
    x, g = x.contiguous(), g.contiguous()
    initial_state = initial_state.contiguous() if initial_state is not None else None
    return ChunkHGRNFunction.apply(x, g, initial_state, output_final_state, cu_seqlens)
