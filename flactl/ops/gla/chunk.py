"""Chunked gated linear attention (GLA, Yang et al. 2023): per-key-channel log-decay.

    S_t = (exp(g_t)[:, None]) ⊙ S_{t-1} + k_t^T v_t,     o_t = scale * q_t S_t,   g [B,T,H,K]

Forward: chunk-local cumsum of g (float32) -> intra-chunk scores A (``chunk_intra``, sub-blocks of
16 so every exponent stays <= 0) -> ``chunk_fwd_ho`` (state walk that also writes o).
Backward: ``chunk_bwd_dh_dv`` (reverse walk + dv) -> ``chunk_bwd_dqk`` (inter-chunk dq, dk and
dA) -> ``chunk_gla_bwd_intra`` (intra-chunk dq, dk and q*dq - k*dk) -> ``reverse_cumsum`` for dg.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..common.chunk_h import chunk_bwd_dh_dv, chunk_fwd_ho
from ..common.chunk_o import chunk_bwd_dqk, reverse_cumsum
from ..common.chunk_torch import torch_chunk_linear
from ..simple_gla.chunk import _last_rows
from ..utils import chunk_local_cumsum, use_triton
from ..utils.validate import check_cu_seqlens, check_gate, check_initial_state, check_qkv
from .chunk_intra import chunk_gla_bwd_intra, chunk_gla_fwd_A


def chunk_gla_fwd(q, k, v, g, scale, initial_state, output_final_state, cu_seqlens, chunk_size, store_h):
    gc = chunk_local_cumsum(g, chunk_size, cu_seqlens=cu_seqlens)
    A = chunk_gla_fwd_A(q, k, gc, cu_seqlens=cu_seqlens, chunk_size=chunk_size)
    o, h, ht = chunk_fwd_ho(q, k, v, gk=gc, A=A, scale=scale, initial_state=initial_state,
                            output_final_state=output_final_state, store_h=store_h, cu_seqlens=cu_seqlens,
                            chunk_size=chunk_size)
    return o, gc, A, h, ht


def chunk_gla_bwd(q, k, v, gc, A, h, ht, do, dht, scale, need_dh0, cu_seqlens, chunk_size):
    """Returns dq, dk, dv, dg [B,T,H,K] float32, dh0 (float32 or None)."""
    dv, dh, dh0 = chunk_bwd_dh_dv(q, k, do, gk=gc, A=A, scale=scale, dht=dht, need_dh0=need_dh0,
                                  cu_seqlens=cu_seqlens, chunk_size=chunk_size)
    dq_i, dk_i, dA = chunk_bwd_dqk(q, k, v, do, h, dh, gk=gc, scale=scale, cu_seqlens=cu_seqlens,
                                   chunk_size=chunk_size)
    dq, dk, dgl = chunk_gla_bwd_intra(q, k, gc, dA, dq_i, dk_i, cu_seqlens=cu_seqlens, chunk_size=chunk_size)
    if dht is not None and ht is not None:
        B, T = dgl.shape[:2]
        term = (ht * dht.float()).sum(-1)  # [N,H,K]: d/dGabs_T of <S_T, dS_T>
        bi, ri, keep = _last_rows(cu_seqlens, B, T, dgl.device)
        if keep is not None:
            term = term[keep]
        dgl = dgl.index_put((bi, ri), term, accumulate=True)
    dg = reverse_cumsum(dgl, cu_seqlens)
    return dq, dk, dv, dg, dh0


class ChunkGLAFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, g, scale, initial_state, output_final_state, cu_seqlens, chunk_size):
        o, gc, A, h, ht = chunk_gla_fwd(q, k, v, g, scale, initial_state, output_final_state, cu_seqlens,
                                        chunk_size, store_h=True)
        ctx.save_for_backward(q, k, v, gc, A, h, ht, initial_state, cu_seqlens)
        ctx.scale, ctx.chunk_size, ctx.g_dtype = scale, chunk_size, g.dtype
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, gc, A, h, ht, initial_state, cu_seqlens = ctx.saved_tensors
        dht = dht.contiguous() if dht is not None else None
        dq, dk, dv, dg, dh0 = chunk_gla_bwd(q, k, v, gc, A, h, ht, do.contiguous(), dht, ctx.scale,
                                            initial_state is not None, cu_seqlens, ctx.chunk_size)
        dh0 = dh0.to(initial_state.dtype) if dh0 is not None else None
        return dq, dk, dv, dg.to(ctx.g_dtype), None, dh0, None, None, None


def chunk_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: Optional[float] = None,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    cu_seqlens: Optional[torch.Tensor] = None,
    **kwargs,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Gated linear attention with per-key-channel decay, chunked (training and prefill).

    Args:
        q, k: [B, T, H, K]; v: [B, T, H, V] (one dtype: bf16, fp16 or fp32; K, V <= 256).
        g: [B, T, H, K] per-step log-decay (<= 0, e.g. logsigmoid(x) / 16; float32 recommended).
        scale: query scale, default K ** -0.5.
        initial_state: [N, H, K, V] (any float dtype; N = B, or number of sequences with cu_seqlens).
        output_final_state: also return the final state [N, H, K, V] float32.
        cu_seqlens: int [N+1] offsets of packed sequences (requires B == 1).
    Returns:
        o [B, T, H, V] (dtype of v), final state or None.

    Exactness: intra-chunk factors are referenced so every exponent is <= 0 except on 16-step
    diagonal blocks, which overflow only if a channel's log-decay summed over 8 steps is below
    about -80 (see chunk_intra.py). Log-decays > 0 (growth) can overflow.

    Example::

        >>> q, k, v = torch.randn(2, 100, 4, 64), torch.randn(2, 100, 4, 64), torch.randn(2, 100, 4, 32)
        >>> g = torch.nn.functional.logsigmoid(torch.randn(2, 100, 4, 64)) / 16
        >>> o, s = chunk_gla(q, k, v, g, output_final_state=True)
        >>> o.shape, s.shape
        (torch.Size([2, 100, 4, 32]), torch.Size([2, 4, 64, 32]))
    """
    if kwargs.get("head_first", False):
        raise ValueError("head_first=True is not supported: inputs must be [B, T, H, ...]")
    B, T, H, _, K, V = check_qkv(q, k, v)
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if g is None:
        raise ValueError("g (the [B, T, H, K] log-decay) is required for chunk_gla")
    check_gate("g", g, (B, T, H, K), "[B, T, H, K]")
    N = check_cu_seqlens(cu_seqlens, B, T)
    check_initial_state(initial_state, N, H, K, V)
    chunk_size = 64
    scale = K ** -0.5 if scale is None else float(scale)
    if not use_triton(q):
        return torch_chunk_linear(q, k, v, gk=g, scale=scale, initial_state=initial_state,
                                  output_final_state=output_final_state, cu_seqlens=cu_seqlens,
                                  chunk_size=chunk_size)
    q, k, v, g = q.contiguous(), k.contiguous(), v.contiguous(), g.contiguous()
    initial_state = initial_state.contiguous() if initial_state is not None else None
    if T == 0:
        ht = initial_state.float() if initial_state is not None else q.new_zeros(N, H, K, V, dtype=torch.float32)
        return torch.empty_like(v), (ht if output_final_state else None)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (q, k, v, g, initial_state))
    if needs_grad:
        return ChunkGLAFunction.apply(q, k, v, g, scale, initial_state, output_final_state, cu_seqlens, chunk_size)
    o, _, _, _, ht = chunk_gla_fwd(q, k, v, g, scale, initial_state, output_final_state, cu_seqlens,
                                   chunk_size, store_h=False)
    return o, ht
