"""WY / UT representation of one chunk of the (gated) delta rule, forward and backward.

Inside a chunk of C = 64 tokens with chunk-local cumulative log-decays gc (gc = 0 when ungated) and
Gamma_ij = exp(gc_i - gc_j) (i >= j, always <= 1), the delta rule's corrected values solve

    (I + L) U' = diag(beta) V - diag(beta * exp(gc)) K S0,   L = tril(diag(beta) (K K^T) * Gamma, -1)

so with A = (I + L)^{-1} (the "UT transform"):  U' = u - w S0,  u = A diag(beta) V,
w = A diag(beta * exp(gc)) K.

A = (I + L)^{-1} is computed in float32 by block forward substitution with every 16x16 block in registers
(delta_wy_solve: the diagonal blocks row by row, the off-diagonal ones with exact-fp32 16x16 products), the
arithmetic of Gaussian forward substitution (backward stable for triangular systems); it never forms
powers of L (the Neumann/doubling product blows up when |L| entries are ~1, e.g. beta ~ 1 with correlated
keys). A is stored once, in k's dtype: the w, u products and the backward multiply with it in that dtype.

Kernels (chunk-parallel, grid (chunks, B*HV)):
  delta_wy_solve_kernel  L and A (delta_wy_solve.py), one warp per program
  delta_wy_wu_kernel     w, u from A
  delta_wy_bwd_kernel    dk, dv, dbeta, dgc given dw, du (+ dk from the output part)

Backward of the WY part (dA = du (beta V)^T + dw (beta e^gc K)^T, dL = -A^T dA A^T):
  dv     = beta * (A^T du)
  dk    += beta e^gc (A^T dw) + P K + P^T K,          P = dL * beta_i * Gamma_ij (strict lower)
  dbeta  = rowsum(V * A^T du) + e^gc rowsum(K * A^T dw) + rowsum(dL * KK^T * Gamma)
  dgc    = beta e^gc rowsum(K * A^T dw) + rowsum(dL * L) - colsum(dL * L)
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .chunk_bounds import _chunk_bounds
from .delta_wy_solve import BC, BT, delta_wy_solve_kernel


@triton.jit
def delta_wy_wu_kernel(
    k, v, beta, gc, graw, A, w, u, cu_seqlens, chunk_indices, T,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, USE_G: tl.constexpr, USE_P: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    """u = A diag(beta) V; w = A diag(beta exp(gcl)) K from the A that delta_wy_solve_kernel stored (A and
    the operands in k's dtype, fp32 accumulation; k is the erase key P when USE_P)."""
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_hv = i_bh // HV, i_bh % HV
    i_h = i_hv // (HV // H)
    bos, Tl, i_c = _chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, IS_VARLEN)
    o_t = i_c * BT + tl.arange(0, BT)
    m_t = o_t < Tl
    o_r = (bos + o_t).to(tl.int64)
    o_j = tl.arange(0, BT)
    b_A = tl.load(A + (o_r[:, None] * HV + i_hv) * BT + o_j[None, :], mask=m_t[:, None], other=0.0)
    b_A = b_A.to(k.dtype.element_ty)
    b_beta = tl.load(beta + o_r * HV + i_hv, mask=m_t, other=0.0).to(tl.float32)
    for i_v in range(tl.cdiv(V, BV)):
        o_v = i_v * BV + tl.arange(0, BV)
        m = m_t[:, None] & (o_v < V)[None, :]
        p = (o_r[:, None] * HV + i_hv) * V + o_v[None, :]
        b_v = tl.load(v + p, mask=m, other=0.0).to(tl.float32) * b_beta[:, None]
        b_u = tl.dot(b_A, b_v.to(k.dtype.element_ty))
        tl.store(u + p, b_u.to(u.dtype.element_ty), mask=m)
    b_s = b_beta
    if USE_G:
        b_gl = tl.load(gc + o_r * HV + i_hv, mask=m_t, other=0.0).to(tl.float32)
        if USE_P:
            b_gl = b_gl - tl.load(graw + o_r * HV + i_hv, mask=m_t, other=0.0).to(tl.float32)
        b_s = b_s * tl.exp(b_gl)
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m = m_t[:, None] & (o_k < K)[None, :]
        b_k = tl.load(k + (o_r[:, None] * H + i_h) * K + o_k[None, :], mask=m, other=0.0).to(tl.float32)
        b_w = tl.dot(b_A, (b_k * b_s[:, None]).to(k.dtype.element_ty))
        tl.store(w + (o_r[:, None] * HV + i_hv) * K + o_k[None, :], b_w.to(w.dtype.element_ty), mask=m)


@triton.jit
def delta_wy_bwd_kernel(
    k, p, v, beta, gc, graw, A, dw, du, dk_in, dk, dp, dv, dbeta, dgc, dgl, cu_seqlens, chunk_indices, T,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, USE_G: tl.constexpr, USE_P: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    """dk = dk_in + WY part (per value head), dv, dbeta, dgc (WY part). With USE_P (erase key p and
    left decay gcl = gc - g): also dp, and dgl = the part of dgc that belongs to gcl (row factors)."""
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_hv = i_bh // HV, i_bh % HV
    i_h = i_hv // (HV // H)
    bos, Tl, i_c = _chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, IS_VARLEN)
    o_t = i_c * BT + tl.arange(0, BT)
    m_t = o_t < Tl
    o_r = (bos + o_t).to(tl.int64)
    o_j = tl.arange(0, BT)
    dt = k.dtype.element_ty
    b_A = tl.load(A + (o_r[:, None] * HV + i_hv) * BT + o_j[None, :], mask=m_t[:, None], other=0.0).to(dt)
    b_beta = tl.load(beta + o_r * HV + i_hv, mask=m_t, other=0.0).to(tl.float32)
    if USE_G:
        b_g = tl.load(gc + o_r * HV + i_hv, mask=m_t, other=0.0).to(tl.float32)
        b_gl = b_g
        if USE_P:
            b_gl = b_g - tl.load(graw + o_r * HV + i_hv, mask=m_t, other=0.0).to(tl.float32)
        b_eg = tl.exp(b_gl)
    else:
        b_eg = tl.full([BT], 1.0, tl.float32)
    b_s = b_beta * b_eg
    b_dA = tl.zeros([BT, BT], dtype=tl.float32)
    b_kk = tl.zeros([BT, BT], dtype=tl.float32)
    b_db = tl.zeros([BT], dtype=tl.float32)
    b_dgr = tl.zeros([BT], dtype=tl.float32)  # row-factor (left / gcl) part
    # K K^T in a loop of its own, before anything else. Accumulated inside the dw loop below (sharing
    # the k tile with the other products), Triton 3.6 on the H100 produced a nondeterministic K K^T:
    # dbeta / dgc differed between identical calls in ~20 % of elements, 2 % relative error against an
    # fp32 reference instead of 0.47 % (session 5 GPU probe, docs/perf/delta.md run 5; a second load of
    # k or CTA barriers did not help, this order did). tests/ops/test_determinism.py guards it. The loop
    # repeats the dw loop's tile loads on purpose: this exact shape is what was verified on the GPU, and the
    # fault is sensitive to code shape, so do not fold the two loops into a helper without a GPU re-run.
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m = m_t[:, None] & (o_k < K)[None, :]
        pk = (o_r[:, None] * H + i_h) * K + o_k[None, :]
        b_k = tl.load(k + pk, mask=m, other=0.0)
        if USE_P:
            b_e = tl.load(p + pk, mask=m, other=0.0)
        else:
            b_e = tl.load(k + pk, mask=m, other=0.0)
        b_kk += tl.dot(b_e, tl.trans(b_k))
    for i_v in range(tl.cdiv(V, BV)):
        o_v = i_v * BV + tl.arange(0, BV)
        m = m_t[:, None] & (o_v < V)[None, :]
        pv = (o_r[:, None] * HV + i_hv) * V + o_v[None, :]
        b_v = tl.load(v + pv, mask=m, other=0.0)
        b_du = tl.load(du + pv, mask=m, other=0.0).to(dt)
        b_dA += tl.dot(b_du, tl.trans((b_v.to(tl.float32) * b_beta[:, None]).to(dt)))
        b_dvb = tl.dot(tl.trans(b_A), b_du)
        tl.store(dv + pv, (b_dvb * b_beta[:, None]).to(dv.dtype.element_ty), mask=m)
        b_db += tl.sum(b_dvb * b_v.to(tl.float32), 1)
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m = m_t[:, None] & (o_k < K)[None, :]
        pk = (o_r[:, None] * H + i_h) * K + o_k[None, :]
        b_k = tl.load(k + pk, mask=m, other=0.0)
        if USE_P:
            b_e = tl.load(p + pk, mask=m, other=0.0)
        else:
            b_e = b_k
        b_dw = tl.load(dw + (o_r[:, None] * HV + i_hv) * K + o_k[None, :], mask=m, other=0.0).to(dt)
        b_dA += tl.dot(b_dw, tl.trans((b_e.to(tl.float32) * b_s[:, None]).to(dt)))
        b_dkb = tl.dot(tl.trans(b_A), b_dw)
        b_x = tl.sum(b_dkb * b_e.to(tl.float32), 1) * b_eg
        b_db += b_x
        b_dgr += b_x * b_beta
    # dL = -A^T dA A^T on the strict lower triangle
    # (bf16 tensor-core products with fp32 accumulation: exact-fp32 64x64 products here cost ~10x)
    b_dL = -tl.dot(tl.trans(b_A), tl.dot(b_dA.to(dt), tl.trans(b_A)).to(dt))
    m_L = (o_t[:, None] > o_t[None, :]) & m_t[:, None]
    if USE_G:
        b_gam = tl.exp(tl.where(m_L, b_gl[:, None] - b_g[None, :], 0.0))
    else:
        b_gam = tl.full([BT, BT], 1.0, tl.float32)
    b_dL = tl.where(m_L, b_dL, 0.0)
    b_dLg = b_dL * b_gam
    b_db += tl.sum(b_dLg * b_kk, 1)
    b_P = b_dLg * b_beta[:, None]
    tl.store(dbeta + o_r * HV + i_hv, b_db.to(dbeta.dtype.element_ty), mask=m_t)
    if USE_G:
        b_x2 = b_P * b_kk  # = dL * L
        b_dgr += tl.sum(b_x2, 1)
        tl.store(dgc + o_r * HV + i_hv, b_dgr - tl.sum(b_x2, 0), mask=m_t)
        if USE_P:
            tl.store(dgl + o_r * HV + i_hv, b_dgr, mask=m_t)
    b_Pd = b_P.to(dt)
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m = m_t[:, None] & (o_k < K)[None, :]
        pk = (o_r[:, None] * H + i_h) * K + o_k[None, :]
        b_k = tl.load(k + pk, mask=m, other=0.0)
        po = (o_r[:, None] * HV + i_hv) * K + o_k[None, :]
        b_dw = tl.load(dw + po, mask=m, other=0.0).to(dt)
        b_dew = tl.dot(tl.trans(b_A), b_dw) * b_s[:, None]
        b_dk = tl.load(dk_in + po, mask=m, other=0.0).to(tl.float32)
        if USE_P:
            b_e = tl.load(p + pk, mask=m, other=0.0)
            b_dk += tl.dot(tl.trans(b_Pd), b_e)
            tl.store(dp + po, (b_dew + tl.dot(b_Pd, b_k)).to(dp.dtype.element_ty), mask=m)
        else:
            b_dk += b_dew + tl.dot(b_Pd, b_k) + tl.dot(tl.trans(b_Pd), b_k)
        tl.store(dk + po, b_dk.to(dk.dtype.element_ty), mask=m)


def _bk(d: int) -> int:
    """Block width along K or V: always 64 (masked when the head dim is smaller).

    Every configuration verified on the H100 (Triton 3.6, bf16) used 64-wide blocks; the one failing
    GPU case (gated, K=64, V=32 -> a 32-wide V block) produced inf there while the interpreter was
    exact, so narrower blocks are avoided until that is understood (see docs/perf/delta.md).
    """
    return 64


# launch settings in one place so scripts/gpu_delta_tune.py can sweep them. H100, bf16, 4x4096x16x128 /
# 1x16384 / 4x4096x32x64: the solve on one warp (0.238 / 0.356 ms for solve + w,u at the last two shapes;
# two warps 0.260 / 0.415, four 0.346 / 0.892); the kkt, solve and w, u fused into one program (the
# previous kernel, solve through a global fp32 scratch) took 0.296 / 0.299 / 0.531.
WY_FWD_LAUNCH = dict(solve_warps=1, num_warps=4, num_stages=3)


def wy_fwd(k, v, beta, gc, cu_seqlens, chunk_indices, NT, p=None, graw=None):
    """A [B,T,HV,64] (k's dtype), w [B,T,HV,K], u [B,T,HV,V] for every chunk (NT chunks per batch row):
    delta_wy_solve_kernel (L and A = (I + L)^{-1} in registers), then delta_wy_wu_kernel.

    p (erase key, [B,T,H,K]) and graw (raw log-decay, to form gcl = gc - g) are given for Comba only.
    """
    B, T, H, K = k.shape
    HV, V = v.shape[2], v.shape[3]
    cfg = WY_FWD_LAUNCH
    A = torch.empty(B, T, HV, BT, device=k.device, dtype=k.dtype)
    w = torch.empty(B, T, HV, K, device=k.device, dtype=k.dtype)
    u = torch.empty(B, T, HV, V, device=k.device, dtype=k.dtype)
    grid = (NT, B * HV)
    use_p = p is not None
    flags = dict(USE_G=gc is not None, USE_P=use_p, IS_VARLEN=cu_seqlens is not None)
    delta_wy_solve_kernel[grid](k, p, beta, gc, graw, A, cu_seqlens, chunk_indices, T, H=H, HV=HV, K=K, BT=BT,
                                BC=BC, BK=_bk(K), **flags, num_warps=cfg["solve_warps"])
    delta_wy_wu_kernel[grid](p if use_p else k, v, beta, gc, graw, A, w, u, cu_seqlens, chunk_indices, T,
                             H=H, HV=HV, K=K, V=V, BT=BT, BK=_bk(K), BV=_bk(V), **flags,
                             num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return A, w, u


WY_BWD_LAUNCH = dict(num_warps=4, num_stages=3)  # swept by scripts/gpu_delta_tune.py


def wy_bwd(k, v, beta, gc, A, dw, du, dk_in, cu_seqlens, chunk_indices, NT, p=None, graw=None):
    """Returns dk (= dk_in + WY part, per value head [B,T,HV,K]), dv, dbeta, dgc (WY part, fp32 or None),
    and for Comba (p given) dp [B,T,HV,K] and dgl (the part of dgc owed to gcl = gc - g)."""
    B, T, H, K = k.shape
    HV, V = v.shape[2], v.shape[3]
    use_p = p is not None
    f32 = torch.float32
    dk = torch.empty(B, T, HV, K, device=k.device, dtype=f32 if HV != H else k.dtype)
    dp = torch.empty(B, T, HV, K, device=k.device, dtype=f32 if HV != H else k.dtype) if use_p else None
    dv = torch.empty_like(v)
    dbeta = torch.empty(B, T, HV, device=k.device, dtype=f32)
    dgc = torch.empty(B, T, HV, device=k.device, dtype=f32) if gc is not None else None
    dgl = torch.empty(B, T, HV, device=k.device, dtype=f32) if (gc is not None and use_p) else None
    delta_wy_bwd_kernel[(NT, B * HV)](
        k, p, v, beta, gc, graw, A, dw, du, dk_in, dk, dp, dv, dbeta, dgc, dgl, cu_seqlens, chunk_indices, T,
        H=H, HV=HV, K=K, V=V, BT=BT, BK=_bk(K), BV=_bk(V), USE_G=gc is not None, USE_P=use_p,
        IS_VARLEN=cu_seqlens is not None, **WY_BWD_LAUNCH)
    if use_p:
        return dk, dv, dbeta, dgc, dp, dgl
    return dk, dv, dbeta, dgc

