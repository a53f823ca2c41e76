"""Chunked (gated) delta rule: forward/backward composition, autograd Function, input handling.

One implementation serves ``chunk_delta_rule`` (g = None), ``chunk_gated_delta_rule`` (log-decay g,
grouped value heads) and, by reduction, ``chunk_gated_delta_product``. Kernels live in
``delta_wy`` (UT transform), ``delta_h`` (state passing) and ``delta_o`` (outputs and their grads).

Forward:   gc = chunk_local_cumsum(g);  A, w, u = WY(k, v, beta, gc);  h, U' = states(k, w, u, gc)
           o = output(q, k, U', h, gc)
Backward:  dv_local;  dh, dU' = reverse state pass;  dq, dk, dw, dgc = output/state grads;
           dk, dv, dbeta, dgc += WY backward;  dg = reverse chunk-local cumsum of dgc.
Everything the backward needs (A, w, h, U') is saved by the forward: no recomputation.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..utils import validate
from ..utils.cumsum import chunk_local_cumsum
from ..utils.index import cdiv, prepare_chunk_indices, prepare_chunk_offsets
from .delta_h import bwd_dh, fused_output_fits, fwd_h
from .delta_o import bwd_dqkwg, bwd_dv_local, fwd_o
from .delta_wy import BT, wy_bwd, wy_fwd


def _meta(q, cu_seqlens):
    B, T = q.shape[:2]
    if cu_seqlens is None:
        return B, cdiv(T, BT), None, None
    chunk_indices = prepare_chunk_indices(cu_seqlens, BT)
    chunk_offsets = prepare_chunk_offsets(cu_seqlens, BT)
    return cu_seqlens.numel() - 1, chunk_indices.shape[0], chunk_indices, chunk_offsets


# Outputs computed inside the state walk (True) or by a separate chunk-parallel kernel reading the
# stored states (False). H100, K = V = 128 (scripts/gpu_delta_tune.py): ungated and without a backward,
# the fused walk skips writing h and v_new and costs 0.160 ms against 0.146 + 0.149 for walk + outputs at
# 4x4096 (equal at 1x16384). Gated it loses (0.292 vs 0.305 at 4x4096, 0.739 vs 0.488 at 1x16384: the
# decayed Q K^T tile on the walk's critical path), and with a backward (h and v_new written anyway) it
# gains too little or loses, so those keep the two kernels (the kernel supports all three; tests force them).
FUSED_OUTPUT = {"train": False, "inference": True, "gated": False}


def delta_chunk_fwd(q, k, v, beta, g, scale, h0, output_final_state, cu_seqlens, p=None, need_saved=True):
    """p: Comba's erase key [B,T,H,K] (needs g); None for the (gated) delta rule.
    need_saved=False (no backward will run) lets the fused walk skip writing h and v_new."""
    N, NT, ci, co = _meta(q, cu_seqlens)
    gc = chunk_local_cumsum(g, BT, cu_seqlens=cu_seqlens) if g is not None else None
    A, w, u = wy_fwd(k, v, beta, gc, cu_seqlens, ci, NT, p=p, graw=g if p is not None else None)
    fused = FUSED_OUTPUT["train" if need_saved else "inference"] and (g is None or FUSED_OUTPUT["gated"])
    if fused and fused_output_fits(k.shape[-1]):
        h, v_new, ht, o = fwd_h(k, w, u, gc, h0, output_final_state, cu_seqlens, co, N, NT, q=q, scale=scale,
                                store_h=need_saved)
    else:
        h, v_new, ht = fwd_h(k, w, u, gc, h0, output_final_state, cu_seqlens, co, N, NT)
        o = fwd_o(q, k, v_new, h, gc, scale, cu_seqlens, ci, NT)
    return o, ht, (gc, A, w, h, v_new)


def delta_chunk_bwd(q, k, v, beta, g, scale, h0, cu_seqlens, saved, do, dht, p=None):
    gc, A, w, h, v_new = saved
    B, T, H, K = q.shape
    HV = v.shape[2]
    N, NT, ci, co = _meta(q, cu_seqlens)
    dv_local = bwd_dv_local(q, k, gc, do, scale, cu_seqlens, ci, NT)
    dh, dh0, dv2 = bwd_dh(q, k, w, gc, h0, dht, do, dv_local, scale, cu_seqlens, co, N, NT)
    dq, dk, dw, dgc = bwd_dqkwg(q, k, v_new, h, dh, do, dv2, gc, scale, cu_seqlens, ci, NT)
    dp = dgl = None
    if p is None:
        dk, dv, dbeta, dgc_wy = wy_bwd(k, v, beta, gc, A, dw, dv2, dk, cu_seqlens, ci, NT)
    else:
        dk, dv, dbeta, dgc_wy, dp, dgl = wy_bwd(k, v, beta, gc, A, dw, dv2, dk, cu_seqlens, ci, NT, p=p, graw=g)
    dg = None
    if g is not None:
        dg = chunk_local_cumsum(dgc.sum(0) + dgc_wy, BT, reverse=True, cu_seqlens=cu_seqlens)
        if dgl is not None:  # Comba's row factors use gc - g
            dg = dg - dgl
        dg = dg.to(g.dtype)
    if HV != H:  # grouped value heads: q/k gradients sum over the heads of a group
        G = HV // H
        dq = dq.view(B, T, H, G, K).sum(3)
        dk = dk.view(B, T, H, G, K).sum(3)
        if dp is not None:
            dp = dp.view(B, T, H, G, K).sum(3)
    if dp is not None:
        dp = dp.to(p.dtype)
    return dq.to(q.dtype), dk.to(k.dtype), dv, dbeta.to(beta.dtype), dg, dh0, dp


class DeltaChunkFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, beta, g, scale, h0, output_final_state, cu_seqlens, p=None, need_saved=True):
        o, ht, saved = delta_chunk_fwd(q, k, v, beta, g, scale, h0, output_final_state, cu_seqlens, p=p,
                                       need_saved=need_saved)
        if need_saved:
            ctx.save_for_backward(q, k, v, beta, g, h0, cu_seqlens, p, *saved)
        ctx.scale = scale
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, beta, g, h0, cu_seqlens, p, *saved = ctx.saved_tensors
        dq, dk, dv, dbeta, dg, dh0, dp = delta_chunk_bwd(
            q, k, v, beta, g, ctx.scale, h0, cu_seqlens, saved, do.contiguous(),
            dht.contiguous() if dht is not None else None, p=p)
        if dh0 is not None:
            dh0 = dh0.to(h0.dtype)
        return dq, dk, dv, dbeta, dg, None, dh0, None, None, dp, None


def delta_chunk_apply(q, k, v, beta, g, scale, h0, output_final_state, cu_seqlens, p=None):
    """DeltaChunkFunction.apply, telling its forward whether a backward can follow: inside apply grad
    mode is off and ctx.needs_input_grad mirrors requires_grad even under torch.no_grad(), so only the
    caller can tell. Without a backward the forward skips what only the backward reads."""
    need = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, k, v, beta, g, h0, p))
    return DeltaChunkFunction.apply(q, k, v, beta, g, scale, h0, output_final_state, cu_seqlens, p, need)


# ----------------------------------------------------------------------------------------------
# input handling shared by every delta-rule family
# ----------------------------------------------------------------------------------------------

def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x / sqrt(sum(x^2) + eps) along the last dim, in float32 (returned in x's dtype)."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).sum(-1, keepdim=True) + eps)).to(x.dtype)


def gate_from_logits(a: torch.Tensor, A_log: torch.Tensor, dt_bias: Optional[torch.Tensor]) -> torch.Tensor:
    """Mamba2-style log-decay: g = -exp(A_log) * softplus(a + dt_bias), float32 [B, T, HV]."""
    x = a.float()
    if dt_bias is not None:
        x = x + dt_bias.float()
    return -A_log.float().exp() * F.softplus(x)


def prepare_delta_inputs(q, k, v, beta, g, *, gated: bool, allow_gva: bool, initial_state, cu_seqlens,
                         scale, use_qk_l2norm_in_kernel=False, use_gate_in_kernel=False, A_log=None,
                         dt_bias=None, use_beta_sigmoid_in_kernel=False, allow_neg_eigval=False,
                         state_v_first=False, chunk_size=BT, transform=True, light_varlen_check=False,
                         max_v=validate.MAX_HEAD_DIM):
    """Validate (ValueError naming the argument) and apply the in-op transforms.

    Returns (q, k, v, beta, g, scale, initial_state) ready for the core: contiguous, q/k
    l2-normalised when asked, g computed from logits when ``use_gate_in_kernel``, beta through
    sigmoid when ``use_beta_sigmoid_in_kernel`` (x2 with ``allow_neg_eigval``), state [N,HV,K,V].
    """
    B, T, H, HV, K, V = validate.check_qkv(q, k, v, allow_gva=allow_gva, max_v=max_v)
    if beta is None:
        beta = torch.ones(B, T, HV, device=q.device, dtype=q.dtype)
    validate.check_gate("beta", beta, (B, T, HV), "[B, T, HV]")
    if gated:
        if g is None:
            raise ValueError("g must be given (log-decay [B, T, HV], or gate logits with use_gate_in_kernel)")
        validate.check_gate("g", g, (B, T, HV), "[B, T, HV]")
    if chunk_size != BT:
        raise ValueError(f"chunk_size must be {BT} (the only size the kernels implement), got {chunk_size}")
    if light_varlen_check and cu_seqlens is not None:  # decode: no host read of cu_seqlens
        if cu_seqlens.dim() != 1 or cu_seqlens.dtype not in (torch.int32, torch.int64) or B != 1:
            raise ValueError(f"cu_seqlens must be an int [N+1] tensor with B == 1, got shape "
                             f"{tuple(cu_seqlens.shape)}, dtype {cu_seqlens.dtype}, B={B}")
        N = cu_seqlens.shape[0] - 1
    else:
        N = validate.check_cu_seqlens(cu_seqlens, B, T)
    if initial_state is not None:
        if state_v_first:
            validate.check_initial_state(initial_state, N, HV, V, K)
            initial_state = initial_state.transpose(-1, -2)
        else:
            validate.check_initial_state(initial_state, N, HV, K, V)
    if use_gate_in_kernel:
        if A_log is None:
            raise ValueError("A_log [HV] is required with use_gate_in_kernel=True")
        validate.check_gate("A_log", A_log, (HV,), "[HV]")
        if dt_bias is not None:
            validate.check_gate("dt_bias", dt_bias, (HV,), "[HV]")
    if scale is None:
        scale = K ** -0.5
    if initial_state is not None:
        initial_state = initial_state.contiguous()
    if not transform:
        return (q.contiguous(), k.contiguous(), v.contiguous(), beta.contiguous(),
                g.contiguous() if g is not None else None, float(scale), initial_state)
    if use_gate_in_kernel:
        g = gate_from_logits(g, A_log, dt_bias)
    if use_beta_sigmoid_in_kernel:
        beta = beta.float().sigmoid() * (2.0 if allow_neg_eigval else 1.0)
    if use_qk_l2norm_in_kernel:
        q, k = l2norm(q), l2norm(k)
    return (q.contiguous(), k.contiguous(), v.contiguous(), beta.contiguous(),
            g.contiguous() if g is not None else None, float(scale), initial_state)


def finish_state(ht, state_v_first):
    if ht is not None and state_v_first:
        return ht.transpose(-1, -2).contiguous()
    return ht
