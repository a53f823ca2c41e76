"""Chunked simple GLA: linear attention with a scalar log-decay per head and step.

    S_t = exp(g_t + gamma) S_{t-1} + k_t^T v_t,     o_t = scale * q_t S_t

``g`` [B,T,H] (data-dependent, e.g. Mamba2/SSD, lightning) and/or ``g_gamma`` [H] (constant, RetNet).
Forward: chunk-local cumsum of g (float32) -> ``chunk_fwd_ho`` (one state walk that also writes o).
Backward: ``chunk_bwd_dh_dv`` (reverse state walk + dv) -> ``chunk_bwd_dqk`` (dq, dk and the
per-position gate term q·dq - k·dk) -> ``reverse_cumsum`` for dg. See README.md for the math.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..common.chunk_h import chunk_bwd_dh_dv, chunk_fwd_ho
from ..common.chunk_o import chunk_bwd_dqk, reverse_cumsum
from ..common.chunk_torch import torch_chunk_linear
from ..utils import chunk_local_cumsum, use_triton
from ..utils.validate import check_cu_seqlens, check_gate, check_initial_state, check_qkv


def _last_rows(cu_seqlens, B, T, device):
    """(batch idx, row idx) of the last step of each non-empty sequence, and which sequences those are."""
    if cu_seqlens is None:
        return torch.arange(B, device=device), torch.full((B,), T - 1, device=device, dtype=torch.long), None
    lens = cu_seqlens[1:] - cu_seqlens[:-1]
    keep = (lens > 0).nonzero().squeeze(1)
    rows = (cu_seqlens[1:] - 1)[keep].long()
    return torch.zeros_like(rows), rows, keep


def chunk_simple_gla_fwd(q, k, v, g, g_gamma, scale, initial_state, output_final_state, cu_seqlens,
                         chunk_size, store_h):
    gc = chunk_local_cumsum(g, chunk_size, cu_seqlens=cu_seqlens) if g is not None else None
    o, h, ht = chunk_fwd_ho(q, k, v, g=gc, g_gamma=g_gamma, scale=scale, initial_state=initial_state,
                            output_final_state=output_final_state, store_h=store_h, cu_seqlens=cu_seqlens,
                            chunk_size=chunk_size)
    return o, gc, h, ht


def chunk_simple_gla_bwd(q, k, v, gc, g_gamma, h, ht, do, dht, scale, need_dh0, cu_seqlens, chunk_size,
                         need_dg=True):
    """Returns dq, dk, dv, dg [B,T,H] float32 (None without gates or need_dg=False), dh0."""
    dv, dh, dh0 = chunk_bwd_dh_dv(q, k, do, g=gc, g_gamma=g_gamma, scale=scale, dht=dht, need_dh0=need_dh0,
                                  cu_seqlens=cu_seqlens, chunk_size=chunk_size)
    dq, dk, dgl = chunk_bwd_dqk(q, k, v, do, h, dh, g=gc, g_gamma=g_gamma, scale=scale,
                                cu_seqlens=cu_seqlens, chunk_size=chunk_size, need_dg=need_dg)
    dg = None
    if dgl is not None:
        if dht is not None and ht is not None:
            # the final state carries e^{Gabs_T}: d/dGabs_T += <S_T, dS_T>
            B, T, H = dgl.shape
            term = (ht * dht.float()).sum((-2, -1))  # [N,H]
            bi, ri, keep = _last_rows(cu_seqlens, B, T, dgl.device)
            if keep is not None:
                term = term[keep]
            dgl = dgl.index_put((bi, ri), term, accumulate=True)
        dg = reverse_cumsum(dgl, cu_seqlens)
    return dq, dk, dv, dg, dh0


class ChunkSimpleGLAFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, g, g_gamma, scale, initial_state, output_final_state, cu_seqlens, chunk_size):
        o, gc, h, ht = chunk_simple_gla_fwd(q, k, v, g, g_gamma, scale, initial_state, output_final_state,
                                            cu_seqlens, chunk_size, store_h=True)
        ctx.save_for_backward(q, k, v, gc, g_gamma, h, ht, initial_state, cu_seqlens)
        ctx.scale, ctx.chunk_size = scale, chunk_size
        ctx.g_dtype = g.dtype if g is not None else None
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, gc, g_gamma, h, ht, initial_state, cu_seqlens = ctx.saved_tensors
        do = do.contiguous()
        dht = dht.contiguous() if dht is not None else None
        # gate gradients cost a reduction and a scan: skip them for fixed decays (RetNet's g_gamma)
        need_dg = ctx.needs_input_grad[3] or ctx.needs_input_grad[4]
        dq, dk, dv, dg, dh0 = chunk_simple_gla_bwd(
            q, k, v, gc, g_gamma, h, ht, do, dht, ctx.scale, initial_state is not None, cu_seqlens,
            ctx.chunk_size, need_dg)
        dg_out = dg.to(ctx.g_dtype) if (dg is not None and gc is not None) else None
        dgamma = dg.sum((0, 1)).to(g_gamma.dtype) if (dg is not None and g_gamma is not None) else None
        dh0 = dh0.to(initial_state.dtype) if dh0 is not None else None
        return dq, dk, dv, dg_out, dgamma, None, dh0, None, None, None


def _validate(q, k, v, g, g_gamma, initial_state, cu_seqlens, chunk_size):
    B, T, H, _, K, V = check_qkv(q, k, v)
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    check_gate("g", g, (B, T, H), "[B, T, H]")
    check_gate("g_gamma", g_gamma, (H,), "[H]")
    N = check_cu_seqlens(cu_seqlens, B, T)
    check_initial_state(initial_state, N, H, K, V)
    if chunk_size not in (16, 32, 64, 128):
        raise ValueError(f"chunk_size must be one of 16, 32, 64, 128, got {chunk_size}")
    return B, T, H, K, V


def chunk_linear_family(q, k, v, g, g_gamma, scale, initial_state, output_final_state, cu_seqlens,
                        chunk_size=64) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Shared entry of simple_gla / retention / linear_attn after their own argument handling."""
    B, T, H, K, V = _validate(q, k, v, g, g_gamma, initial_state, cu_seqlens, chunk_size)
    scale = K ** -0.5 if scale is None else float(scale)
    if not use_triton(q):
        return torch_chunk_linear(q, k, v, g=g, g_gamma=g_gamma, scale=scale, initial_state=initial_state,
                                  output_final_state=output_final_state, cu_seqlens=cu_seqlens,
                                  chunk_size=chunk_size)
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    g = g.contiguous() if g is not None else None
    g_gamma = g_gamma.contiguous() if g_gamma is not None else None
    initial_state = initial_state.contiguous() if initial_state is not None else None
    if T == 0:
        N = B if cu_seqlens is None else cu_seqlens.numel() - 1
        ht = initial_state.float() if initial_state is not None else q.new_zeros(N, H, K, V, dtype=torch.float32)
        return torch.empty_like(v), (ht if output_final_state else None)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (q, k, v, g, g_gamma, initial_state))
    if needs_grad:
        o, ht = ChunkSimpleGLAFunction.apply(q, k, v, g, g_gamma, scale, initial_state, output_final_state,
                                             cu_seqlens, chunk_size)
    else:
        o, _, _, ht = chunk_simple_gla_fwd(q, k, v, g, g_gamma, scale, initial_state, output_final_state,
                                           cu_seqlens, chunk_size, store_h=False)
    return o, ht


def chunk_simple_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: Optional[torch.Tensor] = None,
    g_gamma: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    cu_seqlens: Optional[torch.Tensor] = None,
    **kwargs,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Simple gated linear attention, chunked (training and prefill).

    Args:
        q, k: [B, T, H, K]; v: [B, T, H, V] (one dtype: bf16, fp16 or fp32; K, V <= 256).
        g: [B, T, H] per-step log-decay (<= 0; float32 recommended), or None.
        g_gamma: [H] constant per-head log-decay, or None. Both may be given (they add).
        scale: query scale, default K ** -0.5.
        initial_state: [N, H, K, V] (N = B, or number of sequences with cu_seqlens).
        output_final_state: also return the final state [N, H, K, V] float32.
        cu_seqlens: int [N+1] offsets of packed sequences (requires B == 1).
        chunk_size (kwarg): 16/32/64/128, default 64.
    Returns:
        o [B, T, H, V] (dtype of v), final state or None.

    Log-decays > 0 (growth) are computed as written but can overflow to inf for long chunks.

    Example::

        >>> q, k = torch.randn(2, 100, 4, 64), torch.randn(2, 100, 4, 64)
        >>> v, g = torch.randn(2, 100, 4, 32), -torch.rand(2, 100, 4) * 0.1
        >>> o, s = chunk_simple_gla(q, k, v, g=g, output_final_state=True)
        >>> o.shape, s.shape
        (torch.Size([2, 100, 4, 32]), torch.Size([2, 4, 64, 32]))
    """
    if kwargs.get("head_first", False):
        raise ValueError("head_first=True is not supported: inputs must be [B, T, H, ...]")
    return chunk_linear_family(q, k, v, g, g_gamma, scale, initial_state, output_final_state, cu_seqlens,
                               kwargs.get("chunk_size", 64))
