"""Inter-chunk state passing for (gated) linear attention, fused with the work that walks it.

Recurrence (per head, state S in R^{K x V}, log-decays cumulated within a chunk of BT steps):

    S_t = exp(a_t) ⊙ S_{t-1} + k_t^T v_t,   o_t = scale * q_t S_t

where ``a_t`` is a scalar per head (``g`` [B,T,H] and/or ``g_gamma`` [H]) or a per-key-channel
vector (``gk`` [B,T,H,K], GLA). Within chunk c with local cumulative decay G_i (i = 0..BT-1,
G_last = G at the chunk's last valid row) and S_c the state entering the chunk:

    o_i      = scale * [ (q_i ⊙ e^{G_i}) S_c + sum_{j<=i} (q_i · (k_j ⊙ e^{G_i - G_j})) v_j ]
    S_{c+1}  = e^{G_last} ⊙ S_c + (k ⊙ e^{G_last - G})^T v

Every exponent is <= 0 for decays <= 0, so nothing overflows. For vector gates the intra-chunk
matrix A_ij = q_i · (k_j ⊙ e^{G_i - G_j}) cannot be one matmul and is computed beforehand
(``flactl.ops.gla.chunk_intra``) and passed in as ``A``.

Forward (``chunk_fwd_ho``): one program per (sequence, head, V block) walks the chunks in order,
writes o directly and, for the backward, the state entering every chunk (``h`` [.., NT, H, K, V]).
Fusing the output into the state walk means the states never make a round trip through memory
in inference, and q·k^T is computed once per V block instead of in a second kernel.

Backward (``chunk_bwd_dh_dv``): the transposed walk, in reverse, carries dS (gradient of the state
leaving chunk c), stores it (``dh``) for the dq/dk kernel (``chunk_o.chunk_bwd_dqk``) and writes dv:

    dv_j   = scale * sum_{i>=j} A_ij do_i + (k_j ⊙ e^{G_last - G_j}) dS_{c+1}
    dS_c   = e^{G_last} ⊙ dS_{c+1} + scale * (q ⊙ e^{G})^T do
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import triton
import triton.language as tl

from ..utils.autotune import autotune
from ..utils.device import sm_count
from ..utils.index import prepare_chunk_offsets

# BV is chosen by the launcher from K (register budget for the K x BV fp32 state); the autotuner
# only picks warps/stages. First config = default when FLACTL_AUTOTUNE=0.
_CONFIGS = [
    triton.Config({}, num_warps=4, num_stages=2),
    triton.Config({}, num_warps=8, num_stages=2),
]


@triton.jit
def _seq_bounds(cu_seqlens, chunk_offsets, i_n, T, BT: tl.constexpr, IS_VARLEN: tl.constexpr):
    """(first row, length, index of the sequence's first chunk in the chunk-major buffers)."""
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
        boc = tl.load(chunk_offsets + i_n).to(tl.int64)
        seq_len = (eos - bos).to(tl.int32)
    else:
        bos = i_n.to(tl.int64) * T
        seq_len = T
        boc = i_n.to(tl.int64) * tl.cdiv(T, BT)
    return bos, seq_len, boc


@triton.jit
def _load_gates(g, gk, g_gamma, bos, i_t, i_h, seq_len, k_off, H: tl.constexpr, K: tl.constexpr,
                BT: tl.constexpr, BK: tl.constexpr,
                USE_G: tl.constexpr, USE_G_GAMMA: tl.constexpr, USE_GK: tl.constexpr):
    """Chunk-local cumulative log-decays: scalar (b_g [BT], b_gl) and vector (b_gk [BT,BK], b_gkl [BK],
    key channels k_off .. k_off+BK-1)."""
    o_i = tl.arange(0, BT)
    o_t = i_t * BT + o_i
    m_t = o_t < seq_len
    o_k = k_off + tl.arange(0, BK)
    n_valid = tl.minimum(seq_len - i_t * BT, BT)
    b_g = tl.zeros([BT], dtype=tl.float32)
    b_gl = 0.0
    if USE_G:
        b_g = tl.load(g + (bos + o_t) * H + i_h, mask=m_t, other=0.0).to(tl.float32)
    if USE_G_GAMMA:
        b_g += tl.load(g_gamma + i_h).to(tl.float32) * (o_i + 1).to(tl.float32)
    if USE_G or USE_G_GAMMA:
        b_g = tl.where(m_t, b_g, 0.0)
        b_gl = tl.sum(tl.where(o_i == n_valid - 1, b_g, 0.0), axis=0)
    b_gk = tl.zeros([BT, BK], dtype=tl.float32)
    b_gkl = tl.zeros([BK], dtype=tl.float32)
    if USE_GK:
        m_k = o_k < K
        b_gk = tl.load(gk + ((bos + o_t) * H + i_h)[:, None] * K + o_k[None, :],
                       mask=m_t[:, None] & m_k[None, :], other=0.0).to(tl.float32)
        b_gkl = tl.load(gk + ((bos + i_t * BT + n_valid - 1) * H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32)
    return b_g, b_gl, b_gk, b_gkl


@autotune(configs=_CONFIGS, key=["H", "K", "V", "BK", "BV", "USE_G", "USE_G_GAMMA", "USE_GK", "STORE_H", "MODE"])
@triton.jit
def chunk_fwd_ho_kernel(
    q, k, v, g, gk, g_gamma, A, o, h, h0, ht, cu_seqlens, chunk_offsets, scale, T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_G: tl.constexpr, USE_G_GAMMA: tl.constexpr, USE_GK: tl.constexpr,
    STORE_H: tl.constexpr, USE_INITIAL_STATE: tl.constexpr, STORE_FINAL_STATE: tl.constexpr,
    IS_VARLEN: tl.constexpr, MODE: tl.constexpr,
):
    # MODE 0: walk the chunks and write o (fused). MODE 1: walk, only store h (and the final state).
    # MODE 2: one chunk per program (grid axis 2), o from the stored h — no sequential dependence.
    # MODE 1 also splits the key dimension (block i_k on grid axis 2, BK < K possible): the update
    # S <- e^{G_last} ⊙ S + (k ⊙ e^{G_last - G})^T v is independent per key row for scalar AND
    # per-key-channel decays, so the walk needs only its BK rows of k / gk / h. Without o (which sums
    # over all of K) nothing couples key blocks; more, smaller programs hide the walk's latency.
    # MODE 0 / 2 compute o = q S and need full K per program (BK >= K, i_k = 0).
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_k = 0
    if MODE == 1:
        i_k = tl.program_id(2)
    i_n, i_h = i_nh // H, i_nh % H
    bos, seq_len, boc = _seq_bounds(cu_seqlens, chunk_offsets, i_n, T, BT, IS_VARLEN)
    NT = tl.cdiv(seq_len, BT)
    o_i = tl.arange(0, BT)
    o_k = i_k * BK + tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    o_kv = o_k[:, None].to(tl.int64) * V + o_v[None, :]
    m_causal = o_i[:, None] >= o_i[None, :]

    b_s = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_INITIAL_STATE and MODE != 2:
        b_s += tl.load(h0 + i_nh.to(tl.int64) * K * V + o_kv, mask=m_kv, other=0.0).to(tl.float32)
    t_start = 0
    t_end = NT
    if MODE == 2:
        t_start = tl.program_id(2)
        t_end = tl.minimum(t_start + 1, NT)

    for i_t in range(t_start, t_end):
        o_t = i_t * BT + o_i
        m_t = o_t < seq_len
        r_t = bos + o_t  # int64 rows
        p_qk = (r_t * H + i_h)[:, None] * K + o_k[None, :]
        m_qk = m_t[:, None] & m_k[None, :]
        b_k = tl.load(k + p_qk, mask=m_qk, other=0.0)
        p_v = (r_t * H + i_h)[:, None] * V + o_v[None, :]
        m_tv = m_t[:, None] & m_v[None, :]
        b_v = tl.load(v + p_v, mask=m_tv, other=0.0)
        if MODE == 2:
            b_s = tl.load(h + ((boc + i_t) * H + i_h) * K * V + o_kv, mask=m_kv, other=0.0).to(tl.float32)
        elif STORE_H:
            tl.store(h + ((boc + i_t) * H + i_h) * K * V + o_kv, b_s.to(h.dtype.element_ty), mask=m_kv)
        b_g, b_gl, b_gk, b_gkl = _load_gates(g, gk, g_gamma, bos, i_t, i_h, seq_len, i_k * BK, H, K, BT, BK,
                                             USE_G, USE_G_GAMMA, USE_GK)
        b_q = b_k
        if MODE != 1:
            b_q = tl.load(q + p_qk, mask=m_qk, other=0.0)
        # inter-chunk part: (q ⊙ e^G) S_c
        b_qd = b_q.to(tl.float32)
        b_kd = b_k.to(tl.float32)
        if USE_G or USE_G_GAMMA:
            b_qd = b_qd * tl.exp(b_g)[:, None]
            b_kd = b_kd * tl.exp(tl.where(m_t, b_gl - b_g, 0.0))[:, None]
        if USE_GK:
            b_qd = b_qd * tl.exp(b_gk)
            b_kd = b_kd * tl.exp(tl.where(m_t[:, None], b_gkl[None, :] - b_gk, 0.0))
        if MODE != 1:
            b_o = tl.dot(b_qd.to(b_q.dtype), b_s.to(b_q.dtype))
            # intra-chunk part
            if USE_GK:
                b_A = tl.load(A + (r_t * H + i_h)[:, None] * BT + o_i[None, :], mask=m_t[:, None], other=0.0)
            else:
                b_A = tl.dot(b_q, tl.trans(b_k))
                if USE_G or USE_G_GAMMA:
                    b_A = b_A * tl.exp(tl.where(m_causal, b_g[:, None] - b_g[None, :], 0.0))
            b_A = tl.where(m_causal, b_A, 0.0)
            b_o += tl.dot(b_A.to(b_v.dtype), b_v)
            tl.store(o + p_v, (b_o * scale).to(o.dtype.element_ty), mask=m_tv)
        if MODE != 2:
            # state update
            if USE_G or USE_G_GAMMA:
                b_s = b_s * tl.exp(b_gl)
            if USE_GK:
                b_s = b_s * tl.exp(b_gkl)[:, None]
            b_s += tl.dot(tl.trans(b_kd.to(b_k.dtype)), b_v)

    if STORE_FINAL_STATE and MODE != 2:
        tl.store(ht + i_nh.to(tl.int64) * K * V + o_kv, b_s, mask=m_kv)


@autotune(configs=_CONFIGS, key=["H", "K", "V", "BK", "BV", "USE_G", "USE_G_GAMMA", "USE_GK", "MODE"])
@triton.jit
def chunk_bwd_dh_dv_kernel(
    q, k, do, g, gk, g_gamma, A, dv, dh, dht, dh0, cu_seqlens, chunk_offsets, scale, T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_G: tl.constexpr, USE_G_GAMMA: tl.constexpr, USE_GK: tl.constexpr,
    USE_FINAL_STATE_GRADIENT: tl.constexpr, STORE_INITIAL_STATE_GRADIENT: tl.constexpr,
    IS_VARLEN: tl.constexpr, MODE: tl.constexpr,
):
    # MODE 0: reverse walk storing dh and writing dv. MODE 1: walk, only dh (and dh0).
    # MODE 2: one chunk per program (grid axis 2): dv from the stored dh.
    # MODE 1 also splits the key dimension (block i_k on grid axis 2): dS <- e^{G_last} ⊙ dS +
    # scale (q ⊙ e^G)^T do is independent per key row (scalar and per-key-channel decays), so it
    # needs only its BK columns of q / gk and rows of dh. MODE 0 / 2 need full K for dv (i_k = 0).
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_k = 0
    if MODE == 1:
        i_k = tl.program_id(2)
    i_n, i_h = i_nh // H, i_nh % H
    bos, seq_len, boc = _seq_bounds(cu_seqlens, chunk_offsets, i_n, T, BT, IS_VARLEN)
    NT = tl.cdiv(seq_len, BT)
    o_i = tl.arange(0, BT)
    o_k = i_k * BK + tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    o_kv = o_k[:, None].to(tl.int64) * V + o_v[None, :]
    # transposed causal mask: row j (key), column i (query), i >= j
    m_causal_t = o_i[:, None] <= o_i[None, :]

    b_ds = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_FINAL_STATE_GRADIENT and MODE != 2:
        b_ds += tl.load(dht + i_nh.to(tl.int64) * K * V + o_kv, mask=m_kv, other=0.0).to(tl.float32)
    r_start = 0
    r_end = NT
    if MODE == 2:
        r_start = NT - 1 - tl.program_id(2)
        r_end = tl.minimum(r_start + 1, NT)
        r_start = tl.maximum(r_start, 0)

    for i_r in range(r_start, r_end):
        i_t = NT - 1 - i_r
        o_t = i_t * BT + o_i
        m_t = o_t < seq_len
        r_t = bos + o_t
        p_qk = (r_t * H + i_h)[:, None] * K + o_k[None, :]
        m_qk = m_t[:, None] & m_k[None, :]
        b_q = tl.load(q + p_qk, mask=m_qk, other=0.0)
        b_k = b_q
        if MODE != 1:
            b_k = tl.load(k + p_qk, mask=m_qk, other=0.0)
        p_v = (r_t * H + i_h)[:, None] * V + o_v[None, :]
        m_tv = m_t[:, None] & m_v[None, :]
        b_do = tl.load(do + p_v, mask=m_tv, other=0.0)
        p_dh = dh + ((boc + i_t) * H + i_h) * K * V + o_kv
        if MODE == 2:
            b_ds = tl.load(p_dh, mask=m_kv, other=0.0).to(tl.float32)
        else:
            tl.store(p_dh, b_ds.to(dh.dtype.element_ty), mask=m_kv)
        b_g, b_gl, b_gk, b_gkl = _load_gates(g, gk, g_gamma, bos, i_t, i_h, seq_len, i_k * BK, H, K, BT, BK,
                                             USE_G, USE_G_GAMMA, USE_GK)
        b_qd = b_q.to(tl.float32)
        b_kd = b_k.to(tl.float32)
        if USE_G or USE_G_GAMMA:
            b_qd = b_qd * tl.exp(b_g)[:, None]
            b_kd = b_kd * tl.exp(tl.where(m_t, b_gl - b_g, 0.0))[:, None]
        if USE_GK:
            b_qd = b_qd * tl.exp(b_gk)
            b_kd = b_kd * tl.exp(tl.where(m_t[:, None], b_gkl[None, :] - b_gk, 0.0))
        if MODE != 1:
            # A^T [j, i]
            if USE_GK:
                b_At = tl.trans(tl.load(A + (r_t * H + i_h)[:, None] * BT + o_i[None, :], mask=m_t[:, None],
                                        other=0.0))
            else:
                b_At = tl.dot(b_k, tl.trans(b_q))
                if USE_G or USE_G_GAMMA:
                    b_At = b_At * tl.exp(tl.where(m_causal_t, b_g[None, :] - b_g[:, None], 0.0))
            b_At = tl.where(m_causal_t, b_At, 0.0)
            b_dv = tl.dot(b_At.to(b_do.dtype), b_do) * scale + tl.dot(b_kd.to(b_k.dtype), b_ds.to(b_k.dtype))
            tl.store(dv + p_v, b_dv.to(dv.dtype.element_ty), mask=m_tv)
        if MODE != 2:
            if USE_G or USE_G_GAMMA:
                b_ds = b_ds * tl.exp(b_gl)
            if USE_GK:
                b_ds = b_ds * tl.exp(b_gkl)[:, None]
            b_ds += tl.dot(tl.trans((b_qd * scale).to(b_q.dtype)), b_do)

    if STORE_INITIAL_STATE_GRADIENT and MODE != 2:
        tl.store(dh0 + i_nh.to(tl.int64) * K * V + o_kv, b_ds, mask=m_kv)


def _block_v(K: int, V: int) -> int:
    # K x BV fp32 state in registers: keep it <= 128 x 64 (or 256 x 32). Blocks below 32 are padded:
    # a K=16 dq/dk kernel faulted on the H100 (Triton 3.6) with 16-wide blocks.
    return max(32, min(triton.next_power_of_2(V), 64 if K <= 128 else 32))


def _block_k(K: int) -> int:
    return max(32, triton.next_power_of_2(K))


def split_walk(N: int, H: int, K: int, V: int, device) -> bool:
    """Whether to split the state walk from the output (MODE 1 + MODE 2) instead of fusing (MODE 0).

    The fused walk runs N*H*cdiv(V, 64) programs, each sequential over all chunks. With few programs
    (long sequences, small batch) most SMs idle, and a light walk (states only, 32-wide V blocks and
    64-row K blocks) followed by a chunk-parallel output kernel is faster. The split pays one more
    pass over q/k/v and a round trip of the states, which a fused walk with small heads (K <= 64: a
    cheap step) wins back unless the SMs are badly under-filled. Measured on the H100 (bf16,
    2026-11-22, simple_gla fwd / fwd+bwd ms, fused -> split), [fused-walk programs]:
      (1,16384,16,128) [32]   1.43 / 3.39 -> 0.56 / 1.49      split
      (4,4096,16,128)  [128]  0.37 / 1.07 -> 0.33 / 0.99      split
      (4,4096,32,64)   [128]  0.25 / 1.30 -> 0.28 / 1.45      fused (K = 64)
      (8,2048,16,128)  [256]  0.22 / 1.21 -> 0.34 / 1.29      fused
    Rule: split below half the SMs, or below all SMs when K > 64. Both walks pass the bf16 GPU tests.
    FLACTL_CHUNK_SPLIT=0/1 forces one.
    """
    forced = os.environ.get("FLACTL_CHUNK_SPLIT")
    if forced in ("0", "1"):
        return forced == "1"
    sms = sm_count(device)
    programs = N * H * triton.cdiv(V, 64)
    return programs < sms // 2 or (programs < sms and K > 64)


def _max_chunks(cu_seqlens, T, BT, offs):
    if cu_seqlens is None:
        return triton.cdiv(T, BT)
    return int((offs[1:] - offs[:-1]).max().item())


def _varlen(cu_seqlens, B, T, BT):
    if cu_seqlens is None:
        return B, triton.cdiv(T, BT) * B, None
    offs = prepare_chunk_offsets(cu_seqlens, BT)
    return cu_seqlens.numel() - 1, int(offs[-1].item()), offs


def chunk_fwd_ho(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    g: Optional[torch.Tensor] = None, g_gamma: Optional[torch.Tensor] = None,
    gk: Optional[torch.Tensor] = None, A: Optional[torch.Tensor] = None,
    scale: float = 1.0, initial_state: Optional[torch.Tensor] = None, output_final_state: bool = False,
    store_h: bool = False, cu_seqlens: Optional[torch.Tensor] = None, chunk_size: int = 64,
):
    """Output and (optionally) per-chunk states of gated linear attention.

    q, k [B,T,H,K]; v [B,T,H,V]; g [B,T,H] and gk [B,T,H,K]: chunk-local cumsums (float32) of the
    log-decays; g_gamma [H]; A [B,T,H,BT] float32 intra-chunk scores (required with gk).
    Returns o [B,T,H,V] (v dtype), h [B,NT,H,K,V] or [1,NT_total,H,K,V] (states entering each chunk,
    k dtype) or None, final state [N,H,K,V] float32 or None.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    BT = chunk_size
    N, NT_all, offs = _varlen(cu_seqlens, B, T, BT)
    BK, BV = _block_k(K), _block_v(K, V)
    split = split_walk(N, H, K, V, q.device)
    o = torch.empty_like(v)
    Bh = B if cu_seqlens is None else 1
    h = q.new_empty(Bh, NT_all // Bh, H, K, V, dtype=k.dtype) if (store_h or split) else None
    ht = q.new_empty(N, H, K, V, dtype=torch.float32) if output_final_state else None
    common = dict(H=H, K=K, V=V, BT=BT, BK=BK, USE_G=g is not None, USE_G_GAMMA=g_gamma is not None,
                  USE_GK=gk is not None, USE_INITIAL_STATE=initial_state is not None,
                  STORE_FINAL_STATE=output_final_state, IS_VARLEN=cu_seqlens is not None)
    args = (q, k, v, g, gk, g_gamma, A, o, h, initial_state, ht, cu_seqlens, offs, scale, T)
    if not split:
        chunk_fwd_ho_kernel[(triton.cdiv(V, BV), N * H)](*args, BV=BV, STORE_H=store_h, MODE=0, **common)
    else:
        # light walk: narrower V blocks and key blocks of <= 64 rows -> more, shorter programs (the
        # walk is latency bound: at N*H=16, K=V=128 this is 128 programs instead of 64 on 132 SMs)
        BVw, BKw = 32, min(64, BK)
        chunk_fwd_ho_kernel[(triton.cdiv(V, BVw), N * H, triton.cdiv(K, BKw))](
            *args, BV=BVw, STORE_H=True, MODE=1, **{**common, "BK": BKw})
        grid = (triton.cdiv(V, BV), N * H, _max_chunks(cu_seqlens, T, BT, offs))
        chunk_fwd_ho_kernel[grid](*args, BV=BV, STORE_H=False, MODE=2, **common)
    return o, (h if store_h else None), ht


def chunk_bwd_dh_dv(
    q: torch.Tensor, k: torch.Tensor, do: torch.Tensor,
    g: Optional[torch.Tensor] = None, g_gamma: Optional[torch.Tensor] = None,
    gk: Optional[torch.Tensor] = None, A: Optional[torch.Tensor] = None,
    scale: float = 1.0, dht: Optional[torch.Tensor] = None, need_dh0: bool = False,
    cu_seqlens: Optional[torch.Tensor] = None, chunk_size: int = 64,
):
    """Reverse state walk: returns dv [B,T,H,V] (do dtype), dh [.., NT, H, K, V] (gradient of the state
    leaving each chunk, q dtype) and dh0 [N,H,K,V] float32 (or None)."""
    B, T, H, K = q.shape
    V = do.shape[-1]
    BT = chunk_size
    N, NT_all, offs = _varlen(cu_seqlens, B, T, BT)
    BK, BV = _block_k(K), _block_v(K, V)
    dv = torch.empty_like(do)
    Bh = B if cu_seqlens is None else 1
    dh = q.new_empty(Bh, NT_all // Bh, H, K, V, dtype=q.dtype)
    dh0 = q.new_empty(N, H, K, V, dtype=torch.float32) if need_dh0 else None
    common = dict(H=H, K=K, V=V, BT=BT, BK=BK, USE_G=g is not None, USE_G_GAMMA=g_gamma is not None,
                  USE_GK=gk is not None, USE_FINAL_STATE_GRADIENT=dht is not None,
                  STORE_INITIAL_STATE_GRADIENT=need_dh0, IS_VARLEN=cu_seqlens is not None)
    args = (q, k, do, g, gk, g_gamma, A, dv, dh, dht, dh0, cu_seqlens, offs, scale, T)
    if not split_walk(N, H, K, V, q.device):
        chunk_bwd_dh_dv_kernel[(triton.cdiv(V, BV), N * H)](*args, BV=BV, MODE=0, **common)
    else:
        # light walk over V blocks of 32 and key blocks of <= 64 rows (see chunk_fwd_ho)
        BVw, BKw = 32, min(64, BK)
        chunk_bwd_dh_dv_kernel[(triton.cdiv(V, BVw), N * H, triton.cdiv(K, BKw))](
            *args, BV=BVw, MODE=1, **{**common, "BK": BKw})
        grid = (triton.cdiv(V, BV), N * H, _max_chunks(cu_seqlens, T, BT, offs))
        chunk_bwd_dh_dv_kernel[grid](*args, BV=BV, MODE=2, **common)
    return dv, dh, dh0
