"""WY / UT representation of one chunk of the (gated) delta rule, forward and backward.

Inside a chunk of C = 64 tokens with chunk-local cumulative log-decays gc (gc = 0 when ungated) and
Gamma_ij = exp(gc_i - gc_j) (i >= j, always <= 1), the delta rule's corrected values solve

    (I + L) U' = diag(beta) V - diag(beta * exp(gc)) K S0,   L = tril(diag(beta) (K K^T) * Gamma, -1)

so with A = (I + L)^{-1} (the "UT transform"):  U' = u - w S0,  u = A diag(beta) V,
w = A diag(beta * exp(gc)) K.  (Comba: the left factor of L and of w is the erase key p, and the row
decay is gcl = gc - g because the erase reads the state before token i's decay.)

Forward: delta_wy_fwd_kernel, grid (chunks, B*HV), one program per chunk and value head. The chunk is
four row blocks of 16; every 16x16 block of L and A lives in registers from start to end:
  1. the ten lower blocks L_ij (i >= j) = diag(beta_i) (P_i K_j^T) * Gamma_ij, one tl.dot each per
     64-wide K slice (strict lower part on the diagonal blocks, rows past the sequence end zero);
  2. the four diagonal inverses X_dd = (I + L_dd)^{-1}, the four blocks advancing together, by
     forward substitution row by row (row i of L taken out of the register tile with a masked
     reduction), or with DIAG_REC by recursive 2x2 block substitution (1 -> 2 -> 4 -> 8 -> 16) with
     exact-fp32 16x16 products: 3 dependent product pairs instead of 14 dependent reduction steps,
     traded for more FMA work (A/B only: the GPU comparison keeps one of the two);
  3. the off-diagonal blocks by block forward substitution, exact fp32 (input_precision="ieee"):
     X21 = -X22 (L21 X11), X43 = -X44 (L43 X33), then the lower-left 32x32 block
     -X_bot (L_c X_top) as 16x16 products;
  4. A = X stored once, in k's dtype (the backward casts it to k's dtype on load, so nothing is lost),
     and u_i = sum_{j<=i} X_ij (beta_j v_j), w_i = sum_{j<=i} X_ij (beta_j e^{gcl_j} k_j) block row by
     block row (operands in k's dtype, fp32 accumulation), the V and K slices in one loop.

Why (H100, bf16, 4x4096x16x128): the previous version (A/B section below) took 0.295 ms against a
memory floor of ~0.11-0.13 ms, i.e. it was latency bound: L was written to a global fp32 buffer, the
diagonal solve re-read one row of L per step from global memory (14 dependent store->load round trips
through L2 per program), A was written back and re-read as a 64x64 fp32 tile for w and u, with CTA
barriers in between. Here nothing is re-read: the only global traffic is k (and p) once for L, v and
k (L2-hot) once for w and u, and w, u, A written once. A in bf16 halves its bytes (67 -> 34 MB at
that shape, ~11 us of DRAM time). What is left on the dependent path of a program is register/shared
work (masked reductions, 16x16 products and their layout conversions), a few hundred cycles per step
instead of an L2 round trip; the V and K slices of w/u share one loop, so their loads are in flight
together (half the dependent DRAM round trips of two loops).

Expected: 0.295 -> ~0.15-0.19 ms for this kernel (not yet measured; scripts/gpu_wy_bench.py is the
A/B: it times both kernels and the whole forward and compares w, u, A between them).

Numerics: every variant is forward substitution, by rows or by blocks (X21 = -X22 L21 X11 is how a
2x2 block lower-triangular system is substituted; the previous kernel used it above the 16x16
level too); nothing forms powers of L (the Neumann/doubling product blows up when |L| entries are
~1, e.g. beta ~ 1 with correlated keys). The products that build A are exact fp32; only the w/u
products use the input dtype (as the backward does).

Backward: delta_wy_bwd_kernel (chunk-parallel) gives dk, dv, dbeta, dgc given dw, du (+ dk from the
output part). With dA = du (beta V)^T + dw (beta e^gc K)^T and dL = -A^T dA A^T:
  dv     = beta * (A^T du)
  dk    += beta e^gc (A^T dw) + P K + P^T K,          P = dL * beta_i * Gamma_ij (strict lower)
  dbeta  = rowsum(V * A^T du) + e^gc rowsum(K * A^T dw) + rowsum(dL * KK^T * Gamma)
  dgc    = beta e^gc rowsum(K * A^T dw) + rowsum(dL * L) - colsum(dL * L)
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

BT = 64  # chunk size (fixed: the forward is written for 4 blocks of 16)
BC = 16


@triton.jit
def _chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, IS_VARLEN: tl.constexpr):
    """(bos, seq_len, chunk index within the sequence) for program chunk i_t of batch i_b."""
    if IS_VARLEN:
        i_n = tl.load(chunk_indices + i_t * 2).to(tl.int64)
        i_c = tl.load(chunk_indices + i_t * 2 + 1).to(tl.int64)
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        seq_len = tl.load(cu_seqlens + i_n + 1).to(tl.int64) - bos
    else:
        i_c = i_t.to(tl.int64)
        bos = i_b.to(tl.int64) * T
        seq_len = (i_b * 0 + T).to(tl.int64)
    return bos, seq_len, i_c


@triton.jit
def _mm(a, b):
    # exact fp32 products: the triangular solve must not run in tf32
    return tl.dot(a, b, input_precision="ieee")


# ----------------------------------------------------------------------------------------------
# forward: L, A = (I + L)^{-1}, w, u with every 16x16 block in registers
# ----------------------------------------------------------------------------------------------

@triton.jit
def _rows(x, bos, t0, Tl, NH: tl.constexpr, i_h, D: tl.constexpr, o_d, BC: tl.constexpr):
    """x[bos + t0 + (0..BC-1), i_h, o_d] of a [B*T, NH, D] tensor as a [BC, len(o_d)] tile (zero past
    the sequence end and past D)."""
    o_t = t0 + tl.arange(0, BC)
    m = (o_t < Tl)[:, None] & (o_d < D)[None, :]
    return tl.load(x + ((bos + o_t)[:, None] * NH + i_h) * D + o_d[None, :], mask=m, other=0.0)


@triton.jit
def _put_rows(x, bos, t0, Tl, NH: tl.constexpr, i_h, D: tl.constexpr, o_d, BC: tl.constexpr, b):
    """Store b into the rows/columns that _rows reads (cast to x's dtype)."""
    o_t = t0 + tl.arange(0, BC)
    m = (o_t < Tl)[:, None] & (o_d < D)[None, :]
    tl.store(x + ((bos + o_t)[:, None] * NH + i_h) * D + o_d[None, :], b.to(x.dtype.element_ty), mask=m)


@triton.jit
def _vec(x, bos, t0, Tl, NH: tl.constexpr, i_h, BC: tl.constexpr):
    """x[bos + t0 + (0..BC-1), i_h] in fp32 (zero past the sequence end)."""
    o_t = t0 + tl.arange(0, BC)
    return tl.load(x + (bos + o_t) * NH + i_h, mask=o_t < Tl, other=0.0).to(tl.float32)


@triton.jit
def _gate_blk(b_pk, b_beta_i, b_gl_i, b_g_j, m_i, DIAG: tl.constexpr, USE_G: tl.constexpr, BC: tl.constexpr):
    """Block L_ij = diag(beta_i) (P_i K_j^T) * exp(gcl_i - gc_j): strict lower on a diagonal block
    (every entry of an off-diagonal block i > j is below the diagonal); rows past the end zero.
    The exponent is masked first: on masked entries it can be positive and overflow."""
    o_i = tl.arange(0, BC)
    m = m_i[:, None] & (o_i >= 0)[None, :]
    if DIAG:
        m = m & (o_i[:, None] > o_i[None, :])
    b = b_pk * b_beta_i[:, None]
    if USE_G:
        b = b * tl.exp(tl.where(m, b_gl_i[:, None] - b_g_j[None, :], 0.0))
    return tl.where(m, b, 0.0)


@triton.jit
def _inv_subst(L1, L2, L3, L4, BC: tl.constexpr):
    """(I + L_d)^{-1} of four strict-lower 16x16 blocks by forward substitution, row by row:
    X_i = -L_i - sum_{j<i} L_ij X_j. X starts as -L (rows not yet reached hold -L_i, which is the
    first term of their update); row i of L is taken out of the register tile with a masked
    reduction (independent of X, so off the dependent path). Four independent chains per step."""
    o_i = tl.arange(0, BC)
    X1, X2, X3, X4 = -L1, -L2, -L3, -L4
    for i in tl.static_range(2, BC):  # rows 0 and 1 are final already
        sel = o_i[:, None] == i
        l1 = -tl.sum(tl.where(sel, L1, 0.0), 0)
        l2 = -tl.sum(tl.where(sel, L2, 0.0), 0)
        l3 = -tl.sum(tl.where(sel, L3, 0.0), 0)
        l4 = -tl.sum(tl.where(sel, L4, 0.0), 0)
        l1 = l1 + tl.sum(l1[:, None] * X1, 0)
        l2 = l2 + tl.sum(l2[:, None] * X2, 0)
        l3 = l3 + tl.sum(l3[:, None] * X3, 0)
        l4 = l4 + tl.sum(l4[:, None] * X4, 0)
        X1 = tl.where(sel, l1[None, :], X1)
        X2 = tl.where(sel, l2[None, :], X2)
        X3 = tl.where(sel, l3[None, :], X3)
        X4 = tl.where(sel, l4[None, :], X4)
    eye = (o_i[:, None] == o_i[None, :]).to(tl.float32)
    return X1 + eye, X2 + eye, X3 + eye, X4 + eye


# A/B only (FLACTL_WY_FWD=rec): after the GPU comparison keep either _inv_subst or _inv_rec + _rec_level,
# and drop DIAG_REC.
@triton.jit
def _rec_level(X, L, S: tl.constexpr, BC: tl.constexpr):
    """One level of recursive block substitution: X holds the inverses of the diagonal SxS blocks;
    returns those of the 2Sx2S blocks, [[Xa, 0], [-Xb E Xa, Xb]] with E = L's lower-left SxS part."""
    o_i = tl.arange(0, BC)
    m = ((o_i[:, None] // (2 * S)) == (o_i[None, :] // (2 * S))) & ((o_i[:, None] // S) != (o_i[None, :] // S))
    return X - _mm(X, _mm(tl.where(m, L, 0.0), X))


@triton.jit
def _inv_rec(L1, L2, L3, L4, BC: tl.constexpr):
    """(I + L_d)^{-1} of four strict-lower 16x16 blocks by recursive 2x2 block substitution
    (sizes 1 -> 2 -> 4 -> 8 -> 16; exact-fp32 products; the four blocks interleaved)."""
    o_i = tl.arange(0, BC)
    eye = (o_i[:, None] == o_i[None, :]).to(tl.float32)
    m2 = (o_i[:, None] // 2) == (o_i[None, :] // 2)  # the 2x2 level needs no product
    X1 = eye - tl.where(m2, L1, 0.0)
    X2 = eye - tl.where(m2, L2, 0.0)
    X3 = eye - tl.where(m2, L3, 0.0)
    X4 = eye - tl.where(m2, L4, 0.0)
    for lvl in tl.static_range(1, 4):
        X1 = _rec_level(X1, L1, 1 << lvl, BC)
        X2 = _rec_level(X2, L2, 1 << lvl, BC)
        X3 = _rec_level(X3, L3, 1 << lvl, BC)
        X4 = _rec_level(X4, L4, 1 << lvl, BC)
    return X1, X2, X3, X4


@triton.jit
def _wu_slice(x, NX: tl.constexpr, i_x, D: tl.constexpr, o_d, out, HV: tl.constexpr, i_hv, bos, t1, Tl,
              s1, s2, s3, s4, A11, A21, A22, A31, A32, A33, A41, A42, A43, A44, BC: tl.constexpr):
    """One column slice of out = A diag(s) x, block row by block row (operands in A's dtype, fp32
    accumulation). x is [B*T, NX, D] (head i_x), out is [B*T, HV, D] (head i_hv)."""
    dt = A11.dtype
    y1 = (_rows(x, bos, t1, Tl, NX, i_x, D, o_d, BC).to(tl.float32) * s1[:, None]).to(dt)
    y2 = (_rows(x, bos, t1 + BC, Tl, NX, i_x, D, o_d, BC).to(tl.float32) * s2[:, None]).to(dt)
    y3 = (_rows(x, bos, t1 + 2 * BC, Tl, NX, i_x, D, o_d, BC).to(tl.float32) * s3[:, None]).to(dt)
    y4 = (_rows(x, bos, t1 + 3 * BC, Tl, NX, i_x, D, o_d, BC).to(tl.float32) * s4[:, None]).to(dt)
    _put_rows(out, bos, t1, Tl, HV, i_hv, D, o_d, BC, tl.dot(A11, y1))
    _put_rows(out, bos, t1 + BC, Tl, HV, i_hv, D, o_d, BC, tl.dot(A22, y2, tl.dot(A21, y1)))
    _put_rows(out, bos, t1 + 2 * BC, Tl, HV, i_hv, D, o_d, BC,
              tl.dot(A33, y3, tl.dot(A32, y2, tl.dot(A31, y1))))
    _put_rows(out, bos, t1 + 3 * BC, Tl, HV, i_hv, D, o_d, BC,
              tl.dot(A44, y4, tl.dot(A43, y3, tl.dot(A42, y2, tl.dot(A41, y1)))))


@triton.jit
def delta_wy_fwd_kernel(
    k, p, v, beta, gc, graw, A, w, u, cu_seqlens, chunk_indices, T,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_G: tl.constexpr, USE_P: tl.constexpr, IS_VARLEN: tl.constexpr, DIAG_REC: tl.constexpr,
):
    """L blocks -> A = (I + L)^{-1} blocks -> A stored, w, u; all in registers (see module docstring)."""
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_hv = i_bh // HV, i_bh % HV
    i_h = i_hv // (HV // H)
    bos, Tl, i_c = _chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, IS_VARLEN)
    t1 = i_c * BT  # first token of each row block, within the sequence
    t2 = t1 + BC
    t3 = t1 + 2 * BC
    t4 = t1 + 3 * BC

    # 1. the ten lower blocks of P K^T (P = K unless USE_P)
    L11 = tl.zeros([BC, BC], dtype=tl.float32)
    L21 = tl.zeros([BC, BC], dtype=tl.float32)
    L22 = tl.zeros([BC, BC], dtype=tl.float32)
    L31 = tl.zeros([BC, BC], dtype=tl.float32)
    L32 = tl.zeros([BC, BC], dtype=tl.float32)
    L33 = tl.zeros([BC, BC], dtype=tl.float32)
    L41 = tl.zeros([BC, BC], dtype=tl.float32)
    L42 = tl.zeros([BC, BC], dtype=tl.float32)
    L43 = tl.zeros([BC, BC], dtype=tl.float32)
    L44 = tl.zeros([BC, BC], dtype=tl.float32)
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        k1 = _rows(k, bos, t1, Tl, H, i_h, K, o_k, BC)
        k2 = _rows(k, bos, t2, Tl, H, i_h, K, o_k, BC)
        k3 = _rows(k, bos, t3, Tl, H, i_h, K, o_k, BC)
        k4 = _rows(k, bos, t4, Tl, H, i_h, K, o_k, BC)
        if USE_P:
            e1 = _rows(p, bos, t1, Tl, H, i_h, K, o_k, BC)
            e2 = _rows(p, bos, t2, Tl, H, i_h, K, o_k, BC)
            e3 = _rows(p, bos, t3, Tl, H, i_h, K, o_k, BC)
            e4 = _rows(p, bos, t4, Tl, H, i_h, K, o_k, BC)
        else:
            e1, e2, e3, e4 = k1, k2, k3, k4
        k1t = tl.trans(k1)
        k2t = tl.trans(k2)
        k3t = tl.trans(k3)
        k4t = tl.trans(k4)
        L11 += tl.dot(e1, k1t)
        L21 += tl.dot(e2, k1t)
        L22 += tl.dot(e2, k2t)
        L31 += tl.dot(e3, k1t)
        L32 += tl.dot(e3, k2t)
        L33 += tl.dot(e3, k3t)
        L41 += tl.dot(e4, k1t)
        L42 += tl.dot(e4, k2t)
        L43 += tl.dot(e4, k3t)
        L44 += tl.dot(e4, k4t)

    # row scales and decays
    o_c = tl.arange(0, BC)
    m1 = (t1 + o_c) < Tl
    m2 = (t2 + o_c) < Tl
    m3 = (t3 + o_c) < Tl
    m4 = (t4 + o_c) < Tl
    b1 = _vec(beta, bos, t1, Tl, HV, i_hv, BC)
    b2 = _vec(beta, bos, t2, Tl, HV, i_hv, BC)
    b3 = _vec(beta, bos, t3, Tl, HV, i_hv, BC)
    b4 = _vec(beta, bos, t4, Tl, HV, i_hv, BC)
    if USE_G:
        g1 = _vec(gc, bos, t1, Tl, HV, i_hv, BC)
        g2 = _vec(gc, bos, t2, Tl, HV, i_hv, BC)
        g3 = _vec(gc, bos, t3, Tl, HV, i_hv, BC)
        g4 = _vec(gc, bos, t4, Tl, HV, i_hv, BC)
        if USE_P:  # row decay gcl = gc - g
            l1 = g1 - _vec(graw, bos, t1, Tl, HV, i_hv, BC)
            l2 = g2 - _vec(graw, bos, t2, Tl, HV, i_hv, BC)
            l3 = g3 - _vec(graw, bos, t3, Tl, HV, i_hv, BC)
            l4 = g4 - _vec(graw, bos, t4, Tl, HV, i_hv, BC)
        else:
            l1, l2, l3, l4 = g1, g2, g3, g4
        s1, s2, s3, s4 = b1 * tl.exp(l1), b2 * tl.exp(l2), b3 * tl.exp(l3), b4 * tl.exp(l4)
    else:
        g1, g2, g3, g4 = b1, b2, b3, b4  # unused
        l1, l2, l3, l4 = b1, b2, b3, b4  # unused
        s1, s2, s3, s4 = b1, b2, b3, b4
    L11 = _gate_blk(L11, b1, l1, g1, m1, True, USE_G, BC)
    L21 = _gate_blk(L21, b2, l2, g1, m2, False, USE_G, BC)
    L22 = _gate_blk(L22, b2, l2, g2, m2, True, USE_G, BC)
    L31 = _gate_blk(L31, b3, l3, g1, m3, False, USE_G, BC)
    L32 = _gate_blk(L32, b3, l3, g2, m3, False, USE_G, BC)
    L33 = _gate_blk(L33, b3, l3, g3, m3, True, USE_G, BC)
    L41 = _gate_blk(L41, b4, l4, g1, m4, False, USE_G, BC)
    L42 = _gate_blk(L42, b4, l4, g2, m4, False, USE_G, BC)
    L43 = _gate_blk(L43, b4, l4, g3, m4, False, USE_G, BC)
    L44 = _gate_blk(L44, b4, l4, g4, m4, True, USE_G, BC)

    # 2. diagonal blocks (A/B only: DIAG_REC picks the variant; keep the faster one)
    if DIAG_REC:
        X11, X22, X33, X44 = _inv_rec(L11, L22, L33, L44, BC)
    else:
        X11, X22, X33, X44 = _inv_subst(L11, L22, L33, L44, BC)
    # 3. off-diagonal blocks: 16-level pairs, then the lower-left 32x32 block -X_bot (L_c X_top)
    X21 = -_mm(X22, _mm(L21, X11))
    X43 = -_mm(X44, _mm(L43, X33))
    T11 = _mm(L31, X11) + _mm(L32, X21)
    T12 = _mm(L32, X22)
    T21 = _mm(L41, X11) + _mm(L42, X21)
    T22 = _mm(L42, X22)
    X31 = -_mm(X33, T11)
    X32 = -_mm(X33, T12)
    X41 = -(_mm(X43, T11) + _mm(X44, T21))
    X42 = -(_mm(X43, T12) + _mm(X44, T22))

    # 4. A stored once (upper blocks as zeros), then w and u from the register blocks
    o_a = tl.arange(0, BC)
    _put_rows(A, bos, t1, Tl, HV, i_hv, BT, o_a, BC, X11)
    _put_rows(A, bos, t2, Tl, HV, i_hv, BT, o_a, BC, X21)
    _put_rows(A, bos, t2, Tl, HV, i_hv, BT, o_a + BC, BC, X22)
    _put_rows(A, bos, t3, Tl, HV, i_hv, BT, o_a, BC, X31)
    _put_rows(A, bos, t3, Tl, HV, i_hv, BT, o_a + BC, BC, X32)
    _put_rows(A, bos, t3, Tl, HV, i_hv, BT, o_a + 2 * BC, BC, X33)
    _put_rows(A, bos, t4, Tl, HV, i_hv, BT, o_a, BC, X41)
    _put_rows(A, bos, t4, Tl, HV, i_hv, BT, o_a + BC, BC, X42)
    _put_rows(A, bos, t4, Tl, HV, i_hv, BT, o_a + 2 * BC, BC, X43)
    _put_rows(A, bos, t4, Tl, HV, i_hv, BT, o_a + 3 * BC, BC, X44)
    o_z = tl.arange(0, BT)
    Z = tl.zeros([BC, BT], dtype=tl.float32)
    _put_rows(A, bos, t1, Tl, HV, i_hv, BT, tl.where(o_z >= BC, o_z, BT), BC, Z)
    _put_rows(A, bos, t2, Tl, HV, i_hv, BT, tl.where(o_z >= 2 * BC, o_z, BT), BC, Z)
    _put_rows(A, bos, t3, Tl, HV, i_hv, BT, tl.where(o_z >= 3 * BC, o_z, BT), BC, Z)

    dt = k.dtype.element_ty
    A11, A21, A22 = X11.to(dt), X21.to(dt), X22.to(dt)
    A31, A32, A33 = X31.to(dt), X32.to(dt), X33.to(dt)
    A41, A42, A43, A44 = X41.to(dt), X42.to(dt), X43.to(dt), X44.to(dt)
    if USE_P:  # w is built from the erase key
        kw = p
    else:
        kw = k
    NV = (V + BV - 1) // BV
    NK = (K + BK - 1) // BK
    if NV == NK:  # one loop over the V and K slices: the loads of both are in flight together
        for i_d in range(NV):
            _wu_slice(v, HV, i_hv, V, i_d * BV + tl.arange(0, BV), u, HV, i_hv, bos, t1, Tl,
                      b1, b2, b3, b4, A11, A21, A22, A31, A32, A33, A41, A42, A43, A44, BC)
            _wu_slice(kw, H, i_h, K, i_d * BK + tl.arange(0, BK), w, HV, i_hv, bos, t1, Tl,
                      s1, s2, s3, s4, A11, A21, A22, A31, A32, A33, A41, A42, A43, A44, BC)
    else:
        for i_v in range(NV):
            _wu_slice(v, HV, i_hv, V, i_v * BV + tl.arange(0, BV), u, HV, i_hv, bos, t1, Tl,
                      b1, b2, b3, b4, A11, A21, A22, A31, A32, A33, A41, A42, A43, A44, BC)
        for i_k in range(NK):
            _wu_slice(kw, H, i_h, K, i_k * BK + tl.arange(0, BK), w, HV, i_hv, bos, t1, Tl,
                      s1, s2, s3, s4, A11, A21, A22, A31, A32, A33, A41, A42, A43, A44, BC)


# ----------------------------------------------------------------------------------------------
# backward
# ----------------------------------------------------------------------------------------------

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
        b_kk += tl.dot(b_e, tl.trans(b_k))
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


# ----------------------------------------------------------------------------------------------
# A/B only: remove after the GPU comparison.
# The previous forward (selected by FLACTL_WY_FWD=old in wy_fwd): L is written to the fp32 A buffer,
# solved in place (rows of L re-read from global memory step by step), then A re-read for w and u.
# Everything from here to the end of this section, plus _wy_fwd_old below, goes with it.
# ----------------------------------------------------------------------------------------------

@triton.jit
def _kkt_body(
    i_t, i_bh,
    k, p, beta, gc, graw, A, cu_seqlens, chunk_indices, T,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
    USE_G: tl.constexpr, USE_P: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    """L = tril(diag(beta) (P K^T) * exp(gcl_i - gc_j), -1); P = K and gcl = gc unless USE_P (Comba:
    erase key p, and the erase reads the state before token i's decay, so gcl = gc - g)."""
    i_b, i_hv = i_bh // HV, i_bh % HV
    i_h = i_hv // (HV // H)
    bos, Tl, i_c = _chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, IS_VARLEN)
    o_t = i_c * BT + tl.arange(0, BT)
    m_t = o_t < Tl
    o_r = (bos + o_t).to(tl.int64)
    b_kk = tl.zeros([BT, BT], dtype=tl.float32)
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m_k = o_k < K
        b_k = tl.load(k + (o_r[:, None] * H + i_h) * K + o_k[None, :], mask=m_t[:, None] & m_k[None, :], other=0.0)
        if USE_P:
            b_p = tl.load(p + (o_r[:, None] * H + i_h) * K + o_k[None, :], mask=m_t[:, None] & m_k[None, :], other=0.0)
            b_kk += tl.dot(b_p, tl.trans(b_k))
        else:
            b_kk += tl.dot(b_k, tl.trans(b_k))
    b_beta = tl.load(beta + o_r * HV + i_hv, mask=m_t, other=0.0).to(tl.float32)
    b_L = b_kk * b_beta[:, None]
    m_L = (o_t[:, None] > o_t[None, :]) & m_t[:, None]
    if USE_G:
        b_g = tl.load(gc + o_r * HV + i_hv, mask=m_t, other=0.0).to(tl.float32)
        b_gl = b_g
        if USE_P:
            b_gl = b_g - tl.load(graw + o_r * HV + i_hv, mask=m_t, other=0.0).to(tl.float32)
        b_L = b_L * tl.exp(tl.where(m_L, b_gl[:, None] - b_g[None, :], 0.0))
    b_L = tl.where(m_L, b_L, 0.0)
    o_j = tl.arange(0, BT)
    tl.store(A + (o_r[:, None] * HV + i_hv) * BT + o_j[None, :], b_L, mask=m_t[:, None])


@triton.jit
def _diag_row(A, o_r, o_i, i_hv, HV: tl.constexpr, BT: tl.constexpr, r0, i, o_t0, Tl):
    """-L[r0 + i, r0 : r0 + 16] (zero past the sequence end)."""
    m_i = (o_i * 0 + o_t0 + r0 + i) < Tl  # vector mask (the interpreter rejects scalar masks)
    return -tl.load(A + ((o_r + r0 + i) * HV + i_hv) * BT + r0 + o_i, mask=m_i, other=0.0)


@triton.jit
def _inv_diag_blocks(A, o_r, i_hv, HV: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, Tl, o_t0):
    """(I + L_dd)^{-1} of the four 16x16 diagonal blocks, by forward substitution row by row:
    X_i = -L_i - sum_{j<i} L_ij X_j (rows of L re-read from memory, no register shuffles). The four
    blocks are independent and advance together, so four loads/reductions are in flight per step."""
    o_i = tl.arange(0, BC)
    eye = (o_i[:, None] == o_i[None, :]).to(tl.float32)
    X1 = -_load_blk(A, o_r, i_hv, HV, BT, BC, 0, 0, o_t0, Tl)
    X2 = -_load_blk(A, o_r, i_hv, HV, BT, BC, BC, BC, o_t0, Tl)
    X3 = -_load_blk(A, o_r, i_hv, HV, BT, BC, 2 * BC, 2 * BC, o_t0, Tl)
    X4 = -_load_blk(A, o_r, i_hv, HV, BT, BC, 3 * BC, 3 * BC, o_t0, Tl)
    for i in range(2, BC):
        l1 = _diag_row(A, o_r, o_i, i_hv, HV, BT, 0, i, o_t0, Tl)
        l2 = _diag_row(A, o_r, o_i, i_hv, HV, BT, BC, i, o_t0, Tl)
        l3 = _diag_row(A, o_r, o_i, i_hv, HV, BT, 2 * BC, i, o_t0, Tl)
        l4 = _diag_row(A, o_r, o_i, i_hv, HV, BT, 3 * BC, i, o_t0, Tl)
        l1 = l1 + tl.sum(l1[:, None] * X1, 0)
        l2 = l2 + tl.sum(l2[:, None] * X2, 0)
        l3 = l3 + tl.sum(l3[:, None] * X3, 0)
        l4 = l4 + tl.sum(l4[:, None] * X4, 0)
        sel = o_i[:, None] == i
        X1 = tl.where(sel, l1[None, :], X1)
        X2 = tl.where(sel, l2[None, :], X2)
        X3 = tl.where(sel, l3[None, :], X3)
        X4 = tl.where(sel, l4[None, :], X4)
    return X1 + eye, X2 + eye, X3 + eye, X4 + eye


@triton.jit
def _load_blk(A, o_r, i_hv, HV: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, r0, c0, o_t0, Tl):
    o_i = tl.arange(0, BC)
    m_r = (o_t0 + r0 + o_i) < Tl
    return tl.load(A + ((o_r + r0 + o_i)[:, None] * HV + i_hv) * BT + c0 + o_i[None, :], mask=m_r[:, None], other=0.0)


@triton.jit
def _store_blk(A, o_r, i_hv, HV: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, r0, c0, o_t0, Tl, b_x):
    o_i = tl.arange(0, BC)
    m_r = (o_t0 + r0 + o_i) < Tl
    tl.store(A + ((o_r + r0 + o_i)[:, None] * HV + i_hv) * BT + c0 + o_i[None, :], b_x, mask=m_r[:, None])


@triton.jit
def _solve_body(
    i_t, i_bh,
    A, cu_seqlens, chunk_indices, T,
    HV: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    """In place: A (holding strict-lower L) <- (I + L)^{-1} for one chunk and value head."""
    i_b, i_hv = i_bh // HV, i_bh % HV
    bos, Tl, i_c = _chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, IS_VARLEN)
    o_t0 = i_c * BT
    o_r = bos + o_t0  # first row of the chunk (int64)
    # all loads happen before any store (the buffer is overwritten in place)
    X11, X22, X33, X44 = _inv_diag_blocks(A, o_r, i_hv, HV, BT, BC, Tl, o_t0)
    L21 = _load_blk(A, o_r, i_hv, HV, BT, BC, BC, 0, o_t0, Tl)
    L31 = _load_blk(A, o_r, i_hv, HV, BT, BC, 2 * BC, 0, o_t0, Tl)
    L32 = _load_blk(A, o_r, i_hv, HV, BT, BC, 2 * BC, BC, o_t0, Tl)
    L41 = _load_blk(A, o_r, i_hv, HV, BT, BC, 3 * BC, 0, o_t0, Tl)
    L42 = _load_blk(A, o_r, i_hv, HV, BT, BC, 3 * BC, BC, o_t0, Tl)
    L43 = _load_blk(A, o_r, i_hv, HV, BT, BC, 3 * BC, 2 * BC, o_t0, Tl)
    tl.debug_barrier()
    X21 = -_mm(X22, _mm(L21, X11))
    X32 = -_mm(X33, _mm(L32, X22))
    X43 = -_mm(X44, _mm(L43, X33))
    X31 = -_mm(X33, _mm(L31, X11) + _mm(L32, X21))
    X42 = -_mm(X44, _mm(L42, X22) + _mm(L43, X32))
    X41 = -_mm(X44, _mm(L41, X11) + _mm(L42, X21) + _mm(L43, X31))
    Z = tl.zeros([BC, BC], dtype=tl.float32)
    _store_blk(A, o_r, i_hv, HV, BT, BC, 0, 0, o_t0, Tl, X11)
    _store_blk(A, o_r, i_hv, HV, BT, BC, 0, BC, o_t0, Tl, Z)
    _store_blk(A, o_r, i_hv, HV, BT, BC, 0, 2 * BC, o_t0, Tl, Z)
    _store_blk(A, o_r, i_hv, HV, BT, BC, 0, 3 * BC, o_t0, Tl, Z)
    _store_blk(A, o_r, i_hv, HV, BT, BC, BC, 0, o_t0, Tl, X21)
    _store_blk(A, o_r, i_hv, HV, BT, BC, BC, BC, o_t0, Tl, X22)
    _store_blk(A, o_r, i_hv, HV, BT, BC, BC, 2 * BC, o_t0, Tl, Z)
    _store_blk(A, o_r, i_hv, HV, BT, BC, BC, 3 * BC, o_t0, Tl, Z)
    _store_blk(A, o_r, i_hv, HV, BT, BC, 2 * BC, 0, o_t0, Tl, X31)
    _store_blk(A, o_r, i_hv, HV, BT, BC, 2 * BC, BC, o_t0, Tl, X32)
    _store_blk(A, o_r, i_hv, HV, BT, BC, 2 * BC, 2 * BC, o_t0, Tl, X33)
    _store_blk(A, o_r, i_hv, HV, BT, BC, 2 * BC, 3 * BC, o_t0, Tl, Z)
    _store_blk(A, o_r, i_hv, HV, BT, BC, 3 * BC, 0, o_t0, Tl, X41)
    _store_blk(A, o_r, i_hv, HV, BT, BC, 3 * BC, BC, o_t0, Tl, X42)
    _store_blk(A, o_r, i_hv, HV, BT, BC, 3 * BC, 2 * BC, o_t0, Tl, X43)
    _store_blk(A, o_r, i_hv, HV, BT, BC, 3 * BC, 3 * BC, o_t0, Tl, X44)


@triton.jit
def _wu_body(
    i_t, i_bh,
    k, v, beta, gc, graw, A, w, u, cu_seqlens, chunk_indices, T,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, USE_G: tl.constexpr, USE_P: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    """u = A diag(beta) V; w = A diag(beta exp(gcl)) K  (k is the erase key P when USE_P)."""
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
def _old_delta_wy_fwd_kernel(
    k, p, v, beta, gc, graw, A, w, u, cu_seqlens, chunk_indices, T,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_G: tl.constexpr, USE_P: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    """A/B only. kkt -> solve -> w, u in one program per (chunk, value head). A round-trips through global
    memory (L1/L2-resident) between the steps: the solve re-reads rows of L, and the w/u products
    need A as one [64, 64] tile; the barriers order those accesses within the CTA."""
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    _kkt_body(i_t, i_bh, k, p, beta, gc, graw, A, cu_seqlens, chunk_indices, T, H, HV, K, BT, BK, USE_G, USE_P,
              IS_VARLEN)
    tl.debug_barrier()
    _solve_body(i_t, i_bh, A, cu_seqlens, chunk_indices, T, HV, BT, BC, IS_VARLEN)
    tl.debug_barrier()
    if USE_P:  # w is built from the erase key
        _wu_body(i_t, i_bh, p, v, beta, gc, graw, A, w, u, cu_seqlens, chunk_indices, T, H, HV, K, V,
                 BT, BK, BV, USE_G, USE_P, IS_VARLEN)
    else:
        _wu_body(i_t, i_bh, k, v, beta, gc, graw, A, w, u, cu_seqlens, chunk_indices, T, H, HV, K, V,
                 BT, BK, BV, USE_G, USE_P, IS_VARLEN)


# ---- end of the A/B-only section -------------------------------------------------------------


def _bk(d: int) -> int:
    """Block width along K or V: always 64 (masked when the head dim is smaller).

    Every configuration verified on the H100 (Triton 3.6, bf16) used 64-wide blocks; the one failing
    GPU case (gated, K=64, V=32 -> a 32-wide V block) produced inf there while the interpreter was
    exact, so narrower blocks are avoided until that is understood (see docs/perf/delta.md).
    """
    return 64


def wy_fwd(k, v, beta, gc, cu_seqlens, chunk_indices, NT, p=None, graw=None):
    """A [B,T,HV,64] (in k's dtype), w [B,T,HV,K], u [B,T,HV,V] for every chunk (NT chunks per batch row).

    A = (I + L)^{-1} per chunk (rows past a sequence end unwritten); the backward reads it in k's dtype.
    p (erase key, [B,T,H,K]) and graw (raw log-decay, to form gcl = gc - g) are given for Comba only.
    """
    # A/B only: remove after the GPU comparison. FLACTL_WY_FWD=old: the previous kernel; =rec: this
    # kernel with the diagonal blocks by recursive block substitution; unset: row substitution.
    mode = os.environ.get("FLACTL_WY_FWD", "")
    if mode == "old":  # A/B only: remove after the GPU comparison
        return _wy_fwd_old(k, v, beta, gc, cu_seqlens, chunk_indices, NT, p=p, graw=graw)
    B, T, H, K = k.shape
    HV, V = v.shape[2], v.shape[3]
    A = torch.empty(B, T, HV, BT, device=k.device, dtype=k.dtype)
    w = torch.empty(B, T, HV, K, device=k.device, dtype=k.dtype)
    u = torch.empty(B, T, HV, V, device=k.device, dtype=k.dtype)
    delta_wy_fwd_kernel[(NT, B * HV)](
        k, p, v, beta, gc, graw, A, w, u, cu_seqlens, chunk_indices, T, H=H, HV=HV, K=K, V=V, BT=BT, BC=BC,
        BK=_bk(K), BV=_bk(V), USE_G=gc is not None, USE_P=p is not None, IS_VARLEN=cu_seqlens is not None,
        DIAG_REC=mode == "rec", num_warps=4)  # A/B only: DIAG_REC
    return A, w, u


def _wy_fwd_old(k, v, beta, gc, cu_seqlens, chunk_indices, NT, p=None, graw=None):
    """A/B only: remove after the GPU comparison. The previous forward (fp32 A)."""
    B, T, H, K = k.shape
    HV, V = v.shape[2], v.shape[3]
    A = torch.empty(B, T, HV, BT, device=k.device, dtype=torch.float32)
    w = torch.empty(B, T, HV, K, device=k.device, dtype=k.dtype)
    u = torch.empty(B, T, HV, V, device=k.device, dtype=k.dtype)
    grid = (NT, B * HV)
    varlen = cu_seqlens is not None
    use_p = p is not None
    _old_delta_wy_fwd_kernel[grid](k, p, v, beta, gc, graw, A, w, u, cu_seqlens, chunk_indices, T, H=H, HV=HV,
                                   K=K, V=V, BT=BT, BC=BC, BK=_bk(K), BV=_bk(V), USE_G=gc is not None,
                                   USE_P=use_p, IS_VARLEN=varlen, num_warps=4)
    return A, w, u


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
        IS_VARLEN=cu_seqlens is not None, num_warps=4)
    if use_p:
        return dk, dv, dbeta, dgc, dp, dgl
    return dk, dv, dbeta, dgc
