"""Chunk-parallel backward pieces: dq, dk (and the per-position gate gradient) from the stored
states h and state gradients dh of ``chunk_h``; plus the sequence-wise reverse cumsum that turns
per-position gate gradients into gradients of the per-step log-decays.

For chunk c (local cumulative decay G, G_last at the last valid row, S_c = h[c] entering the chunk,
dS = dh[c] the gradient of the state leaving it), with dA_ij = do_i · v_j (i >= j):

    dq_i = scale * [ e^{G_i} ⊙ (do_i S_c^T) + sum_{j<=i} dA_ij e^{G_i - G_j} k_j ]
    dk_j = e^{G_last - G_j} ⊙ (v_j dS^T) + scale * sum_{i>=j} dA_ij e^{G_i - G_j} q_i

Gate gradient (why no cross-chunk term is needed): every term of the loss that contains q_t
carries a factor e^{Gabs_t} and every term that contains k_t a factor e^{-Gabs_t}, where Gabs is
the cumulative decay from the sequence start. Hence dL/dGabs_t = q_t·dq_t - k_t·dk_t (per channel
for vector gates), plus <S_T, dS_T> at the last position from the final state. The gradient of
the per-step gate g_t is the reverse cumsum of that over the rest of its sequence. The kernels
only emit the elementwise ``q*dq - k*dk`` (reduced over K for scalar gates); ``reverse_cumsum``
does the scan. This replaces a gated dq/dk/dg kernel that does the decay bookkeeping in one
pass (the pattern Triton 3.4-3.7.0 miscompiles on Hopper) with two simple ones.

For vector gates (GLA) this kernel computes only the inter-chunk parts and dA; the intra-chunk
sub-block products live in ``flactl.ops.gla.chunk_intra``.
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
    triton.Config({}, num_warps=8, num_stages=2),
]


@autotune(configs=_CONFIGS, key=["H", "K", "V", "BK", "BV", "USE_G", "USE_G_GAMMA", "USE_GK", "STORE_DG"])
@triton.jit
def chunk_bwd_dqk_kernel(
    q, k, v, do, h, dh, g, gk, g_gamma, dq, dk, dgl, dA, cu_seqlens, chunk_indices, scale, T, stride_nk,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_G: tl.constexpr, USE_G_GAMMA: tl.constexpr, USE_GK: tl.constexpr, STORE_DG: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    i_k, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    if IS_VARLEN:
        i_n = tl.load(chunk_indices + i_t * 2).to(tl.int64)
        i_c = tl.load(chunk_indices + i_t * 2 + 1).to(tl.int32)
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        seq_len = (tl.load(cu_seqlens + i_n + 1).to(tl.int64) - bos).to(tl.int32)
        i_chunk = i_t.to(tl.int64)  # row of h/dh: chunks are stored in table order
    else:
        i_c = i_t
        bos = i_b.to(tl.int64) * T
        seq_len = T
        i_chunk = i_b.to(tl.int64) * tl.cdiv(T, BT) + i_t
    o_i = tl.arange(0, BT)
    o_t = i_c * BT + o_i
    m_t = o_t < seq_len
    r_t = bos + o_t
    o_k = i_k * BK + tl.arange(0, BK)
    m_k = o_k < K
    m_qk = m_t[:, None] & m_k[None, :]
    p_qk = (r_t * H + i_h)[:, None] * K + o_k[None, :]
    n_valid = tl.minimum(seq_len - i_c * BT, BT)

    b_dq = tl.zeros([BT, BK], dtype=tl.float32)
    b_dk = tl.zeros([BT, BK], dtype=tl.float32)
    b_ds = tl.zeros([BT, BT], dtype=tl.float32)
    p_h = h + (i_chunk * H + i_h) * K * V
    p_dh = dh + (i_chunk * H + i_h) * K * V
    for i_v in range(0, tl.cdiv(V, BV)):
        o_v = i_v * BV + tl.arange(0, BV)
        m_v = o_v < V
        p_v = (r_t * H + i_h)[:, None] * V + o_v[None, :]
        m_tv = m_t[:, None] & m_v[None, :]
        b_v = tl.load(v + p_v, mask=m_tv, other=0.0)
        b_do = tl.load(do + p_v, mask=m_tv, other=0.0)
        o_hkv = o_k[:, None].to(tl.int64) * V + o_v[None, :]
        m_kv = m_k[:, None] & m_v[None, :]
        b_h = tl.load(p_h + o_hkv, mask=m_kv, other=0.0)
        b_dh = tl.load(p_dh + o_hkv, mask=m_kv, other=0.0)
        b_ds += tl.dot(b_do, tl.trans(b_v))
        b_dq += tl.dot(b_do, tl.trans(b_h.to(b_do.dtype)))
        b_dk += tl.dot(b_v, tl.trans(b_dh.to(b_v.dtype)))

    b_q = tl.load(q + p_qk, mask=m_qk, other=0.0)
    b_k = tl.load(k + p_qk, mask=m_qk, other=0.0)
    m_causal = (o_i[:, None] >= o_i[None, :]) & m_t[:, None]
    if USE_GK:
        # vector gates: inter-chunk parts here, intra-chunk parts from dA in chunk_intra
        b_gk = tl.load(gk + p_qk, mask=m_qk, other=0.0).to(tl.float32)
        b_gkl = tl.load(gk + ((bos + i_c * BT + n_valid - 1) * H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32)
        b_dq = b_dq * tl.exp(b_gk) * scale
        b_dk = b_dk * tl.exp(tl.where(m_t[:, None], b_gkl[None, :] - b_gk, 0.0))
        if i_k == 0:
            tl.store(dA + (r_t * H + i_h)[:, None] * BT + o_i[None, :], tl.where(m_causal, b_ds, 0.0) * scale,
                     mask=m_t[:, None])
    else:
        b_g = tl.zeros([BT], dtype=tl.float32)
        if USE_G:
            b_g = tl.load(g + r_t * H + i_h, mask=m_t, other=0.0).to(tl.float32)
        if USE_G_GAMMA:
            b_g += tl.load(g_gamma + i_h).to(tl.float32) * (o_i + 1).to(tl.float32)
        b_g = tl.where(m_t, b_g, 0.0)
        b_gl = tl.sum(tl.where(o_i == n_valid - 1, b_g, 0.0), axis=0)
        b_dq = b_dq * tl.exp(b_g)[:, None] * scale
        b_dk = b_dk * tl.exp(tl.where(m_t, b_gl - b_g, 0.0))[:, None]
        b_ds = tl.where(m_causal, b_ds * tl.exp(tl.where(m_causal, b_g[:, None] - b_g[None, :], 0.0)), 0.0) * scale
        b_ds = b_ds.to(b_k.dtype)
        b_dq += tl.dot(b_ds, b_k)
        b_dk += tl.dot(tl.trans(b_ds), b_q)
        if STORE_DG:
            b_dgl = tl.sum(b_q.to(tl.float32) * b_dq - b_k.to(tl.float32) * b_dk, axis=1)
            tl.store(dgl + i_k.to(tl.int64) * stride_nk + r_t * H + i_h, b_dgl, mask=m_t)
    tl.store(dq + p_qk, b_dq.to(dq.dtype.element_ty), mask=m_qk)
    tl.store(dk + p_qk, b_dk.to(dk.dtype.element_ty), mask=m_qk)


@triton.jit
def reverse_cumsum_kernel(x, y, cu_seqlens, T, S, BT: tl.constexpr, BS: tl.constexpr, IS_VARLEN: tl.constexpr):
    """y[t] = sum_{s >= t, same sequence} x[s] over columns S (x, y: [B, T, S] float32)."""
    i_s, i_n = tl.program_id(0), tl.program_id(1)
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        seq_len = (tl.load(cu_seqlens + i_n + 1).to(tl.int64) - bos).to(tl.int32)
    else:
        bos = i_n.to(tl.int64) * T
        seq_len = T
    o_s = i_s * BS + tl.arange(0, BS)
    m_s = o_s < S
    b_carry = tl.zeros([BS], dtype=tl.float32)
    NT = tl.cdiv(seq_len, BT)
    for i_r in range(0, NT):
        o_t = (NT - 1 - i_r) * BT + tl.arange(0, BT)
        m = (o_t < seq_len)[:, None] & m_s[None, :]
        p = (bos + o_t)[:, None] * S + o_s[None, :]
        b_x = tl.load(x + p, mask=m, other=0.0).to(tl.float32)
        b_y = b_carry[None, :] + tl.sum(b_x, axis=0)[None, :] - tl.cumsum(b_x, axis=0) + b_x
        tl.store(y + p, b_y.to(y.dtype.element_ty), mask=m)
        b_carry += tl.sum(b_x, axis=0)


def reverse_cumsum(x: torch.Tensor, cu_seqlens: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Sequence-wise reverse cumsum along T of x [B, T, ...] (float32), restarting at every sequence."""
    B, T = x.shape[:2]
    if x.dim() == 3:
        # Scalar gates ([B, T, H]: little data, few columns): a float64 torch scan, exact enough to
        # subtract suffix sums across packed sequences. The scan must run along the innermost
        # dimension: torch's scan over an outer dimension parallelises only over the B*H columns and
        # took 0.71 ms at (4,4096,16) on the H100 (40% of simple_gla's fwd+bwd); along the last
        # dimension of a [B, H, T] copy it is a few microseconds.
        s = x.double().transpose(1, 2).flip(-1).cumsum(-1).flip(-1).transpose(1, 2)
        if cu_seqlens is not None:
            s_pad = torch.cat([s, s.new_zeros(B, 1, *s.shape[2:])], 1)
            ends = torch.repeat_interleave(cu_seqlens[1:], cu_seqlens[1:] - cu_seqlens[:-1], output_size=T)
            s = s - s_pad[:, ends]
        return s.float().contiguous()
    x = x.contiguous()
    S = x[0, 0].numel() if T > 0 else 1
    y = torch.empty_like(x, dtype=torch.float32)
    if x.numel() == 0:
        return y
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    BS = min(triton.next_power_of_2(S), 32)
    reverse_cumsum_kernel[(triton.cdiv(S, BS), N)](x, y, cu_seqlens, T, S, BT=64, BS=BS,
                                                   IS_VARLEN=cu_seqlens is not None)
    return y


def chunk_bwd_dqk(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, do: torch.Tensor, h: torch.Tensor, dh: torch.Tensor,
    g: Optional[torch.Tensor] = None, g_gamma: Optional[torch.Tensor] = None, gk: Optional[torch.Tensor] = None,
    scale: float = 1.0, cu_seqlens: Optional[torch.Tensor] = None, chunk_size: int = 64,
    need_dg: bool = True,
):
    """dq, dk [B,T,H,K] and the per-position gate term.

    Scalar gates: returns (dq, dk, dgl) with dgl [B,T,H] float32 = sum_K(q*dq - k*dk), or None without
    gates or with ``need_dg=False`` (e.g. RetNet's fixed decays). Vector gates (gk): dq/dk are float32 inter-chunk parts only and the third value is
    dA [B,T,H,BT] float32 (scale included, lower-triangular), for ``chunk_intra``.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    BT = chunk_size
    if cu_seqlens is None:
        NT, chunk_indices = triton.cdiv(T, BT), None
    else:
        chunk_indices = prepare_chunk_indices(cu_seqlens, BT)
        NT = chunk_indices.shape[0]
    BK = max(32, min(triton.next_power_of_2(K), 128))
    NK = triton.cdiv(K, BK)
    # BK=32 with BV=64 in bf16 is miscompiled by Triton 3.6 on Hopper (illegal memory access or wrong
    # dq/dk; found by tests/ops/test_simple_gla.py on the H100): keep BV=32 whenever BK=32.
    BV = 32 if BK == 32 else max(32, min(triton.next_power_of_2(V), 64))
    scalar_gate = g is not None or g_gamma is not None
    if gk is not None:
        dq = q.new_empty(B, T, H, K, dtype=torch.float32)
        dk = q.new_empty(B, T, H, K, dtype=torch.float32)
        aux = q.new_empty(B, T, H, BT, dtype=torch.float32)
        dgl = None
    else:
        dq, dk = torch.empty_like(q), torch.empty_like(k)
        aux = None
        dgl = q.new_empty(NK, B, T, H, dtype=torch.float32) if (scalar_gate and need_dg) else None
    Bg = 1 if cu_seqlens is not None else B
    chunk_bwd_dqk_kernel[(NK, NT, Bg * H)](
        q, k, v, do, h, dh, g, gk, g_gamma, dq, dk, dgl, aux, cu_seqlens, chunk_indices, scale, T, B * T * H,
        H=H, K=K, V=V, BT=BT, BK=BK, BV=BV,
        USE_G=g is not None, USE_G_GAMMA=g_gamma is not None, USE_GK=gk is not None,
        STORE_DG=dgl is not None, IS_VARLEN=cu_seqlens is not None,
    )
    if gk is not None:
        return dq, dk, aux
    if dgl is not None:
        dgl = dgl.sum(0) if NK > 1 else dgl[0]
    return dq, dk, dgl
