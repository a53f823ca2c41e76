"""Fused recurrent linear attention with decays: one kernel walks the sequence token by token with
the state in registers (decoding, short inputs, and the reference-grade fallback for any length).

Recurrence (per head; S_t in R^{K x V}, all gates log-space, expected <= 0):
    S_t = exp(g_t + g_gamma) * (exp(gk_t)[:, None] * exp(gv_t)[None, :]) ⊙ S_{t-1} + k_t v_t^T
    o_t = scale * q_t^T S_t
``reverse=True`` runs the same recurrence from the last token to the first.

Backward (derived from the math, see README of the gla family):
    dH_t = scale q_t do_t^T + D_{t+1} ⊙ dH_{t+1}      (dH_last = dht)
    dq_t = scale S_t do_t, dk_t = dH_t v_t, dv_t = dH_t^T k_t, dh0 = D_first ⊙ dH_first
Gate gradients need no extra pass over the state: writing the decays as cumulative sums G_t and
substituting q~ = q e^{G}, k~ = k e^{-G} gives dL/dG_t = q_t ⊙ dq_t - k_t ⊙ dk_t (key-side gates),
dL/dGV_t = o_t ⊙ do_t - v_t ⊙ dv_t (value-side gate), plus the final-state term (dht ⊙ S_T summed
over the other axis) on the last position; dgk / dgv / dg are then suffix sums of these over each
sequence (prefix sums when ``reverse``). Positive log-decays are not rejected; they grow the state
exponentially and overflow like the math says.

Grid: (V blocks, N*H). The whole key dim K (<= 256) sits in one program so o_t needs no cross-program
reduction; dq/dk (which reduce over V) are written per V block and summed afterwards.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import triton
import triton.language as tl

from ..utils import validate as val
from ..utils.backend import use_triton
from ..utils.index import cdiv, next_power_of_2, seq_boundaries


@triton.jit
def _decay(g, g_gamma, gk, gv, i_tok, i_h, o_k, o_v, m_k, m_v, b_h, H: tl.constexpr, K: tl.constexpr,
           V: tl.constexpr, USE_G: tl.constexpr, USE_G_GAMMA: tl.constexpr, USE_GK: tl.constexpr,
           USE_GV: tl.constexpr):
    # Multiply the state tile by this token's decays; exps of vectors only, never of the tile.
    if USE_G:
        b_h = b_h * tl.exp(tl.load(g + i_tok * H + i_h).to(tl.float32))
    if USE_G_GAMMA:
        b_h = b_h * tl.exp(tl.load(g_gamma + i_h).to(tl.float32))
    if USE_GK:
        b_gk = tl.load(gk + (i_tok * H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32)
        b_h = b_h * tl.exp(b_gk)[:, None]
    if USE_GV:
        b_gv = tl.load(gv + (i_tok * H + i_h) * V + o_v, mask=m_v, other=0.0).to(tl.float32)
        b_h = b_h * tl.exp(b_gv)[None, :]
    return b_h


@triton.jit
def fused_recurrent_fwd_kernel(
    q, k, v, g, g_gamma, gk, gv, o, h0, ht, cu_seqlens, scale, T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_G: tl.constexpr, USE_G_GAMMA: tl.constexpr, USE_GK: tl.constexpr, USE_GV: tl.constexpr,
    USE_INITIAL_STATE: tl.constexpr, STORE_FINAL_STATE: tl.constexpr, REVERSE: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    i_v, i_nh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_n, i_h = i_nh // H, i_nh % H
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        L = tl.load(cu_seqlens + i_n + 1).to(tl.int64) - bos
    else:
        bos = i_n * T
        L = T
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_h = m_k[:, None] & m_v[None, :]
    p_state = i_nh * K * V + o_k[:, None] * V + o_v[None, :]
    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_INITIAL_STATE:
        b_h += tl.load(h0 + p_state, mask=m_h, other=0.0).to(tl.float32)
    for i in range(0, L):
        if REVERSE:
            i_tok = bos + L - 1 - i
        else:
            i_tok = bos + i
        b_q = tl.load(q + (i_tok * H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32) * scale
        b_k = tl.load(k + (i_tok * H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32)
        b_v = tl.load(v + (i_tok * H + i_h) * V + o_v, mask=m_v, other=0.0).to(tl.float32)
        b_h = _decay(g, g_gamma, gk, gv, i_tok, i_h, o_k, o_v, m_k, m_v, b_h, H, K, V,
                     USE_G, USE_G_GAMMA, USE_GK, USE_GV)
        b_h += b_k[:, None] * b_v[None, :]
        b_o = tl.sum(b_h * b_q[:, None], axis=0)
        tl.store(o + (i_tok * H + i_h) * V + o_v, b_o.to(o.dtype.element_ty), mask=m_v)
    if STORE_FINAL_STATE:
        tl.store(ht + p_state, b_h, mask=m_h)


@triton.jit
def fused_recurrent_bwd_kernel(
    q, k, v, g, g_gamma, gk, gv, h0, do, dht, dq, dk, dv, dh0, odo, cu_seqlens, scale, T, NTOK,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_G: tl.constexpr, USE_G_GAMMA: tl.constexpr, USE_GK: tl.constexpr, USE_GV: tl.constexpr,
    USE_INITIAL_STATE: tl.constexpr, USE_FINAL_STATE_GRADIENT: tl.constexpr, REVERSE: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    i_v, i_nh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_n, i_h = i_nh // H, i_nh % H
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        L = tl.load(cu_seqlens + i_n + 1).to(tl.int64) - bos
    else:
        bos = i_n * T
        L = T
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_h = m_k[:, None] & m_v[None, :]
    p_state = i_nh * K * V + o_k[:, None] * V + o_v[None, :]
    # dq and dk are partial sums over this V block: [NV, NTOK, H, K]
    dq_base = dq + i_v * NTOK * H * K
    dk_base = dk + i_v * NTOK * H * K

    # pass 1 (processing order): recompute S_t, dq_t = scale * S_t do_t
    b_h = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_INITIAL_STATE:
        b_h += tl.load(h0 + p_state, mask=m_h, other=0.0).to(tl.float32)
    for i in range(0, L):
        if REVERSE:
            i_tok = bos + L - 1 - i
        else:
            i_tok = bos + i
        b_k = tl.load(k + (i_tok * H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32)
        b_v = tl.load(v + (i_tok * H + i_h) * V + o_v, mask=m_v, other=0.0).to(tl.float32)
        b_do = tl.load(do + (i_tok * H + i_h) * V + o_v, mask=m_v, other=0.0).to(tl.float32)
        b_h = _decay(g, g_gamma, gk, gv, i_tok, i_h, o_k, o_v, m_k, m_v, b_h, H, K, V,
                     USE_G, USE_G_GAMMA, USE_GK, USE_GV)
        b_h += b_k[:, None] * b_v[None, :]
        b_dq = tl.sum(b_h * b_do[None, :], axis=1) * scale
        tl.store(dq_base + (i_tok * H + i_h) * K + o_k, b_dq, mask=m_k)
        if USE_GV:
            # o_t ⊙ do_t with o_t recomputed in float32 (the saved output may be bf16) for dgv
            b_q = tl.load(q + (i_tok * H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32) * scale
            b_o = tl.sum(b_h * b_q[:, None], axis=0)
            tl.store(odo + (i_tok * H + i_h) * V + o_v, b_o * b_do, mask=m_v)

    # pass 2 (opposite order): dH_t, dk_t, dv_t, then dH <- D_t ⊙ dH
    b_dh = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_FINAL_STATE_GRADIENT:
        b_dh += tl.load(dht + p_state, mask=m_h, other=0.0).to(tl.float32)
    for i in range(0, L):
        if REVERSE:
            i_tok = bos + i
        else:
            i_tok = bos + L - 1 - i
        b_q = tl.load(q + (i_tok * H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32) * scale
        b_k = tl.load(k + (i_tok * H + i_h) * K + o_k, mask=m_k, other=0.0).to(tl.float32)
        b_v = tl.load(v + (i_tok * H + i_h) * V + o_v, mask=m_v, other=0.0).to(tl.float32)
        b_do = tl.load(do + (i_tok * H + i_h) * V + o_v, mask=m_v, other=0.0).to(tl.float32)
        b_dh += b_q[:, None] * b_do[None, :]
        b_dk = tl.sum(b_dh * b_v[None, :], axis=1)
        b_dv = tl.sum(b_dh * b_k[:, None], axis=0)
        tl.store(dk_base + (i_tok * H + i_h) * K + o_k, b_dk, mask=m_k)
        tl.store(dv + (i_tok * H + i_h) * V + o_v, b_dv.to(dv.dtype.element_ty), mask=m_v)
        b_dh = _decay(g, g_gamma, gk, gv, i_tok, i_h, o_k, o_v, m_k, m_v, b_dh, H, K, V,
                      USE_G, USE_G_GAMMA, USE_GK, USE_GV)
    if USE_INITIAL_STATE:
        tl.store(dh0 + p_state, b_dh.to(dh0.dtype.element_ty), mask=m_h)


@triton.jit
def gate_grad_kernel(
    a, da, b, db, c, out, cu_seqlens, T,
    H: tl.constexpr, S: tl.constexpr, BT: tl.constexpr, BS: tl.constexpr,
    REDUCE: tl.constexpr, HAS_C: tl.constexpr, HAS_DA: tl.constexpr, REVERSE: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    """out_t = sum over later steps s (earlier when REVERSE) of (a ⊙ da - b ⊙ db)_s, plus c on every
    step (final-state term); REDUCE sums over the S axis first (scalar gate). Inputs [B, T, H, S].
    Without HAS_DA, ``a`` already holds the product."""
    i_s, i_nh = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    i_n, i_h = i_nh // H, i_nh % H
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        L = tl.load(cu_seqlens + i_n + 1).to(tl.int64) - bos
    else:
        bos = i_n * T
        L = T
    o_s = i_s * BS + tl.arange(0, BS)
    m_s = o_s < S
    if HAS_C:
        b_c = tl.load(c + i_nh * S + o_s, mask=m_s, other=0.0).to(tl.float32)
    else:
        b_c = tl.zeros([BS], dtype=tl.float32)
    if REDUCE:
        carry = tl.sum(b_c, axis=0)  # a scalar: 1-sized tensors trip Triton 3.6's layout pass
    else:
        carry = b_c
    NC = tl.cdiv(L, BT)
    for i_c in range(0, NC):
        # suffix sums walk chunks from the end; prefix sums (REVERSE) from the start
        if REVERSE:
            start = i_c * BT
        else:
            start = (NC - 1 - i_c) * BT
        o_t = start + tl.arange(0, BT)
        m_t = o_t < L
        p = ((bos + o_t[:, None]) * H + i_h) * S + o_s[None, :]
        m = m_t[:, None] & m_s[None, :]
        b_x = tl.load(a + p, mask=m, other=0.0).to(tl.float32)
        if HAS_DA:
            b_x = b_x * tl.load(da + p, mask=m, other=0.0).to(tl.float32)
        b_x -= tl.load(b + p, mask=m, other=0.0).to(tl.float32) * tl.load(db + p, mask=m, other=0.0).to(tl.float32)
        if REDUCE:
            b_r = tl.sum(b_x, axis=1)
            if REVERSE:
                b_o = tl.cumsum(b_r, axis=0) + carry
            else:
                b_o = tl.sum(b_r, axis=0) - tl.cumsum(b_r, axis=0) + b_r + carry
            carry = carry + tl.sum(b_r, axis=0)
            tl.store(out + (bos + o_t) * H + i_h, b_o.to(out.dtype.element_ty), mask=m_t)
        else:
            if REVERSE:
                b_o = tl.cumsum(b_x, axis=0) + carry[None, :]
            else:
                b_o = tl.sum(b_x, axis=0)[None, :] - tl.cumsum(b_x, axis=0) + b_x + carry[None, :]
            carry = carry + tl.sum(b_x, axis=0)
            tl.store(out + p, b_o.to(out.dtype.element_ty), mask=m)


def _block_v(K: int, V: int, NH: int, max_tile: int = 4096) -> int:
    """V block: the whole K column block stays in registers; keep the tile <= max_tile fp32 values
    and split V further when there are too few (sequence, head) pairs to fill the GPU."""
    BK = next_power_of_2(K)
    BV = min(next_power_of_2(V), max(max_tile // BK, 8))
    while BV > 16 and NH * cdiv(V, BV) < 256:
        BV //= 2
    return BV


@functools.lru_cache(maxsize=1024)
def _fwd_config(K: int, V: int, NH: int):
    """(BK, BV, num_warps, number of V blocks) of the forward launch, cached per shape: decoding asks
    for the same shape every step, so the block search runs once instead of on every token."""
    BK = next_power_of_2(K)
    # H100 sweep (B=256, H=32, D=128 decode): 128x64 tiles with 4 warps beat 128x32 by ~3%
    BV = _block_v(K, V, NH, max_tile=8192)
    return BK, BV, 4 if BK * BV <= 8192 else 8, cdiv(V, BV)


def fused_recurrent_fwd(q, k, v, g=None, g_gamma=None, gk=None, gv=None, scale=1.0, initial_state=None,
                        output_final_state=False, reverse=False, cu_seqlens=None, _config=None):
    """Launch the forward kernel. Returns (o [B,T,H,V] in v's dtype, ht [N,H,K,V] float32 or None)."""
    B, T, H, K = q.shape
    V = v.shape[3]
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    if _config is None:
        BK, BV, num_warps, NV = _fwd_config(K, V, N * H)
    else:  # an explicit (BV, num_warps), e.g. from scripts/gpu_recurrent.py's sweep
        BV, num_warps = _config
        BK, NV = next_power_of_2(K), cdiv(V, BV)
    o = torch.empty(B, T, H, V, dtype=v.dtype, device=v.device)
    ht = torch.empty(N, H, K, V, dtype=torch.float32, device=q.device) if output_final_state else None
    grid = (NV, N * H)
    fused_recurrent_fwd_kernel[grid](
        q, k, v, g, g_gamma, gk, gv, o, initial_state, ht, cu_seqlens, scale, T,
        H=H, K=K, V=V, BK=BK, BV=BV, USE_G=g is not None, USE_G_GAMMA=g_gamma is not None,
        USE_GK=gk is not None, USE_GV=gv is not None, USE_INITIAL_STATE=initial_state is not None,
        STORE_FINAL_STATE=output_final_state, REVERSE=reverse, IS_VARLEN=cu_seqlens is not None,
        num_warps=num_warps,
    )
    return o, ht


def _gate_grad(a, da, b, db, c, reduce, reverse, cu_seqlens, out_dtype):
    B, T, H, S = a.shape
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    BS = next_power_of_2(S) if reduce else min(next_power_of_2(S), 64)
    out = torch.empty((B, T, H) if reduce else (B, T, H, S), dtype=out_dtype, device=a.device)
    grid = (1 if reduce else cdiv(S, BS), N * H)
    gate_grad_kernel[grid](a, da, b, db, c, out, cu_seqlens, T, H=H, S=S, BT=32, BS=BS, REDUCE=reduce,
                           HAS_C=c is not None, HAS_DA=da is not None, REVERSE=reverse,
                           IS_VARLEN=cu_seqlens is not None)
    return out


def fused_recurrent_bwd(q, k, v, g, g_gamma, gk, gv, ht, do, dht, scale, initial_state, reverse, cu_seqlens):
    """Gradients (dq, dk, dv, dg, dg_gamma, dgk, dgv, dh0); None where the input was not given."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    BK = next_power_of_2(K)
    BV = _block_v(K, V, N * H)  # two tiles (S and dS) live in registers here
    NV = cdiv(V, BV)
    dq = torch.empty(NV, B, T, H, K, dtype=torch.float32, device=q.device)
    dk = torch.empty(NV, B, T, H, K, dtype=torch.float32, device=q.device)
    dv = torch.empty(B, T, H, V, dtype=torch.float32, device=q.device)
    dh0 = torch.empty_like(initial_state, dtype=torch.float32) if initial_state is not None else None
    odo = torch.empty(B, T, H, V, dtype=torch.float32, device=q.device) if gv is not None else None
    fused_recurrent_bwd_kernel[(NV, N * H)](
        q, k, v, g, g_gamma, gk, gv, initial_state, do, dht, dq, dk, dv, dh0, odo, cu_seqlens, scale, T, B * T,
        H=H, K=K, V=V, BK=BK, BV=BV, USE_G=g is not None, USE_G_GAMMA=g_gamma is not None,
        USE_GK=gk is not None, USE_GV=gv is not None, USE_INITIAL_STATE=initial_state is not None,
        USE_FINAL_STATE_GRADIENT=dht is not None, REVERSE=reverse, IS_VARLEN=cu_seqlens is not None,
        num_warps=4 if BK * BV <= 4096 else 8,
    )
    dq, dk = dq.sum(0), dk.sum(0)
    dg = dg_gamma = dgk = dgv = None
    use_dht = dht is not None and ht is not None
    if g is not None or g_gamma is not None or gk is not None:
        c = (dht * ht).sum(-1).view(N * H, K) if use_dht else None  # final-state term per key row
        if gk is not None:
            dgk = _gate_grad(q, dq, k, dk, c, False, reverse, cu_seqlens, gk.dtype)
        if g is not None or g_gamma is not None:
            dg32 = _gate_grad(q, dq, k, dk, c, True, reverse, cu_seqlens, torch.float32)
            dg = dg32.to(g.dtype) if g is not None else None
            dg_gamma = dg32.sum((0, 1)).to(g_gamma.dtype) if g_gamma is not None else None
    if gv is not None:
        c = (dht * ht).sum(-2).view(N * H, V) if use_dht else None
        dgv = _gate_grad(odo, None, v, dv, c, False, reverse, cu_seqlens, gv.dtype)
    dh0 = dh0.to(initial_state.dtype) if dh0 is not None else None
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dg, dg_gamma, dgk, dgv, dh0


class FusedRecurrentFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, g, g_gamma, gk, gv, scale, initial_state, output_final_state, reverse, cu_seqlens):
        o, ht = fused_recurrent_fwd(q, k, v, g, g_gamma, gk, gv, scale, initial_state, output_final_state,
                                    reverse, cu_seqlens)
        ctx.save_for_backward(q, k, v, g, g_gamma, gk, gv, ht, initial_state, cu_seqlens)
        ctx.scale, ctx.reverse = scale, reverse
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, g, g_gamma, gk, gv, ht, initial_state, cu_seqlens = ctx.saved_tensors
        dq, dk, dv, dg, dg_gamma, dgk, dgv, dh0 = fused_recurrent_bwd(
            q, k, v, g, g_gamma, gk, gv, ht, do.contiguous(),
            dht.contiguous() if dht is not None else None, ctx.scale, initial_state, ctx.reverse, cu_seqlens)
        return dq, dk, dv, dg, dg_gamma, dgk, dgv, None, dh0, None, None, None


def torch_fused_recurrent(q, k, v, g=None, g_gamma=None, gk=None, gv=None, scale=1.0, initial_state=None,
                          output_final_state=False, reverse=False, cu_seqlens=None):
    """Vectorised torch path (CPU): the recurrence over time, batched over (batch, head); autograd
    differentiates it. Computes in float32, returns o in v's dtype and a float32 state."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    f32 = torch.float32
    qf, kf, vf = q.to(f32) * scale, k.to(f32), v.to(f32)
    o = []
    finals = []
    for n, (b, bos, eos) in enumerate(seq_boundaries(cu_seqlens, B, T) if cu_seqlens is not None
                                      else [(slice(None), 0, T)]):
        bs = B if cu_seqlens is None else 1
        S = q.new_zeros(bs, H, K, V, dtype=f32)
        if initial_state is not None:
            S = S + (initial_state.to(f32) if cu_seqlens is None else initial_state[n:n + 1].to(f32))
        outs = [None] * (eos - bos)
        steps = range(eos - 1, bos - 1, -1) if reverse else range(bos, eos)
        for t in steps:
            d = torch.ones(bs, H, 1, 1, dtype=f32, device=q.device)
            if g is not None:
                d = d * g[b, t].to(f32).exp().view(bs, H, 1, 1)
            if g_gamma is not None:
                d = d * g_gamma.to(f32).exp().view(1, H, 1, 1)
            if gk is not None:
                d = d * gk[b, t].to(f32).exp().view(bs, H, K, 1)
            if gv is not None:
                d = d * gv[b, t].to(f32).exp().view(bs, H, 1, V)
            S = d * S + kf[b, t].view(bs, H, K, 1) * vf[b, t].view(bs, H, 1, V)
            outs[t - bos] = torch.einsum("bhk,bhkv->bhv", qf[b, t].view(bs, H, K), S)
        o.append(torch.stack(outs, 1) if outs else q.new_zeros(bs, 0, H, V, dtype=f32))
        finals.append(S)
    o = torch.cat(o, 1).to(v.dtype)
    return o, (torch.cat(finals, 0) if output_final_state else None)


def _gate_ok(t, shape, dev) -> bool:
    return isinstance(t, torch.Tensor) and t.shape == shape and t.is_floating_point() and t.device == dev


def _fast_valid(q, k, v, g, g_gamma, gk, gv, h0) -> bool:
    """Cheap all-good check for the decoding hot path (a few µs matter at T=1); any failure falls
    through to ``_validate``, which names the bad argument. It accepts only what ``_validate``
    accepts (the same conditions, written as few tensor-attribute reads as possible: each costs
    ~0.1-0.2 µs), so no ValueError is lost. Call with cu_seqlens None (N == B)."""
    if not (isinstance(q, torch.Tensor) and isinstance(k, torch.Tensor) and isinstance(v, torch.Tensor)):
        return False
    shape, v_shape = q.shape, v.shape
    if len(shape) != 4 or len(v_shape) != 4 or k.shape != shape:
        return False
    B, T, H, K = shape
    Bv, Tv, Hv, V = v_shape
    if Bv != B or Tv != T or Hv != H or not (0 < K <= val.MAX_HEAD_DIM and 0 < V <= val.MAX_HEAD_DIM):
        return False
    if not (q.is_floating_point() and k.is_floating_point() and v.is_floating_point()):
        return False
    dev = q.device
    if k.device != dev or v.device != dev:
        return False
    # the optional tensors: one test each when absent (the common decode call passes g and h0 only)
    return ((g is None or _gate_ok(g, (B, T, H), dev))
            and (g_gamma is None or _gate_ok(g_gamma, (H,), dev))
            and (gk is None or _gate_ok(gk, shape, dev))
            and (gv is None or _gate_ok(gv, v_shape, dev))
            and (h0 is None or _gate_ok(h0, (B, H, K, V), dev)))


def _validate(q, k, v, g, g_gamma, gk, gv, initial_state, cu_seqlens, state_v_first):
    B, T, H, _, K, V = val.check_qkv(q, k, v)
    N = val.check_cu_seqlens(cu_seqlens, B, T)
    val.check_gate("g", g, (B, T, H), "[B, T, H]")
    val.check_gate("g_gamma", g_gamma, (H,), "[H]")
    val.check_gate("gk", gk, (B, T, H, K), "[B, T, H, K]")
    val.check_gate("gv", gv, (B, T, H, V), "[B, T, H, V]")
    if initial_state is not None:
        val.check_floating("initial_state", initial_state)
        if state_v_first:
            val.check_rank("initial_state", initial_state, 4, "[N, H, V, K]")
            val.check_shape("initial_state", initial_state, (N, H, V, K), "[N, H, V, K]")
        else:
            val.check_initial_state(initial_state, N, H, K, V)
    val.check_same_device(q=q, g=g, g_gamma=g_gamma, gk=gk, gv=gv, initial_state=initial_state,
                          cu_seqlens=cu_seqlens)


def fused_recurrent(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: Optional[torch.Tensor] = None,
    g_gamma: Optional[torch.Tensor] = None,
    gk: Optional[torch.Tensor] = None,
    gv: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    reverse: bool = False,
    state_v_first: bool = False,
    cu_seqlens: Optional[torch.LongTensor] = None,
):
    """Generic fused recurrent linear attention with any combination of decays.

    Args:
        q, k: [B, T, H, K]; v: [B, T, H, V].
        g: scalar log-decay [B, T, H]; g_gamma: constant per-head log-decay [H];
        gk: key-side log-decay [B, T, H, K]; gv: value-side log-decay [B, T, H, V].
        scale: defaults to K ** -0.5.
        initial_state: [N, H, K, V] (any float dtype; N = B, or the number of sequences in cu_seqlens).
        output_final_state: also return the float32 state [N, H, K, V].
        reverse: run from the last token to the first.
        state_v_first: states (initial and final) are laid out [N, H, V, K] instead of [N, H, K, V].
        cu_seqlens: int [N+1] offsets of packed sequences (requires B == 1).
    Returns:
        (o [B, T, H, V] in v's dtype, final_state float32 [N, H, K, V] or None)

    Example:
        >>> q, k, v = (torch.randn(2, 5, 4, 16) for _ in range(3))
        >>> g = torch.rand(2, 5, 4).log()
        >>> o, ht = fused_recurrent(q, k, v, g=g, output_final_state=True)
    """
    if not (cu_seqlens is None and not state_v_first and _fast_valid(q, k, v, g, g_gamma, gk, gv, initial_state)):
        _validate(q, k, v, g, g_gamma, gk, gv, initial_state, cu_seqlens, state_v_first)
    if state_v_first:
        # the kernels keep [K, V]; transposing at the boundary keeps one kernel per layout
        if initial_state is not None:
            initial_state = initial_state.transpose(-1, -2)
        o, ht = fused_recurrent(q, k, v, g, g_gamma, gk, gv, scale, initial_state, output_final_state,
                                reverse, False, cu_seqlens)
        return o, (ht.transpose(-1, -2).contiguous() if ht is not None else None)
    K = q.shape[-1]
    scale = K ** -0.5 if scale is None else float(scale)
    if not use_triton(q):
        return torch_fused_recurrent(q, k, v, g, g_gamma, gk, gv, scale, initial_state, output_final_state,
                                     reverse, cu_seqlens)
    # .contiguous() returns the tensor itself when it already is; the None tests spare the calls
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    if g is not None:
        g = g.contiguous()
    if g_gamma is not None:
        g_gamma = g_gamma.contiguous()
    if gk is not None:
        gk = gk.contiguous()
    if gv is not None:
        gv = gv.contiguous()
    if initial_state is not None:
        initial_state = initial_state.contiguous()
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                       for t in (q, k, v, g, g_gamma, gk, gv, initial_state)):
        return FusedRecurrentFunction.apply(q, k, v, g, g_gamma, gk, gv, scale, initial_state,
                                            output_final_state, reverse, cu_seqlens)
    # inference (decoding): skip autograd bookkeeping, it is most of a T=1 call's host time
    return fused_recurrent_fwd(q, k, v, g, g_gamma, gk, gv, scale, initial_state, output_final_state, reverse,
                               cu_seqlens)
