"""Fused recurrent HGRN: the elementwise gated recurrence, one program per (channel block, sequence)
walking the sequence with the state in registers.

    h_t = exp(g_t) * h_{t-1} + x_t,   o_t = h_t          (x, g: [B, T, D]; g is a log forget gate)
Backward (reverse recurrence with the gates shifted by one step):
    dh_t = do_t + exp(g_{t+1}) * dh_{t+1}   (dh_last = do_last + dht)
    dx_t = dh_t,  dg_t = dh_t * exp(g_t) * h_{t-1},  dh0 = exp(g_first) * dh_first
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..utils import validate as val
from ..utils.backend import use_triton


@triton.jit
def fused_recurrent_hgrn_fwd_kernel(
    x, g, o, h0, ht, cu_seqlens, T, D,
    BD: tl.constexpr, USE_INITIAL_STATE: tl.constexpr, STORE_FINAL_STATE: tl.constexpr, IS_VARLEN: tl.constexpr,
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
    b_h = tl.zeros([BD], dtype=tl.float32)
    if USE_INITIAL_STATE:
        b_h += tl.load(h0 + i_n * D + o_d, mask=m_d, other=0.0).to(tl.float32)
    for t in range(0, L):
        p = (bos + t) * D + o_d
        b_x = tl.load(x + p, mask=m_d, other=0.0).to(tl.float32)
        b_g = tl.load(g + p, mask=m_d, other=0.0).to(tl.float32)
        b_h = tl.exp(b_g) * b_h + b_x
        tl.store(o + p, b_h.to(o.dtype.element_ty), mask=m_d)
    if STORE_FINAL_STATE:
        tl.store(ht + i_n * D + o_d, b_h, mask=m_d)


@triton.jit
def fused_recurrent_hgrn_bwd_kernel(
    g, o, h0, do, dht, dx, dg, dh0, cu_seqlens, T, D,
    BD: tl.constexpr, USE_INITIAL_STATE: tl.constexpr, USE_FINAL_STATE_GRADIENT: tl.constexpr,
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
    b_dh = tl.zeros([BD], dtype=tl.float32)
    if USE_FINAL_STATE_GRADIENT:
        b_dh += tl.load(dht + i_n * D + o_d, mask=m_d, other=0.0).to(tl.float32)
    for i in range(0, L):
        t = L - 1 - i
        p = (bos + t) * D + o_d
        b_dh += tl.load(do + p, mask=m_d, other=0.0).to(tl.float32)
        b_a = tl.exp(tl.load(g + p, mask=m_d, other=0.0).to(tl.float32))
        # h_{t-1}: the previous output inside the sequence, the initial state (or 0) at its start
        if t > 0:
            b_hp = tl.load(o + p - D, mask=m_d, other=0.0).to(tl.float32)
        elif USE_INITIAL_STATE:
            b_hp = tl.load(h0 + i_n * D + o_d, mask=m_d, other=0.0).to(tl.float32)
        else:
            b_hp = tl.zeros([BD], dtype=tl.float32)
        tl.store(dx + p, b_dh.to(dx.dtype.element_ty), mask=m_d)
        tl.store(dg + p, (b_dh * b_a * b_hp).to(dg.dtype.element_ty), mask=m_d)
        b_dh = b_dh * b_a
    if USE_INITIAL_STATE:
        tl.store(dh0 + i_n * D + o_d, b_dh.to(dh0.dtype.element_ty), mask=m_d)


def _bd(D: int, N: int) -> int:
    """Channel block: as wide as possible while still giving the GPU >= 512 programs (each program
    walks the whole sequence, so parallelism comes only from channels x sequences)."""
    BD = min(triton.next_power_of_2(D), 128)
    while BD > 16 and N * triton.cdiv(D, BD) < 512:
        BD //= 2
    return BD


def fused_recurrent_hgrn_fwd(x, g, initial_state=None, output_final_state=False, cu_seqlens=None):
    B, T, D = x.shape
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    BD = _bd(D, N)
    o = torch.empty_like(x)
    ht = torch.empty(N, D, dtype=torch.float32, device=x.device) if output_final_state else None
    fused_recurrent_hgrn_fwd_kernel[(triton.cdiv(D, BD), N)](
        x, g, o, initial_state, ht, cu_seqlens, T, D, BD=BD, USE_INITIAL_STATE=initial_state is not None,
        STORE_FINAL_STATE=output_final_state, IS_VARLEN=cu_seqlens is not None)
    return o, ht


def fused_recurrent_hgrn_bwd(g, o, do, dht, initial_state, cu_seqlens):
    B, T, D = g.shape
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    BD = _bd(D, N)
    dx = torch.empty_like(o, dtype=torch.float32)
    dg = torch.empty_like(g, dtype=torch.float32)
    dh0 = torch.empty_like(initial_state, dtype=torch.float32) if initial_state is not None else None
    fused_recurrent_hgrn_bwd_kernel[(triton.cdiv(D, BD), N)](
        g, o, initial_state, do, dht, dx, dg, dh0, cu_seqlens, T, D, BD=BD,
        USE_INITIAL_STATE=initial_state is not None, USE_FINAL_STATE_GRADIENT=dht is not None,
        IS_VARLEN=cu_seqlens is not None)
    return dx, dg, dh0


class FusedRecurrentHGRNFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, g, initial_state, output_final_state, cu_seqlens):
        o, ht = fused_recurrent_hgrn_fwd(x, g, initial_state, output_final_state, cu_seqlens)
        ctx.save_for_backward(g, o, initial_state, cu_seqlens)
        ctx.x_dtype = x.dtype
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        g, o, initial_state, cu_seqlens = ctx.saved_tensors
        dx, dg, dh0 = fused_recurrent_hgrn_bwd(g, o, do.contiguous(), dht.contiguous() if dht is not None else None,
                                               initial_state, cu_seqlens)
        return (dx.to(ctx.x_dtype), dg.to(g.dtype), dh0.to(initial_state.dtype) if dh0 is not None else None,
                None, None)


def check_hgrn_inputs(x, g, initial_state, cu_seqlens) -> int:
    """Validate HGRN inputs; returns N (number of sequences)."""
    val.check_rank("x", x, 3, "[B, T, D]")
    val.check_floating("x", x)
    if not isinstance(g, torch.Tensor):
        raise ValueError(f"g must be a torch.Tensor [B, T, D], got {type(g).__name__}")
    val.check_gate("g", g, tuple(x.shape), "[B, T, D]")
    B, T, D = x.shape
    N = val.check_cu_seqlens(cu_seqlens, B, T)
    if initial_state is not None:
        val.check_rank("initial_state", initial_state, 2, "[N, D]")
        val.check_floating("initial_state", initial_state)
        val.check_shape("initial_state", initial_state, (N, D), "[N, D]")
    val.check_same_device(x=x, g=g, initial_state=initial_state, cu_seqlens=cu_seqlens)
    return N


HGRN_ARGS_DOC = """Args:
        x: inputs [B, T, D]; g: log forget gates [B, T, D] (<= 0).
        initial_state: [N, D] (N = B, or the number of sequences in ``cu_seqlens``).
        output_final_state: also return the float32 final state [N, D].
        cu_seqlens: int [N+1] packed-sequence offsets (B must be 1).
    Returns:
        (o [B, T, D] in x's dtype, final_state [N, D] float32 or None)"""


def run_hgrn(kernels, x, g, initial_state, output_final_state, cu_seqlens):
    """What both public HGRN ops share: validation, the torch path for CPU tensors, contiguous inputs
    for ``kernels(x, g, initial_state, output_final_state, cu_seqlens)``."""
    check_hgrn_inputs(x, g, initial_state, cu_seqlens)
    if not use_triton(x):
        from .torch_chunk import torch_chunk_hgrn
        return torch_chunk_hgrn(x, g, initial_state, output_final_state, cu_seqlens)
    x, g = x.contiguous(), g.contiguous()
    initial_state = initial_state.contiguous() if initial_state is not None else None
    return kernels(x, g, initial_state, output_final_state, cu_seqlens)


# Longer inputs go to the tile-scan kernels of chunk.py: same math, parallel over time inside each
# tile (2-3x faster than walking tokens one by one at training lengths on an H100). Tests lower it.
TOKEN_KERNEL_MAX_T = 64


def fused_recurrent_hgrn(
    x: torch.Tensor,
    g: torch.Tensor,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    cu_seqlens: Optional[torch.LongTensor] = None,
):
    """HGRN recurrence h_t = exp(g_t) * h_{t-1} + x_t, o_t = h_t (elementwise, token by token).

    Inputs longer than ``TOKEN_KERNEL_MAX_T`` tokens run the tile-scan kernels of ``chunk_hgrn``
    (identical results up to float32 rounding, much faster for training).

    {args}

    Example:
        >>> x = torch.randn(2, 16, 32)
        >>> g = torch.nn.functional.logsigmoid(torch.randn(2, 16, 32))
        >>> o, ht = fused_recurrent_hgrn(x, g, output_final_state=True)
    """
    def kernels(x, g, initial_state, output_final_state, cu_seqlens):
        if x.shape[1] > TOKEN_KERNEL_MAX_T:
            from .chunk import ChunkHGRNFunction
            return ChunkHGRNFunction.apply(x, g, initial_state, output_final_state, cu_seqlens)
        return FusedRecurrentHGRNFunction.apply(x, g, initial_state, output_final_state, cu_seqlens)
    return run_hgrn(kernels, x, g, initial_state, output_final_state, cu_seqlens)


fused_recurrent_hgrn.__doc__ = fused_recurrent_hgrn.__doc__.replace("{args}", HGRN_ARGS_DOC)
