"""Intra-chunk pieces of GLA (per-key-channel decay), forward scores and backward dq/dk/dg.

With chunk-local cumulative log-decays G [BT, K] (non-increasing along the chunk), the scores

    A_ij = sum_k q_ik k_jk e^{G_ik - G_jk}   (i >= j)

are not one matmul. Split the chunk into sub-blocks of BC = 16 rows. For a row block I and an
earlier column block J < I pick a reference r (a row of G) with G_J >= r >= G_I; then

    A_IJ = (q_I ⊙ e^{G_I - r}) (k_J ⊙ e^{r - G_J})^T

and both factors are <= 1, so the product is exact in floating point whenever it is representable
(r = first row of I in the forward and for dq, r = last row of J for dk). Diagonal blocks use the
block's middle row as reference: the factors are bounded by the decay over 8 steps, so they only
overflow when a channel decays by more than e^80 within 8 steps (a per-step log-decay below -10,
i.e. the state is wiped anyway); such gates should be clamped by the caller.

Backward (dA_ij = scale * do_i · v_j from ``chunk_o.chunk_bwd_dqk``):

    dq_I += sum_{J<=I} e^{G_I - r} ⊙ dA_IJ (k_J ⊙ e^{r - G_J})
    dk_J += sum_{I>=J} e^{r - G_J} ⊙ dA_IJ^T (q_I ⊙ e^{G_I - r})

and the gate term dgl = q ⊙ dq - k ⊙ dk (see ``chunk_o``) for the final dq, dk.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..utils.autotune import autotune
from ..utils.index import prepare_chunk_indices

_CONFIGS = [
    triton.Config({}, num_warps=4, num_stages=2),
    triton.Config({}, num_warps=2, num_stages=2),
]


@triton.jit
def _chunk_pos(cu_seqlens, chunk_indices, i_t, i_b, T, IS_VARLEN: tl.constexpr):
    if IS_VARLEN:
        i_n = tl.load(chunk_indices + i_t * 2).to(tl.int64)
        i_c = tl.load(chunk_indices + i_t * 2 + 1).to(tl.int32)
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        seq_len = (tl.load(cu_seqlens + i_n + 1).to(tl.int64) - bos).to(tl.int32)
    else:
        i_c = i_t
        bos = i_b.to(tl.int64) * T
        seq_len = T
    return bos, seq_len, i_c


@triton.jit
def _load_rows(x, bos, o_t, m_t, i_h, o_k, m_k, H: tl.constexpr, K: tl.constexpr):
    p = ((bos + o_t) * H + i_h)[:, None] * K + o_k[None, :]
    return tl.load(x + p, mask=m_t[:, None] & m_k[None, :], other=0.0)


@triton.jit
def _load_ref(gk, bos, row, seq_len, i_h, o_k, m_k, H: tl.constexpr, K: tl.constexpr):
    row = tl.minimum(row, seq_len - 1)
    return tl.load(gk + ((bos + row) * H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32)


@autotune(configs=_CONFIGS, key=["H", "K", "BT", "BC"])
@triton.jit
def chunk_gla_fwd_A_kernel(
    q, k, gk, A, cu_seqlens, chunk_indices, T,
    H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    bos, seq_len, i_c = _chunk_pos(cu_seqlens, chunk_indices, i_t, i_b, T, IS_VARLEN)
    o_c = tl.arange(0, BC)
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    for i_i in tl.static_range(BT // BC):
        o_ti = i_c * BT + i_i * BC + o_c
        m_ti = o_ti < seq_len
        m2 = m_ti[:, None] & m_k[None, :]
        b_q = _load_rows(q, bos, o_ti, m_ti, i_h, o_k, m_k, H, K)
        b_ki = _load_rows(k, bos, o_ti, m_ti, i_h, o_k, m_k, H, K)
        b_gi = _load_rows(gk, bos, o_ti, m_ti, i_h, o_k, m_k, H, K).to(tl.float32)
        p_A = A + ((bos + o_ti) * H + i_h)[:, None] * BT + o_c[None, :]
        b_r = _load_ref(gk, bos, i_c * BT + i_i * BC, seq_len, i_h, o_k, m_k, H, K)
        b_qr = (b_q * tl.exp(tl.where(m2, b_gi - b_r[None, :], 0.0))).to(b_q.dtype)
        for i_j in tl.static_range(i_i):
            o_tj = i_c * BT + i_j * BC + o_c
            m_tj = o_tj < seq_len
            b_kj = _load_rows(k, bos, o_tj, m_tj, i_h, o_k, m_k, H, K)
            b_gj = _load_rows(gk, bos, o_tj, m_tj, i_h, o_k, m_k, H, K).to(tl.float32)
            m2j = m_tj[:, None] & m_k[None, :]
            b_kr = (b_kj * tl.exp(tl.where(m2j, b_r[None, :] - b_gj, 0.0))).to(b_kj.dtype)
            b_A = tl.dot(b_qr, tl.trans(b_kr))
            tl.store(p_A + i_j * BC, b_A, mask=m_ti[:, None])
        # diagonal block, referenced at its middle row
        b_rm = _load_ref(gk, bos, i_c * BT + i_i * BC + BC // 2, seq_len, i_h, o_k, m_k, H, K)
        b_qm = (b_q * tl.exp(tl.where(m2, b_gi - b_rm[None, :], 0.0))).to(b_q.dtype)
        b_km = (b_ki * tl.exp(tl.where(m2, b_rm[None, :] - b_gi, 0.0))).to(b_ki.dtype)
        b_A = tl.dot(b_qm, tl.trans(b_km))
        b_A = tl.where(o_c[:, None] >= o_c[None, :], b_A, 0.0)
        tl.store(p_A + i_i * BC, b_A, mask=m_ti[:, None])
        for i_j in tl.static_range(i_i + 1, BT // BC):
            tl.store(p_A + i_j * BC, tl.zeros([BC, BC], dtype=tl.float32), mask=m_ti[:, None])


@autotune(configs=_CONFIGS, key=["H", "K", "BT", "BC"])
@triton.jit
def chunk_gla_bwd_intra_kernel(
    q, k, gk, dA, dq_in, dk_in, dq, dk, dgl, cu_seqlens, chunk_indices, T,
    H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    bos, seq_len, i_c = _chunk_pos(cu_seqlens, chunk_indices, i_t, i_b, T, IS_VARLEN)
    o_c = tl.arange(0, BC)
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    m_diag = o_c[:, None] >= o_c[None, :]
    for i_i in tl.static_range(BT // BC):
        o_ti = i_c * BT + i_i * BC + o_c
        m_ti = o_ti < seq_len
        m2 = m_ti[:, None] & m_k[None, :]
        b_q = _load_rows(q, bos, o_ti, m_ti, i_h, o_k, m_k, H, K)
        b_k = _load_rows(k, bos, o_ti, m_ti, i_h, o_k, m_k, H, K)
        b_gi = _load_rows(gk, bos, o_ti, m_ti, i_h, o_k, m_k, H, K).to(tl.float32)
        p_dA_row = dA + ((bos + o_ti) * H + i_h)[:, None] * BT + o_c[None, :]
        # dq: earlier column blocks, reference = first row of this block
        b_dq = tl.zeros([BC, BK], dtype=tl.float32)
        b_r = _load_ref(gk, bos, i_c * BT + i_i * BC, seq_len, i_h, o_k, m_k, H, K)
        for i_j in tl.static_range(i_i):
            o_tj = i_c * BT + i_j * BC + o_c
            m_tj = o_tj < seq_len
            b_kj = _load_rows(k, bos, o_tj, m_tj, i_h, o_k, m_k, H, K)
            b_gj = _load_rows(gk, bos, o_tj, m_tj, i_h, o_k, m_k, H, K).to(tl.float32)
            m2j = m_tj[:, None] & m_k[None, :]
            b_kr = (b_kj * tl.exp(tl.where(m2j, b_r[None, :] - b_gj, 0.0))).to(b_kj.dtype)
            b_dA = tl.load(p_dA_row + i_j * BC, mask=m_ti[:, None], other=0.0).to(b_kj.dtype)
            b_dq += tl.dot(b_dA, b_kr)
        b_dq *= tl.exp(tl.where(m2, b_gi - b_r[None, :], 0.0))
        # dk: later row blocks, reference = last row of this block
        b_dk = tl.zeros([BC, BK], dtype=tl.float32)
        b_r2 = _load_ref(gk, bos, i_c * BT + i_i * BC + BC - 1, seq_len, i_h, o_k, m_k, H, K)
        for i_j in tl.static_range(i_i + 1, BT // BC):
            o_tj = i_c * BT + i_j * BC + o_c
            m_tj = o_tj < seq_len
            b_qj = _load_rows(q, bos, o_tj, m_tj, i_h, o_k, m_k, H, K)
            b_gj = _load_rows(gk, bos, o_tj, m_tj, i_h, o_k, m_k, H, K).to(tl.float32)
            m2j = m_tj[:, None] & m_k[None, :]
            b_qr = (b_qj * tl.exp(tl.where(m2j, b_gj - b_r2[None, :], 0.0))).to(b_qj.dtype)
            p_dA_col = dA + ((bos + o_tj) * H + i_h)[:, None] * BT + i_i * BC + o_c[None, :]
            b_dA = tl.load(p_dA_col, mask=m_tj[:, None], other=0.0).to(b_qj.dtype)
            b_dk += tl.dot(tl.trans(b_dA), b_qr)
        b_dk *= tl.exp(tl.where(m2, b_r2[None, :] - b_gi, 0.0))
        # diagonal block, middle-row reference
        b_rm = _load_ref(gk, bos, i_c * BT + i_i * BC + BC // 2, seq_len, i_h, o_k, m_k, H, K)
        b_em = tl.exp(tl.where(m2, b_gi - b_rm[None, :], 0.0))
        b_ime = tl.exp(tl.where(m2, b_rm[None, :] - b_gi, 0.0))
        b_dA = tl.load(p_dA_row + i_i * BC, mask=m_ti[:, None], other=0.0)
        b_dA = tl.where(m_diag, b_dA, 0.0).to(b_q.dtype)
        b_dq += b_em * tl.dot(b_dA, (b_k * b_ime).to(b_k.dtype))
        b_dk += b_ime * tl.dot(tl.trans(b_dA), (b_q * b_em).to(b_q.dtype))
        # add the inter-chunk parts, gate term
        p = ((bos + o_ti) * H + i_h)[:, None] * K + o_k[None, :]
        b_dq += tl.load(dq_in + p, mask=m2, other=0.0)
        b_dk += tl.load(dk_in + p, mask=m2, other=0.0)
        b_dg = b_q.to(tl.float32) * b_dq - b_k.to(tl.float32) * b_dk
        tl.store(dq + p, b_dq.to(dq.dtype.element_ty), mask=m2)
        tl.store(dk + p, b_dk.to(dk.dtype.element_ty), mask=m2)
        tl.store(dgl + p, b_dg, mask=m2)


def _grid_chunks(B, T, BT, cu_seqlens):
    if cu_seqlens is None:
        return triton.cdiv(T, BT), None
    ci = prepare_chunk_indices(cu_seqlens, BT)
    return ci.shape[0], ci


def chunk_gla_fwd_A(q: torch.Tensor, k: torch.Tensor, gk: torch.Tensor,
                    cu_seqlens: Optional[torch.Tensor] = None, chunk_size: int = 64) -> torch.Tensor:
    """Unscaled intra-chunk scores A [B,T,H,BT] float32 (row t: scores of t against its chunk's rows;
    zero above the diagonal). gk: chunk-local cumsum of the log-decays, float32 [B,T,H,K]."""
    B, T, H, K = q.shape
    NT, ci = _grid_chunks(B, T, chunk_size, cu_seqlens)
    A = q.new_empty(B, T, H, chunk_size, dtype=torch.float32)
    BK = max(32, triton.next_power_of_2(K))
    chunk_gla_fwd_A_kernel[(NT, B * H)](q, k, gk, A, cu_seqlens, ci, T, H=H, K=K, BT=chunk_size, BC=16, BK=BK,
                                        IS_VARLEN=cu_seqlens is not None)
    return A


def chunk_gla_bwd_intra(q, k, gk, dA, dq_inter, dk_inter, cu_seqlens=None, chunk_size: int = 64):
    """Final dq, dk (q dtype) and the gate term q*dq - k*dk [B,T,H,K] float32."""
    B, T, H, K = q.shape
    NT, ci = _grid_chunks(B, T, chunk_size, cu_seqlens)
    dq, dk = torch.empty_like(q), torch.empty_like(k)
    dgl = q.new_empty(B, T, H, K, dtype=torch.float32)
    BK = max(32, triton.next_power_of_2(K))
    chunk_gla_bwd_intra_kernel[(NT, B * H)](q, k, gk, dA, dq_inter, dk_inter, dq, dk, dgl, cu_seqlens, ci, T,
                                            H=H, K=K, BT=chunk_size, BC=16, BK=BK,
                                            IS_VARLEN=cu_seqlens is not None)
    return dq, dk, dgl
