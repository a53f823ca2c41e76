"""Inter-chunk state passing for every delta-rule variant (forward and backward).

Forward, chunk by chunk (S = state at the chunk start, gc = chunk-local cumulative log-decay, gl =
gc at the chunk's last valid token; gc = 0 when ungated):

    h[c] = S                                     (stored for the output and backward kernels)
    U'   = u - w S                               (corrected values, "v_new")
    S    = exp(gl) S + (K * exp(gl - gc))^T U'

Backward, chunks in reverse (dS = gradient w.r.t. the state at the chunk's end, starts at dht):

    dh[c] = dS
    dU'   = dv_local + (K * exp(gl - gc)) dS     (dv_local: the intra-chunk output term)
    dS    = exp(gl) dS + scale (Q * exp(gc))^T dO - w^T dU'

With q given, the walk also writes the outputs (delta_o's forward formula) from the chunk-start state
while it is in registers, so h need not be written and re-read when no backward follows.

One program owns a [K, BV] slab of the state for one (sequence, value head), held as up to four
[64, BV] float32 register tiles (K <= 256), and walks the sequence's chunks.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..utils.device import sm_count
from .delta_wy import BT, _bk


@triton.jit
def _seq_bounds(i_n, cu_seqlens, chunk_offsets, T, BT: tl.constexpr, IS_VARLEN: tl.constexpr):
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        seq_len = tl.load(cu_seqlens + i_n + 1).to(tl.int64) - bos
        boh = tl.load(chunk_offsets + i_n).to(tl.int64)
    else:
        bos = i_n.to(tl.int64) * T
        seq_len = (i_n * 0 + T).to(tl.int64)
        boh = i_n.to(tl.int64) * tl.cdiv(T, BT)
    return bos, seq_len, boh


@triton.jit
def _fwd_h_tile(b_hs, b_v, b_o, b_qk, q, k, w, h, o_h, o_r, m_t, m_v, i_h, i_hv, koff,
                H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr,
                STORE_H: tl.constexpr, FUSE_O: tl.constexpr):
    """One [BK, BV] tile of the chunk-start state (b_hs, k.dtype), K rows [koff, koff + BK): store it,
    U' -= w S; with FUSE_O also the output's Q S and the chunk's Q K^T."""
    o_k = koff + tl.arange(0, BK)
    m_k = o_k < K
    m = m_t[:, None] & m_k[None, :]
    if STORE_H:
        tl.store(h + o_h + o_k[:, None] * V, b_hs, mask=m_k[:, None] & m_v[None, :])
    b_w = tl.load(w + (o_r[:, None] * HV + i_hv) * K + o_k[None, :], mask=m, other=0.0)
    b_v -= tl.dot(b_w, b_hs)
    if FUSE_O:
        p_qk = (o_r[:, None] * H + i_h) * K + o_k[None, :]
        b_q = tl.load(q + p_qk, mask=m, other=0.0)
        b_k = tl.load(k + p_qk, mask=m, other=0.0)
        b_o += tl.dot(b_q, b_hs)
        b_qk += tl.dot(b_q, tl.trans(b_k))
    return b_v, b_o, b_qk


@triton.jit
def delta_fwd_h_kernel(
    q, k, w, u, gc, h, v_new, o, h0, ht, cu_seqlens, chunk_offsets, scale, T,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, NKT: tl.constexpr,
    USE_G: tl.constexpr, USE_H0: tl.constexpr, STORE_HT: tl.constexpr, IS_VARLEN: tl.constexpr,
    STORE_H: tl.constexpr, FUSE_O: tl.constexpr,
):
    """STORE_H: write h and v_new (the backward needs them). FUSE_O: also write the outputs o from the
    chunk-start state while it is in registers (what delta_fwd_o_kernel computes), so h need not
    round-trip through memory."""
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_hv = i_nh // HV, i_nh % HV
    i_h = i_hv // (HV // H)
    bos, Tl, boh = _seq_bounds(i_n, cu_seqlens, chunk_offsets, T, BT, IS_VARLEN)
    NT = tl.cdiv(Tl, BT)
    dt = k.dtype.element_ty
    o_v = i_v * BV + tl.arange(0, BV)
    m_v = o_v < V
    o_kk = tl.arange(0, BK)
    # state tiles rows [j*BK, (j+1)*BK)
    b_h1 = tl.zeros([BK, BV], dtype=tl.float32)
    b_h2 = tl.zeros([BK, BV], dtype=tl.float32)
    b_h3 = tl.zeros([BK, BV], dtype=tl.float32)
    b_h4 = tl.zeros([BK, BV], dtype=tl.float32)
    p_s = i_nh.to(tl.int64) * K * V + o_v[None, :]
    if USE_H0:
        b_h1 += tl.load(h0 + p_s + o_kk[:, None] * V, mask=(o_kk < K)[:, None] & m_v[None, :], other=0.0).to(tl.float32)
        if NKT > 1:
            b_h2 += tl.load(h0 + p_s + (BK + o_kk)[:, None] * V, mask=((BK + o_kk) < K)[:, None] & m_v[None, :], other=0.0).to(tl.float32)
        if NKT > 2:
            b_h3 += tl.load(h0 + p_s + (2 * BK + o_kk)[:, None] * V, mask=((2 * BK + o_kk) < K)[:, None] & m_v[None, :], other=0.0).to(tl.float32)
        if NKT > 3:
            b_h4 += tl.load(h0 + p_s + (3 * BK + o_kk)[:, None] * V, mask=((3 * BK + o_kk) < K)[:, None] & m_v[None, :], other=0.0).to(tl.float32)
    for i_c in range(0, NT):
        o_t = i_c * BT + tl.arange(0, BT)
        m_t = o_t < Tl
        o_r = (bos + o_t).to(tl.int64)
        o_h = ((boh + i_c) * HV + i_hv) * K * V + o_v[None, :]  # offsets of this chunk's h slab
        p_u = (o_r[:, None] * HV + i_hv) * V + o_v[None, :]
        m_u = m_t[:, None] & m_v[None, :]
        b_v = tl.load(u + p_u, mask=m_u, other=0.0).to(tl.float32)
        b_o = tl.zeros([BT, BV], dtype=tl.float32)
        b_qk = tl.zeros([BT, BT], dtype=tl.float32)
        b_v, b_o, b_qk = _fwd_h_tile(b_h1.to(dt), b_v, b_o, b_qk, q, k, w, h, o_h, o_r, m_t, m_v, i_h, i_hv, 0,
                                     H, HV, K, V, BK, STORE_H, FUSE_O)
        if NKT > 1:
            b_v, b_o, b_qk = _fwd_h_tile(b_h2.to(dt), b_v, b_o, b_qk, q, k, w, h, o_h, o_r, m_t, m_v, i_h, i_hv, BK,
                                         H, HV, K, V, BK, STORE_H, FUSE_O)
        if NKT > 2:
            b_v, b_o, b_qk = _fwd_h_tile(b_h3.to(dt), b_v, b_o, b_qk, q, k, w, h, o_h, o_r, m_t, m_v, i_h, i_hv,
                                         2 * BK, H, HV, K, V, BK, STORE_H, FUSE_O)
        if NKT > 3:
            b_v, b_o, b_qk = _fwd_h_tile(b_h4.to(dt), b_v, b_o, b_qk, q, k, w, h, o_h, o_r, m_t, m_v, i_h, i_hv,
                                         3 * BK, H, HV, K, V, BK, STORE_H, FUSE_O)
        if STORE_H:
            tl.store(v_new + p_u, b_v.to(v_new.dtype.element_ty), mask=m_u)
        if USE_G:
            last = tl.minimum((i_c + 1) * BT, Tl) - 1
            b_gl = tl.load(gc + (bos + last) * HV + i_hv).to(tl.float32)
            b_g = tl.load(gc + o_r * HV + i_hv, mask=m_t, other=0.0).to(tl.float32)
        if FUSE_O:
            # o = scale * ((Q * exp(gc)) S + ((Q K^T) * Gamma * causal) U'), as delta_fwd_o_kernel
            m_A = (o_t[:, None] >= o_t[None, :]) & m_t[:, None]
            if USE_G:
                b_o = b_o * tl.exp(b_g)[:, None]
                b_qk = b_qk * tl.exp(tl.where(m_A, b_g[:, None] - b_g[None, :], 0.0))
            b_qk = tl.where(m_A, b_qk, 0.0)
            b_o = (b_o + tl.dot(b_qk.to(dt), b_v.to(dt))) * scale
            tl.store(o + p_u, b_o.to(o.dtype.element_ty), mask=m_u)
        if USE_G:
            b_v = b_v * tl.where(m_t, tl.exp(b_gl - b_g), 0.0)[:, None]
            b_egl = tl.exp(b_gl)
            b_h1 *= b_egl
            b_h2 *= b_egl
            b_h3 *= b_egl
            b_h4 *= b_egl
        b_vd = b_v.to(dt)
        p_k = k + (o_r[:, None] * H + i_h) * K + o_kk[None, :]
        b_k = tl.load(p_k, mask=m_t[:, None] & (o_kk < K)[None, :], other=0.0)
        b_h1 += tl.dot(tl.trans(b_k), b_vd)
        if NKT > 1:
            b_k = tl.load(p_k + BK, mask=m_t[:, None] & ((BK + o_kk) < K)[None, :], other=0.0)
            b_h2 += tl.dot(tl.trans(b_k), b_vd)
        if NKT > 2:
            b_k = tl.load(p_k + 2 * BK, mask=m_t[:, None] & ((2 * BK + o_kk) < K)[None, :], other=0.0)
            b_h3 += tl.dot(tl.trans(b_k), b_vd)
        if NKT > 3:
            b_k = tl.load(p_k + 3 * BK, mask=m_t[:, None] & ((3 * BK + o_kk) < K)[None, :], other=0.0)
            b_h4 += tl.dot(tl.trans(b_k), b_vd)
    if STORE_HT:
        tl.store(ht + p_s + o_kk[:, None] * V, b_h1, mask=(o_kk < K)[:, None] & m_v[None, :])
        if NKT > 1:
            tl.store(ht + p_s + (BK + o_kk)[:, None] * V, b_h2, mask=((BK + o_kk) < K)[:, None] & m_v[None, :])
        if NKT > 2:
            tl.store(ht + p_s + (2 * BK + o_kk)[:, None] * V, b_h3, mask=((2 * BK + o_kk) < K)[:, None] & m_v[None, :])
        if NKT > 3:
            tl.store(ht + p_s + (3 * BK + o_kk)[:, None] * V, b_h4, mask=((3 * BK + o_kk) < K)[:, None] & m_v[None, :])


@triton.jit
def _bwd_dh_tile(b_dh, q, k, w, o_r, m_t, i_h, i_hv, b_do, b_dv, b_qs, b_egl, koff,
                 H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, BK: tl.constexpr):
    """dS_tile <- exp(gl) dS_tile + (Q * scale * exp(gc))^T dO - w^T dU' for K rows [koff, koff+BK)."""
    o_k = koff + tl.arange(0, BK)
    m = m_t[:, None] & (o_k < K)[None, :]
    dt = k.dtype.element_ty
    b_q = tl.load(q + (o_r[:, None] * H + i_h) * K + o_k[None, :], mask=m, other=0.0).to(tl.float32)
    b_w = tl.load(w + (o_r[:, None] * HV + i_hv) * K + o_k[None, :], mask=m, other=0.0)
    b_dh = b_dh * b_egl + tl.dot(tl.trans((b_q * b_qs[:, None]).to(dt)), b_do) - tl.dot(tl.trans(b_w), b_dv)
    return b_dh


@triton.jit
def delta_bwd_dh_kernel(
    q, k, w, gc, dht, dh0, do, dv_local, dh, dv2, cu_seqlens, chunk_offsets, scale, T,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, NKT: tl.constexpr,
    USE_G: tl.constexpr, USE_DHT: tl.constexpr, STORE_DH0: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_hv = i_nh // HV, i_nh % HV
    i_h = i_hv // (HV // H)
    bos, Tl, boh = _seq_bounds(i_n, cu_seqlens, chunk_offsets, T, BT, IS_VARLEN)
    NT = tl.cdiv(Tl, BT)
    dt = k.dtype.element_ty
    o_v = i_v * BV + tl.arange(0, BV)
    m_v = o_v < V
    o_kk = tl.arange(0, BK)
    b_h1 = tl.zeros([BK, BV], dtype=tl.float32)
    b_h2 = tl.zeros([BK, BV], dtype=tl.float32)
    b_h3 = tl.zeros([BK, BV], dtype=tl.float32)
    b_h4 = tl.zeros([BK, BV], dtype=tl.float32)
    p_s = i_nh.to(tl.int64) * K * V + o_v[None, :]
    if USE_DHT:
        b_h1 += tl.load(dht + p_s + o_kk[:, None] * V, mask=(o_kk < K)[:, None] & m_v[None, :], other=0.0).to(tl.float32)
        if NKT > 1:
            b_h2 += tl.load(dht + p_s + (BK + o_kk)[:, None] * V, mask=((BK + o_kk) < K)[:, None] & m_v[None, :], other=0.0).to(tl.float32)
        if NKT > 2:
            b_h3 += tl.load(dht + p_s + (2 * BK + o_kk)[:, None] * V, mask=((2 * BK + o_kk) < K)[:, None] & m_v[None, :], other=0.0).to(tl.float32)
        if NKT > 3:
            b_h4 += tl.load(dht + p_s + (3 * BK + o_kk)[:, None] * V, mask=((3 * BK + o_kk) < K)[:, None] & m_v[None, :], other=0.0).to(tl.float32)
    for i_c in range(NT - 1, -1, -1):
        o_t = i_c * BT + tl.arange(0, BT)
        m_t = o_t < Tl
        o_r = (bos + o_t).to(tl.int64)
        p_h = dh + ((boh + i_c) * HV + i_hv) * K * V + o_v[None, :]
        tl.store(p_h + o_kk[:, None] * V, b_h1.to(dh.dtype.element_ty), mask=(o_kk < K)[:, None] & m_v[None, :])
        if NKT > 1:
            tl.store(p_h + (BK + o_kk)[:, None] * V, b_h2.to(dh.dtype.element_ty), mask=((BK + o_kk) < K)[:, None] & m_v[None, :])
        if NKT > 2:
            tl.store(p_h + (2 * BK + o_kk)[:, None] * V, b_h3.to(dh.dtype.element_ty), mask=((2 * BK + o_kk) < K)[:, None] & m_v[None, :])
        if NKT > 3:
            tl.store(p_h + (3 * BK + o_kk)[:, None] * V, b_h4.to(dh.dtype.element_ty), mask=((3 * BK + o_kk) < K)[:, None] & m_v[None, :])
        if USE_G:
            last = tl.minimum((i_c + 1) * BT, Tl) - 1
            b_gl = tl.load(gc + (bos + last) * HV + i_hv).to(tl.float32)
            b_g = tl.load(gc + o_r * HV + i_hv, mask=m_t, other=0.0).to(tl.float32)
            b_kd = tl.where(m_t, tl.exp(b_gl - b_g), 0.0)
            b_qs = tl.where(m_t, tl.exp(b_g), 0.0) * scale
            b_egl = tl.exp(b_gl)
        else:
            b_kd = tl.where(m_t, 1.0, 0.0)
            b_qs = b_kd * scale
            b_egl = 1.0
        p_v = (o_r[:, None] * HV + i_hv) * V + o_v[None, :]
        m_tv = m_t[:, None] & m_v[None, :]
        b_dv = tl.load(dv_local + p_v, mask=m_tv, other=0.0).to(tl.float32)
        p_k = k + (o_r[:, None] * H + i_h) * K + o_kk[None, :]
        b_k = tl.load(p_k, mask=m_t[:, None] & (o_kk < K)[None, :], other=0.0).to(tl.float32)
        b_dv += tl.dot((b_k * b_kd[:, None]).to(dt), b_h1.to(dt))
        if NKT > 1:
            b_k = tl.load(p_k + BK, mask=m_t[:, None] & ((BK + o_kk) < K)[None, :], other=0.0).to(tl.float32)
            b_dv += tl.dot((b_k * b_kd[:, None]).to(dt), b_h2.to(dt))
        if NKT > 2:
            b_k = tl.load(p_k + 2 * BK, mask=m_t[:, None] & ((2 * BK + o_kk) < K)[None, :], other=0.0).to(tl.float32)
            b_dv += tl.dot((b_k * b_kd[:, None]).to(dt), b_h3.to(dt))
        if NKT > 3:
            b_k = tl.load(p_k + 3 * BK, mask=m_t[:, None] & ((3 * BK + o_kk) < K)[None, :], other=0.0).to(tl.float32)
            b_dv += tl.dot((b_k * b_kd[:, None]).to(dt), b_h4.to(dt))
        tl.store(dv2 + p_v, b_dv.to(dv2.dtype.element_ty), mask=m_tv)
        b_do = tl.load(do + p_v, mask=m_tv, other=0.0).to(dt)
        b_dvd = b_dv.to(dt)
        b_h1 = _bwd_dh_tile(b_h1, q, k, w, o_r, m_t, i_h, i_hv, b_do, b_dvd, b_qs, b_egl, 0, H, HV, K, BK)
        if NKT > 1:
            b_h2 = _bwd_dh_tile(b_h2, q, k, w, o_r, m_t, i_h, i_hv, b_do, b_dvd, b_qs, b_egl, BK, H, HV, K, BK)
        if NKT > 2:
            b_h3 = _bwd_dh_tile(b_h3, q, k, w, o_r, m_t, i_h, i_hv, b_do, b_dvd, b_qs, b_egl, 2 * BK, H, HV, K, BK)
        if NKT > 3:
            b_h4 = _bwd_dh_tile(b_h4, q, k, w, o_r, m_t, i_h, i_hv, b_do, b_dvd, b_qs, b_egl, 3 * BK, H, HV, K, BK)
    if STORE_DH0:
        tl.store(dh0 + p_s + o_kk[:, None] * V, b_h1, mask=(o_kk < K)[:, None] & m_v[None, :])
        if NKT > 1:
            tl.store(dh0 + p_s + (BK + o_kk)[:, None] * V, b_h2, mask=((BK + o_kk) < K)[:, None] & m_v[None, :])
        if NKT > 2:
            tl.store(dh0 + p_s + (2 * BK + o_kk)[:, None] * V, b_h3, mask=((2 * BK + o_kk) < K)[:, None] & m_v[None, :])
        if NKT > 3:
            tl.store(dh0 + p_s + (3 * BK + o_kk)[:, None] * V, b_h4, mask=((3 * BK + o_kk) < K)[:, None] & m_v[None, :])


def _state_blocks(K: int, V: int):
    BK = _bk(K)
    NKT = triton.cdiv(K, BK)
    # [K, BV] fp32 state slab in registers: 64x64 for K <= 64, 4 tiles of 64x32 at K = 256
    BV = 64 if NKT == 1 else 32
    return BK, NKT, BV


def _fwd_value_block(K: int, V: int, n_seq_heads: int, device) -> int:
    """BV of the forward walk. At K = 128, 64-wide slabs are faster once they alone give (nearly) every
    SM a program (H100, 128 programs: 0.146 vs 0.172 ms at 4x4096x16 heads); with fewer programs the walk's latency
    dominates and 32-wide slabs double the parallelism (1x16384x16: 0.275 vs 0.378 ms)."""
    BK, NKT, BV = _state_blocks(K, V)
    if FWD_H_LAUNCH["BV"]:
        return FWD_H_LAUNCH["BV"]
    if NKT == 2 and n_seq_heads * triton.cdiv(V, 64) >= 0.75 * sm_count(device):
        return 64
    return BV


# launch settings in one place so scripts/gpu_delta_tune.py can sweep them (BV None: _fwd_value_block).
# Three stages keep the next chunk's w, u, k (and q) loads in flight behind the current chunk's
# products: 1.2-1.7x faster walks than two stages on the H100 (scripts/gpu_delta_tune.py).
FWD_H_LAUNCH = dict(num_warps=4, num_stages=3, BV=None)


def fused_output_fits(K: int) -> bool:
    """The walk with the outputs fused in holds q, k, w tiles for every 64 rows of K: beyond two tiles
    (K > 128) its pipelined loads exceed the H100's shared memory, so the outputs run separately."""
    return triton.cdiv(K, _bk(K)) <= 2


def fwd_h(k, w, u, gc, h0, output_final_state, cu_seqlens, chunk_offsets, N, NT, q=None, scale=1.0,
          store_h=True):
    """The forward state walk. Returns h [B, NT, HV, K, V] (chunk-start states, k.dtype), v_new
    [B,T,HV,V], ht [N,HV,K,V] fp32 or None, and o (when q is given: the outputs, fused into the walk).

    store_h=False (only with q) skips h and v_new, which only the backward reads."""
    B, T, H, K = k.shape
    HV, V = u.shape[2], u.shape[3]
    BK, NKT, _ = _state_blocks(K, V)
    BV = _fwd_value_block(K, V, N * HV, k.device)
    if q is None and not store_h:
        raise ValueError("store_h=False needs q (the walk would produce nothing)")
    h = torch.empty(B, NT, HV, K, V, device=k.device, dtype=k.dtype) if store_h else None
    v_new = torch.empty_like(u) if store_h else None
    o = torch.empty_like(u) if q is not None else None
    ht = torch.empty(N, HV, K, V, device=k.device, dtype=torch.float32) if output_final_state else None
    grid = (triton.cdiv(V, BV), N * HV)
    delta_fwd_h_kernel[grid](
        q, k, w, u, gc, h, v_new, o, h0, ht, cu_seqlens, chunk_offsets, scale, T,
        H=H, HV=HV, K=K, V=V, BT=BT, BK=BK, BV=BV, NKT=NKT, USE_G=gc is not None,
        USE_H0=h0 is not None, STORE_HT=ht is not None, IS_VARLEN=cu_seqlens is not None,
        STORE_H=store_h, FUSE_O=q is not None,
        num_warps=FWD_H_LAUNCH["num_warps"], num_stages=FWD_H_LAUNCH["num_stages"])
    if q is not None:
        return h, v_new, ht, o
    return h, v_new, ht


BWD_DH_LAUNCH = dict(num_warps=4, num_stages=2, BV=None)  # swept by scripts/gpu_delta_tune.py


def bwd_dh(q, k, w, gc, h0, dht, do, dv_local, scale, cu_seqlens, chunk_offsets, N, NT):
    """dh [B,NT,HV,K,V] (grad of each chunk's end state), dh0 [N,HV,K,V] fp32 or None, dv2 = dU'."""
    B, T, H, K = k.shape
    HV, V = do.shape[2], do.shape[3]
    BK, NKT, BV = _state_blocks(K, V)
    BV = BWD_DH_LAUNCH["BV"] or BV
    dh = torch.empty(B, NT, HV, K, V, device=k.device, dtype=k.dtype)
    dh0 = torch.empty(N, HV, K, V, device=k.device, dtype=torch.float32) if h0 is not None else None
    dv2 = torch.empty_like(dv_local)
    grid = (triton.cdiv(V, BV), N * HV)
    delta_bwd_dh_kernel[grid](
        q, k, w, gc, dht, dh0, do, dv_local, dh, dv2, cu_seqlens, chunk_offsets, scale, T,
        H=H, HV=HV, K=K, V=V, BT=BT, BK=BK, BV=BV, NKT=NKT, USE_G=gc is not None,
        USE_DHT=dht is not None, STORE_DH0=dh0 is not None, IS_VARLEN=cu_seqlens is not None,
        num_warps=BWD_DH_LAUNCH["num_warps"], num_stages=BWD_DH_LAUNCH["num_stages"])
    return dh, dh0, dv2
