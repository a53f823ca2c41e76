"""Chunked HGRN: the same recurrence as ``fused_recurrent_hgrn``, but each program scans whole
[BT, BD] tiles of time x channels in registers instead of one token at a time.

    h_t = exp(g_t) * h_{t-1} + x_t
The recurrence is a composition of affine maps h -> a h + b, which is associative:
(a1, b1) then (a2, b2) = (a1 a2, b1 a2 + b2). ``tl.associative_scan`` applies it along the tile's
time axis in parallel, giving (A_t, B_t) with h_t = B_t + A_t h_in (A_t = exp of the cumulative
log-gate, never above 1 for g <= 0, so nothing overflows). One program per (channel block,
sequence) walks the chunks, carrying h_in from one tile's last row to the next: x and g are read
once and o written once (HGRN is memory bound), and the tile loads do not wait on the carry.

Backward: dh_t = do_t + exp(g_{t+1}) dh_{t+1} (dh_last = do_last + dht) is the same scan over the
tile read in reversed row order with the gates shifted by one step; the same program forms
dx_t = dh_t, dg_t = dh_t exp(g_t) h_{t-1} (h_{t-1} from the forward output, h0 at the start) and
dh0 = exp(g_0) dh_0.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..utils.autotune import autotune
from .fused_recurrent import HGRN_ARGS_DOC, run_hgrn

# first config is the one pinned under FLACTL_AUTOTUNE=0 / the interpreter
CONFIGS = [
    triton.Config({"BT": 64, "BD": 32}, num_warps=4),
    triton.Config({"BT": 64, "BD": 64}, num_warps=4),
    triton.Config({"BT": 32, "BD": 32}, num_warps=2),
    triton.Config({"BT": 64, "BD": 16}, num_warps=2),
    triton.Config({"BT": 128, "BD": 32}, num_warps=8),
    triton.Config({"BT": 32, "BD": 64}, num_warps=4),
]


@triton.jit
def _affine(a1, b1, a2, b2):
    return a1 * a2, b1 * a2 + b2


@autotune(CONFIGS, key=["D", "IS_VARLEN"])
@triton.jit
def chunk_hgrn_fwd_kernel(
    x, g, o, h0, ht, cu_seqlens, T, D,
    BT: tl.constexpr, BD: tl.constexpr, USE_INITIAL_STATE: tl.constexpr, STORE_FINAL_STATE: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    i_d, i_n = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        L = tl.load(cu_seqlens + i_n + 1).to(tl.int64) - bos
    else:
        bos = i_n * T
        L = T
    o_d = i_d * BD + tl.arange(0, BD)
    m_d = o_d < D
    r = tl.arange(0, BT)
    b_h = tl.zeros([BD], dtype=tl.float32)
    if USE_INITIAL_STATE:
        b_h += tl.load(h0 + i_n * D + o_d, mask=m_d, other=0.0).to(tl.float32)
    for i_c in range(0, tl.cdiv(L, BT)):
        o_t = i_c * BT + r
        m = (o_t < L)[:, None] & m_d[None, :]
        p = (bos + o_t[:, None]) * D + o_d[None, :]
        # rows past the end load (a=1, b=0): they carry the last valid h through to row BT-1
        b_a = tl.exp(tl.load(g + p, mask=m, other=0.0).to(tl.float32))
        b_b = tl.load(x + p, mask=m, other=0.0).to(tl.float32)
        b_A, b_B = tl.associative_scan((b_a, b_b), axis=0, combine_fn=_affine)
        b_o = b_B + b_A * b_h[None, :]
        tl.store(o + p, b_o.to(o.dtype.element_ty), mask=m)
        b_h = tl.sum(tl.where((r == BT - 1)[:, None], b_o, 0.0), axis=0)
    if STORE_FINAL_STATE:
        tl.store(ht + i_n * D + o_d, b_h, mask=m_d)


@autotune(CONFIGS, key=["D", "IS_VARLEN"])
@triton.jit
def chunk_hgrn_bwd_kernel(
    g, o, h0, do, dht, dx, dg, dh0, cu_seqlens, T, D,
    BT: tl.constexpr, BD: tl.constexpr, USE_INITIAL_STATE: tl.constexpr, USE_FINAL_STATE_GRADIENT: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    i_d, i_n = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        L = tl.load(cu_seqlens + i_n + 1).to(tl.int64) - bos
    else:
        bos = i_n * T
        L = T
    o_d = i_d * BD + tl.arange(0, BD)
    m_d = o_d < D
    r = tl.arange(0, BT)
    b_c = tl.zeros([BD], dtype=tl.float32)
    if USE_FINAL_STATE_GRADIENT:
        b_c += tl.load(dht + i_n * D + o_d, mask=m_d, other=0.0).to(tl.float32)
    NC = tl.cdiv(L, BT)
    for i in range(0, NC):
        # row j of the tile is time start + BT - 1 - j: a forward scan over rows runs backwards in time
        o_t = (NC - 1 - i) * BT + BT - 1 - r
        m_t = o_t < L
        m = m_t[:, None] & m_d[None, :]
        p = (bos + o_t[:, None]) * D + o_d[None, :]
        m_next = (o_t + 1 < L)[:, None] & m_d[None, :]
        b_a = tl.exp(tl.load(g + p + D, mask=m_next, other=0.0).to(tl.float32))  # exp(g_{t+1}), 1 at the end
        b_b = tl.load(do + p, mask=m, other=0.0).to(tl.float32)
        b_A, b_B = tl.associative_scan((b_a, b_b), axis=0, combine_fn=_affine)
        b_dh = b_B + b_A * b_c[None, :]
        tl.store(dx + p, b_dh.to(dx.dtype.element_ty), mask=m)
        b_e = tl.exp(tl.load(g + p, mask=m, other=0.0).to(tl.float32))
        b_hp = tl.load(o + p - D, mask=m & (o_t[:, None] > 0), other=0.0).to(tl.float32)
        if USE_INITIAL_STATE:
            b_h0 = tl.load(h0 + i_n * D + o_d, mask=m_d, other=0.0).to(tl.float32)
            b_hp = tl.where((o_t == 0)[:, None], b_h0[None, :], b_hp)
        tl.store(dg + p, (b_dh * b_e * b_hp).to(dg.dtype.element_ty), mask=m)
        b_c = tl.sum(tl.where((r == BT - 1)[:, None], b_dh, 0.0), axis=0)  # dh at the chunk's first step
    if USE_INITIAL_STATE:
        b_g0 = tl.load(g + bos * D + o_d, mask=m_d & ((o_d * 0 + L) > 0), other=0.0).to(tl.float32)
        tl.store(dh0 + i_n * D + o_d, (b_c * tl.exp(b_g0)).to(dh0.dtype.element_ty), mask=m_d)


def _grid(D, N):
    return lambda meta: (triton.cdiv(D, meta["BD"]), N)


class ChunkHGRNFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, g, initial_state, output_final_state, cu_seqlens):
        B, T, D = x.shape
        N = B if cu_seqlens is None else cu_seqlens.numel() - 1
        o = torch.empty_like(x)
        ht = torch.empty(N, D, dtype=torch.float32, device=x.device) if output_final_state else None
        chunk_hgrn_fwd_kernel[_grid(D, N)](
            x, g, o, initial_state, ht, cu_seqlens, T, D, USE_INITIAL_STATE=initial_state is not None,
            STORE_FINAL_STATE=output_final_state, IS_VARLEN=cu_seqlens is not None)
        ctx.save_for_backward(g, o, initial_state, cu_seqlens)
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        g, o, initial_state, cu_seqlens = ctx.saved_tensors
        B, T, D = g.shape
        N = B if cu_seqlens is None else cu_seqlens.numel() - 1
        dx = torch.empty_like(o)
        dg = torch.empty_like(g)
        dh0 = torch.empty_like(initial_state) if initial_state is not None else None
        chunk_hgrn_bwd_kernel[_grid(D, N)](
            g, o, initial_state, do.contiguous(), dht.contiguous() if dht is not None else None, dx, dg, dh0,
            cu_seqlens, T, D, USE_INITIAL_STATE=initial_state is not None,
            USE_FINAL_STATE_GRADIENT=dht is not None, IS_VARLEN=cu_seqlens is not None)
        return dx, dg, dh0, None, None


def chunk_hgrn(
    x: torch.Tensor,
    g: torch.Tensor,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    cu_seqlens: Optional[torch.LongTensor] = None,
):
    """HGRN recurrence h_t = exp(g_t) * h_{t-1} + x_t, o_t = h_t, scanning [BT, BD] tiles in parallel.

    {args}

    Example:
        >>> x = torch.randn(1, 100, 64)
        >>> g = torch.nn.functional.logsigmoid(torch.randn(1, 100, 64))
        >>> o, ht = chunk_hgrn(x, g, output_final_state=True)
    """
    return run_hgrn(ChunkHGRNFunction.apply, x, g, initial_state, output_final_state, cu_seqlens)


chunk_hgrn.__doc__ = chunk_hgrn.__doc__.replace("{args}", HGRN_ARGS_DOC)
