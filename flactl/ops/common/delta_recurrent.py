"""Fused recurrent (token-by-token) delta rule: decoding and short inputs.

    S_t = exp(g_t) S_{t-1};  S_t += beta_t k_t (v_t - S_t^T k_t)^T;  o_t = scale S_t^T q_t

One program keeps a [K, BV] float32 slab of one (sequence, value head)'s state in registers for the
whole sequence, so the state is read and written exactly once (decode is bound by those bytes).
The optional in-op transforms run inside the kernel (no extra launches at decode time): q/k l2norm,
g = -exp(A_log) softplus(a + dt_bias), beta = sigmoid(b) (x2 with allow_neg_eigval).
The state may be updated in place (``inplace_final_state``); nothing syncs with the host.

Backward: recomputed through the chunked implementation (identical math), so every input,
including A_log / dt_bias / the initial state, gets its gradient.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ..utils.backend import use_triton
from ..utils.index import cdiv, next_power_of_2


@triton.jit
def delta_fused_recurrent_fwd_kernel(
    q, k, p, v, beta, g, A_log, dt_bias, o, h0, ht, cu_seqlens, scale, T,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_G: tl.constexpr, GATE_IN_KERNEL: tl.constexpr, USE_DT_BIAS: tl.constexpr, BETA_SIGMOID: tl.constexpr,
    BETA_SCALE: tl.constexpr, L2NORM: tl.constexpr, USE_H0: tl.constexpr, STORE_HT: tl.constexpr,
    IS_VARLEN: tl.constexpr, USE_P: tl.constexpr,
):
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_hv = i_nh // HV, i_nh % HV
    i_h = i_hv // (HV // H)
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        Tl = (tl.load(cu_seqlens + i_n + 1).to(tl.int64) - bos).to(tl.int32)
    else:
        bos = i_n.to(tl.int64) * T
        Tl = T
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k = o_k < K
    m_v = o_v < V
    m_h = m_k[:, None] & m_v[None, :]
    p_s = i_nh.to(tl.int64) * K * V + o_k[:, None] * V + o_v[None, :]
    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_H0:
        b_h += tl.load(h0 + p_s, mask=m_h, other=0.0).to(tl.float32)
    if GATE_IN_KERNEL:
        b_A = tl.exp(tl.load(A_log + i_hv).to(tl.float32))
        if USE_DT_BIAS:
            b_bias = tl.load(dt_bias + i_hv).to(tl.float32)
        else:
            b_bias = 0.0
    p_q = q + (bos * H + i_h) * K + o_k
    p_k = k + (bos * H + i_h) * K + o_k
    if USE_P:
        p_p = p + (bos * H + i_h) * K + o_k
    p_v = v + (bos * HV + i_hv) * V + o_v
    p_o = o + (bos * HV + i_hv) * V + o_v
    p_b = beta + bos * HV + i_hv
    if USE_G:
        p_g = g + bos * HV + i_hv
    for _ in range(0, Tl):
        b_q = tl.load(p_q, mask=m_k, other=0.0).to(tl.float32)
        b_k = tl.load(p_k, mask=m_k, other=0.0).to(tl.float32)
        b_v = tl.load(p_v, mask=m_v, other=0.0).to(tl.float32)
        b_beta = tl.load(p_b).to(tl.float32)
        if L2NORM:
            b_q = b_q * tl.rsqrt(tl.sum(b_q * b_q, 0) + 1e-6)
            b_k = b_k * tl.rsqrt(tl.sum(b_k * b_k, 0) + 1e-6)
        if BETA_SIGMOID:
            b_beta = tl.sigmoid(b_beta) * BETA_SCALE
        if USE_P:  # Comba: the erase key p reads the state before this token's decay
            b_p = tl.load(p_p, mask=m_k, other=0.0).to(tl.float32)
            if L2NORM:
                b_p = b_p * tl.rsqrt(tl.sum(b_p * b_p, 0) + 1e-6)
            b_err = b_v - tl.sum(b_h * b_p[:, None], 0)
        if USE_G:
            b_g = tl.load(p_g).to(tl.float32)
            if GATE_IN_KERNEL:
                x = b_g + b_bias
                b_g = -b_A * tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))))
            b_h *= tl.exp(b_g)
        if not USE_P:
            b_err = b_v - tl.sum(b_h * b_k[:, None], 0)
        b_h += b_k[:, None] * (b_beta * b_err)[None, :]
        b_o = tl.sum(b_h * b_q[:, None], 0) * scale
        tl.store(p_o, b_o.to(p_o.dtype.element_ty), mask=m_v)
        p_q += H * K
        p_k += H * K
        if USE_P:
            p_p += H * K
        p_v += HV * V
        p_o += HV * V
        p_b += HV
        if USE_G:
            p_g += HV
    if STORE_HT:
        tl.store(ht + p_s, b_h.to(ht.dtype.element_ty), mask=m_h)


@functools.lru_cache(maxsize=1024)
def _launch_config(K: int, V: int):
    """(BK, BV, number of V blocks, num_warps), cached per head dims: decoding asks for the same
    shape every step, and host-side block math is a visible share of a T=1 call."""
    BK = max(16, next_power_of_2(K))
    # a [BK, BV] fp32 slab per program: keep it at ~4K elements (32 registers/thread at 4 warps)
    BV = max(8, min(next_power_of_2(V), 4096 // BK))
    return BK, BV, cdiv(V, BV), 4 if BK * BV >= 4096 else 2


def fused_recurrent_delta_fwd(q, k, v, beta, g, scale, h0, output_final_state, cu_seqlens, *,
                              gate_in_kernel=False, A_log=None, dt_bias=None, beta_sigmoid=False,
                              beta_scale=1.0, l2norm=False, inplace_final_state=False, p=None):
    """Launch the recurrent kernel on prepared (validated, contiguous) inputs; returns (o, ht)."""
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    N = B if cu_seqlens is None else cu_seqlens.shape[0] - 1
    o = torch.empty_like(v)
    ht = None
    if output_final_state:
        if inplace_final_state:
            if h0 is None or h0.dtype != torch.float32 or not h0.is_contiguous():
                raise ValueError("inplace_final_state needs a contiguous float32 initial_state")
            ht = h0
        else:
            ht = torch.empty(N, HV, K, V, device=q.device, dtype=torch.float32)
    BK, BV, NV, num_warps = _launch_config(K, V)
    grid = (NV, N * HV)
    delta_fused_recurrent_fwd_kernel[grid](
        q, k, p, v, beta, g, A_log, dt_bias, o, h0, ht, cu_seqlens, scale, T,
        H=H, HV=HV, K=K, V=V, BK=BK, BV=BV, USE_G=g is not None, GATE_IN_KERNEL=gate_in_kernel,
        USE_DT_BIAS=dt_bias is not None, BETA_SIGMOID=beta_sigmoid, BETA_SCALE=beta_scale, L2NORM=l2norm,
        USE_H0=h0 is not None, STORE_HT=ht is not None, IS_VARLEN=cu_seqlens is not None,
        USE_P=p is not None, num_warps=num_warps)
    return o, ht


class FusedRecurrentDeltaFunction(torch.autograd.Function):
    """Forward: the recurrent kernel. Backward: recompute through the chunked path and differentiate."""

    @staticmethod
    def forward(ctx, q, k, v, beta, g, A_log, dt_bias, h0, p, scale, output_final_state, cu_seqlens, opts):
        o, ht = fused_recurrent_delta_fwd(q, k, v, beta, g, scale, h0, output_final_state, cu_seqlens,
                                          A_log=A_log, dt_bias=dt_bias, p=p, **opts)
        ctx.save_for_backward(q, k, v, beta, g, A_log, dt_bias, h0, p, cu_seqlens)
        ctx.scale, ctx.opts, ctx.output_final_state = scale, opts, output_final_state
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        from .delta_chunk import delta_chunk_apply, gate_from_logits, l2norm
        from .delta_torch import torch_chunk_delta

        q, k, v, beta, g, A_log, dt_bias, h0, p, cu_seqlens = ctx.saved_tensors
        opts = ctx.opts
        leaves = [q, k, v, beta, g, A_log, dt_bias, h0, p]
        leaves = [x.detach().requires_grad_(need) if x is not None else None
                  for x, need in zip(leaves, ctx.needs_input_grad[:9])]
        lq, lk, lv, lb, lg, lA, ldt, lh0, lp = leaves
        with torch.enable_grad():
            qq, kk = (l2norm(lq), l2norm(lk)) if opts["l2norm"] else (lq, lk)
            pp = (l2norm(lp) if opts["l2norm"] else lp) if lp is not None else None
            gg = gate_from_logits(lg, lA, ldt) if opts["gate_in_kernel"] else lg
            bb = lb.float().sigmoid() * opts["beta_scale"] if opts["beta_sigmoid"] else lb
            if use_triton(q):
                o, ht = delta_chunk_apply(qq, kk, lv, bb, gg, ctx.scale, lh0, ctx.output_final_state, cu_seqlens, pp)
            else:
                o, ht = torch_chunk_delta(qq, kk, lv, bb, gg, ctx.scale, lh0, ctx.output_final_state, cu_seqlens,
                                          p=pp)
            outs, grads_out = [o], [do]
            if ht is not None and dht is not None:
                outs.append(ht)
                grads_out.append(dht)
            need = [x for x in leaves if x is not None and x.requires_grad]
            got = torch.autograd.grad(outs, need, grads_out, allow_unused=True)
        it = iter(got)
        res = [next(it) if (x is not None and x.requires_grad) else None for x in leaves]
        res = [None if r is None else r.to(x.dtype) for r, x in zip(res, leaves)]
        return (*res, None, None, None, None)
