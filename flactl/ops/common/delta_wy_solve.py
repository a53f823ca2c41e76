"""UT transform of one chunk with every 16x16 block in registers: L, then A = (I + L)^{-1}, stored once.

The first of the two WY forward kernels (delta_wy.wy_fwd; the w, u products are delta_wy_wu_kernel). Notation as in delta_wy: for a chunk of 64 tokens, four row blocks of 16,

  1. the ten lower blocks L_ij (i >= j) = diag(beta_i) (P_i K_j^T) * exp(gcl_i - gc_j), one tl.dot each per
     64-wide K slice (strict lower on the diagonal blocks, rows past the sequence end zero);
  2. the four diagonal inverses X_dd = (I + L_dd)^{-1}, advancing together, by forward substitution row by
     row (row i of L taken out of the register tile with a masked reduction; a recursive 2x2 block
     substitution 1 -> 2 -> 4 -> 8 -> 16 measured 7 % slower on the H100);
  3. the off-diagonal blocks by block forward substitution in exact fp32: X21 = -X22 (L21 X11),
     X43 = -X44 (L43 X33), then the lower-left 32x32 block -X_bot (L_c X_top) as 16x16 products;
  4. A stored once in k's dtype, zeros above the diagonal (the w, u kernel and the backward read A in
     k's dtype, so nothing they use is lost).

Why a kernel of its own, on one warp: fused with the w, u products (the previous kernel; also a version
with the blocks in registers, session 4) a program needed ~250 registers per thread and 2 CTAs fit an
SM; alone, the solve is a chain of small dependent steps that one warp runs as fast as four, so many
more chunks are in flight per SM (H100: 0.238 ms for solve + w,u at 1x16384x16x128 vs 0.299 fused). Numerics: forward substitution throughout (backward stable for
triangular systems); nothing forms powers of L.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .chunk_bounds import _chunk_bounds

BT = 64  # chunk size (fixed: the solve is written for 4 blocks of 16)
BC = 16


@triton.jit
def _mm(a, b):
    # exact fp32 products: the triangular solve must not run in tf32
    return tl.dot(a, b, input_precision="ieee")


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
    """Block L_ij = diag(beta_i) (P_i K_j^T) * exp(gcl_i - gc_j): strict lower on a diagonal block;
    rows past the end zero. The exponent is masked first: on masked entries it can overflow."""
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
    X_i = -L_i - sum_{j<i} L_ij X_j. Four independent chains per step."""
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


@triton.jit
def delta_wy_solve_kernel(
    k, p, beta, gc, graw, A, cu_seqlens, chunk_indices, T,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr,
    USE_G: tl.constexpr, USE_P: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    """A = (I + L)^{-1} for one chunk and value head, every block in registers (module docstring)."""
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
    else:
        g1, g2, g3, g4 = b1, b2, b3, b4  # unused
        l1, l2, l3, l4 = b1, b2, b3, b4  # unused
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

    # 2. diagonal blocks
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

    # 4. A stored once, zeros above the diagonal blocks
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
    # columns past the block's diagonal (the others map to BT, outside the row, and are masked)
    _put_rows(A, bos, t1, Tl, HV, i_hv, BT, tl.where(o_z >= BC, o_z, BT), BC, Z)
    _put_rows(A, bos, t2, Tl, HV, i_hv, BT, tl.where(o_z >= 2 * BC, o_z, BT), BC, Z)
    _put_rows(A, bos, t3, Tl, HV, i_hv, BT, tl.where(o_z >= 3 * BC, o_z, BT), BC, Z)
