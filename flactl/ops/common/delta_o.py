"""Chunk output and its backward for every delta-rule variant.

Given the chunk-start state S (= h[c]) and corrected values U' (v_new):

    o = scale * ( (Q * exp(gc)) S + ((Q K^T) * Gamma * causal) U' ),  Gamma_ti = exp(gc_t - gc_i)

Backward (dS = dh[c], the gradient of the chunk's end state; dU' = dv2 from the state pass):

    dv_local = scale * ((Q K^T) * Gamma * causal)^T dO           (before the state pass)
    D        = scale * (dO U'^T) * Gamma * causal
    dq       = scale * exp(gc) (dO S^T) + D K
    dk       = exp(gl - gc) (U' dS^T) + D^T Q                    (WY part added by delta_wy)
    dw       = -dU' S^T
    dgc      = rowsum(Q * dq - K * dk)  (+ exp(gl) <S, dS> + sum(K * dk_state) at the last row)

The dgc identity: every decay factor exp(gc_a - gc_b) contributes +/- (its term) to a and b, and
the sums of those terms are exactly q.dq and k.dk (plus the whole end state at the last row).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .chunk_bounds import _chunk_bounds
from .delta_wy import BT, _bk


@triton.jit
def delta_fwd_o_kernel(
    q, k, v_new, h, gc, o, cu_seqlens, chunk_indices, scale, T,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, USE_G: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_hv = i_bh // HV, i_bh % HV
    i_h = i_hv // (HV // H)
    bos, Tl, i_c = _chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, IS_VARLEN)
    if IS_VARLEN:
        i_hc = i_t.to(tl.int64)
    else:
        i_hc = i_b.to(tl.int64) * tl.cdiv(T, BT) + i_t
    o_t = i_c * BT + tl.arange(0, BT)
    m_t = o_t < Tl
    o_r = (bos + o_t).to(tl.int64)
    o_v = i_v * BV + tl.arange(0, BV)
    m_v = o_v < V
    dt = k.dtype.element_ty
    b_o = tl.zeros([BT, BV], dtype=tl.float32)
    b_A = tl.zeros([BT, BT], dtype=tl.float32)
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m = m_t[:, None] & (o_k < K)[None, :]
        b_q = tl.load(q + (o_r[:, None] * H + i_h) * K + o_k[None, :], mask=m, other=0.0)
        b_k = tl.load(k + (o_r[:, None] * H + i_h) * K + o_k[None, :], mask=m, other=0.0)
        b_h = tl.load(h + (i_hc * HV + i_hv) * K * V + o_k[:, None] * V + o_v[None, :],
                      mask=(o_k < K)[:, None] & m_v[None, :], other=0.0)
        b_o += tl.dot(b_q, b_h)
        b_A += tl.dot(b_q, tl.trans(b_k))
    m_A = (o_t[:, None] >= o_t[None, :]) & m_t[:, None]
    if USE_G:
        b_g = tl.load(gc + o_r * HV + i_hv, mask=m_t, other=0.0).to(tl.float32)
        b_o = b_o * tl.exp(b_g)[:, None]
        b_A = b_A * tl.exp(tl.where(m_A, b_g[:, None] - b_g[None, :], 0.0))
    b_A = tl.where(m_A, b_A, 0.0)
    p_v = (o_r[:, None] * HV + i_hv) * V + o_v[None, :]
    m_tv = m_t[:, None] & m_v[None, :]
    b_vn = tl.load(v_new + p_v, mask=m_tv, other=0.0)
    b_o = (b_o + tl.dot(b_A.to(dt), b_vn)) * scale
    tl.store(o + p_v, b_o.to(o.dtype.element_ty), mask=m_tv)


@triton.jit
def delta_bwd_dv_local_kernel(
    q, k, gc, do, dv, cu_seqlens, chunk_indices, scale, T,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, USE_G: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_hv = i_bh // HV, i_bh % HV
    i_h = i_hv // (HV // H)
    bos, Tl, i_c = _chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, IS_VARLEN)
    o_t = i_c * BT + tl.arange(0, BT)
    m_t = o_t < Tl
    o_r = (bos + o_t).to(tl.int64)
    dt = k.dtype.element_ty
    b_A = tl.zeros([BT, BT], dtype=tl.float32)  # [i (key), t (query)]
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m = m_t[:, None] & (o_k < K)[None, :]
        b_q = tl.load(q + (o_r[:, None] * H + i_h) * K + o_k[None, :], mask=m, other=0.0)
        b_k = tl.load(k + (o_r[:, None] * H + i_h) * K + o_k[None, :], mask=m, other=0.0)
        b_A += tl.dot(b_k, tl.trans(b_q))
    m_A = (o_t[:, None] <= o_t[None, :]) & m_t[None, :]
    if USE_G:
        b_g = tl.load(gc + o_r * HV + i_hv, mask=m_t, other=0.0).to(tl.float32)
        b_A = b_A * tl.exp(tl.where(m_A, b_g[None, :] - b_g[:, None], 0.0))
    b_A = tl.where(m_A, b_A * scale, 0.0).to(dt)
    for i_v in range(tl.cdiv(V, BV)):
        o_v = i_v * BV + tl.arange(0, BV)
        p_v = (o_r[:, None] * HV + i_hv) * V + o_v[None, :]
        m_tv = m_t[:, None] & (o_v < V)[None, :]
        b_do = tl.load(do + p_v, mask=m_tv, other=0.0).to(dt)
        tl.store(dv + p_v, tl.dot(b_A, b_do).to(dv.dtype.element_ty), mask=m_tv)


@triton.jit
def delta_bwd_dqkwg_kernel(
    q, k, v_new, h, dh, do, dv2, gc, dq, dk, dw, dgc, cu_seqlens, chunk_indices, scale, T, BTOT,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, USE_G: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    i_k, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_hv = i_bh // HV, i_bh % HV
    i_h = i_hv // (HV // H)
    bos, Tl, i_c = _chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, IS_VARLEN)
    if IS_VARLEN:
        i_hc = i_t.to(tl.int64)
    else:
        i_hc = i_b.to(tl.int64) * tl.cdiv(T, BT) + i_t
    o_t = i_c * BT + tl.arange(0, BT)
    m_t = o_t < Tl
    o_r = (bos + o_t).to(tl.int64)
    o_k = i_k * BK + tl.arange(0, BK)
    m_k = o_k < K
    dt = k.dtype.element_ty
    b_ds = tl.zeros([BT, BT], dtype=tl.float32)
    b_dq = tl.zeros([BT, BK], dtype=tl.float32)
    b_dk = tl.zeros([BT, BK], dtype=tl.float32)
    b_dw = tl.zeros([BT, BK], dtype=tl.float32)
    b_hdh = tl.zeros([BK], dtype=tl.float32)
    p_hs = (i_hc * HV + i_hv) * K * V
    for i_v in range(tl.cdiv(V, BV)):
        o_v = i_v * BV + tl.arange(0, BV)
        m_v = o_v < V
        p_v = (o_r[:, None] * HV + i_hv) * V + o_v[None, :]
        m_tv = m_t[:, None] & m_v[None, :]
        b_vn = tl.load(v_new + p_v, mask=m_tv, other=0.0)
        b_do = tl.load(do + p_v, mask=m_tv, other=0.0).to(dt)
        b_dv = tl.load(dv2 + p_v, mask=m_tv, other=0.0).to(dt)
        m_kv = m_k[:, None] & m_v[None, :]
        b_h = tl.load(h + p_hs + o_k[:, None] * V + o_v[None, :], mask=m_kv, other=0.0)
        b_dh = tl.load(dh + p_hs + o_k[:, None] * V + o_v[None, :], mask=m_kv, other=0.0)
        b_ds += tl.dot(b_do, tl.trans(b_vn))
        b_dq += tl.dot(b_do, tl.trans(b_h))
        b_dk += tl.dot(b_vn, tl.trans(b_dh))
        b_dw += tl.dot(b_dv, tl.trans(b_h))
        if USE_G:
            b_hdh += tl.sum(b_h.to(tl.float32) * b_dh.to(tl.float32), 1)
    m = m_t[:, None] & m_k[None, :]
    p_qk = (o_r[:, None] * H + i_h) * K + o_k[None, :]
    b_q = tl.load(q + p_qk, mask=m, other=0.0)
    b_k = tl.load(k + p_qk, mask=m, other=0.0)
    m_A = (o_t[:, None] >= o_t[None, :]) & m_t[:, None]
    if USE_G:
        last = tl.minimum((i_c + 1) * BT, Tl) - 1
        b_gl = tl.load(gc + (bos + last) * HV + i_hv).to(tl.float32)
        b_g = tl.load(gc + o_r * HV + i_hv, mask=m_t, other=0.0).to(tl.float32)
        b_dq = b_dq * (tl.exp(b_g) * scale)[:, None]
        b_dk = b_dk * tl.where(m_t, tl.exp(b_gl - b_g), 0.0)[:, None]
        b_dgl = tl.sum(b_hdh, 0) * tl.exp(b_gl) + tl.sum(tl.sum(b_dk * b_k.to(tl.float32), 1), 0)
        b_ds = b_ds * tl.exp(tl.where(m_A, b_g[:, None] - b_g[None, :], 0.0))
    else:
        b_dq = b_dq * scale
    b_ds = tl.where(m_A, b_ds * scale, 0.0).to(dt)
    b_dq += tl.dot(b_ds, b_k)
    b_dk += tl.dot(tl.trans(b_ds), b_q)
    p_o = (o_r[:, None] * HV + i_hv) * K + o_k[None, :]
    tl.store(dq + p_o, b_dq.to(dq.dtype.element_ty), mask=m)
    tl.store(dk + p_o, b_dk.to(dk.dtype.element_ty), mask=m)
    tl.store(dw + p_o, (-b_dw).to(dw.dtype.element_ty), mask=m)
    if USE_G:
        b_dg = tl.sum(b_dq * b_q.to(tl.float32) - b_dk * b_k.to(tl.float32), 1)
        b_dg = tl.where(o_t == last, b_dg + b_dgl, b_dg)
        tl.store(dgc + (i_k * BTOT + o_r) * HV + i_hv, b_dg, mask=m_t)


FWD_O_LAUNCH = dict(num_warps=4, num_stages=3)  # swept by scripts/gpu_delta_tune.py


def fwd_o(q, k, v_new, h, gc, scale, cu_seqlens, chunk_indices, NT):
    B, T, H, K = q.shape
    HV, V = v_new.shape[2], v_new.shape[3]
    o = torch.empty_like(v_new)
    BV = _bk(V)
    grid = (triton.cdiv(V, BV), NT, B * HV)
    delta_fwd_o_kernel[grid](q, k, v_new, h, gc, o, cu_seqlens, chunk_indices, scale, T, H=H, HV=HV, K=K, V=V,
                             BT=BT, BK=_bk(K), BV=BV, USE_G=gc is not None, IS_VARLEN=cu_seqlens is not None,
                             **FWD_O_LAUNCH)
    return o


def bwd_dv_local(q, k, gc, do, scale, cu_seqlens, chunk_indices, NT):
    B, T, H, K = q.shape
    HV, V = do.shape[2], do.shape[3]
    dv = torch.empty_like(do)
    delta_bwd_dv_local_kernel[(NT, B * HV)](q, k, gc, do, dv, cu_seqlens, chunk_indices, scale, T, H=H, HV=HV,
                                            K=K, V=V, BT=BT, BK=_bk(K), BV=_bk(V), USE_G=gc is not None,
                                            IS_VARLEN=cu_seqlens is not None, num_warps=4)
    return dv


BWD_DQKWG_LAUNCH = dict(num_warps=4, num_stages=2)  # swept by scripts/gpu_delta_tune.py


def bwd_dqkwg(q, k, v_new, h, dh, do, dv2, gc, scale, cu_seqlens, chunk_indices, NT):
    """dq, dk (output/state part) and dw per value head [B,T,HV,K]; dgc partial [NK,B,T,HV] or None."""
    B, T, H, K = q.shape
    HV, V = do.shape[2], do.shape[3]
    BK = _bk(K)
    NK = triton.cdiv(K, BK)
    f32 = torch.float32
    dq = torch.empty(B, T, HV, K, device=q.device, dtype=f32 if HV != H else q.dtype)
    dk = torch.empty(B, T, HV, K, device=q.device, dtype=f32)
    dw = torch.empty(B, T, HV, K, device=q.device, dtype=q.dtype)
    dgc = torch.empty(NK, B, T, HV, device=q.device, dtype=f32) if gc is not None else None
    grid = (NK, NT, B * HV)
    delta_bwd_dqkwg_kernel[grid](q, k, v_new, h, dh, do, dv2, gc, dq, dk, dw, dgc, cu_seqlens, chunk_indices,
                                 scale, T, B * T, H=H, HV=HV, K=K, V=V, BT=BT, BK=BK, BV=_bk(V),
                                 USE_G=gc is not None, IS_VARLEN=cu_seqlens is not None, **BWD_DQKWG_LAUNCH)
    return dq, dk, dw, dgc
