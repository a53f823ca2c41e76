"""Triton kernels for row normalisation: RMSNorm, LayerNorm, GroupNorm, L2 norm, gated variants.

One forward and one backward kernel cover every variant through constexpr flags.
Input is viewed as ``[M, G, N]``: M rows (tokens), G groups (1 unless GroupNorm), N features per
group; statistics are per (row, group); weight/bias have ``G * N`` entries.

Forward, per (row, group):
    x    = x (+ residual)                               residual sum stored for prenorm/backward
    mean = sum(x)/N  (LayerNorm only, else 0)
    rstd = 1/sqrt(sum((x-mean)^2)/N + eps)     (L2 norm: sum instead of mean, no 1/N)
    xhat = (x-mean)*rstd;  y = xhat*w + b;  gated: y = y * act(g)
Backward (dy already multiplied by act(g) for gated norms; wdy = dy*w):
    dx = rstd * (wdy - xhat * c1 - c2),  c1 = sum(wdy*xhat)/N', c2 = sum(wdy)/N (LayerNorm only)
    dw = sum_rows dy*xhat,  db = sum_rows dy,  dg = dy_out * y * act'(g)
The backward runs persistent programs that each own a contiguous row range and accumulate dw/db
in registers; partial sums [P, G*N] are reduced in torch (P ~ 4 x SMs, negligible traffic).
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ._common import next_pow2, num_programs_cap

MAX_FEATURES = 65536


@triton.jit
def _act_fwd(g, ACT: tl.constexpr):
    s = tl.sigmoid(g)
    if ACT == 0:
        return g * s
    else:
        return s


@triton.jit
def _act_grad(g, ACT: tl.constexpr):
    s = tl.sigmoid(g)
    if ACT == 0:
        return s * (1.0 + g * (1.0 - s))
    else:
        return s * (1.0 - s)


@triton.jit
def norm_fwd_kernel(X, RES, W, B, GATE, Y, RES_OUT, MEAN, RSTD,
                    M, N, G, eps,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    IS_RMS: tl.constexpr, IS_L2: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
                    HAS_RES: tl.constexpr, STORE_RES: tl.constexpr, HAS_GATE: tl.constexpr,
                    ACT: tl.constexpr, STORE_STATS: tl.constexpr):
    i_m = tl.program_id(0)
    i_g = tl.program_id(1)
    o_m = i_m * BLOCK_M + tl.arange(0, BLOCK_M)
    o_n = tl.arange(0, BLOCK_N)
    m_m = o_m < M
    m_n = o_n < N
    mask = m_m[:, None] & m_n[None, :]
    offs = o_m.to(tl.int64)[:, None] * (G * N) + i_g * N + o_n[None, :]
    b_x = tl.load(X + offs, mask=mask, other=0.).to(tl.float32)
    if HAS_RES:
        b_x += tl.load(RES + offs, mask=mask, other=0.).to(tl.float32)
    if STORE_RES:
        tl.store(RES_OUT + offs, b_x.to(RES_OUT.dtype.element_ty), mask=mask)
    if IS_RMS:
        b_xc = b_x
    else:
        b_mean = tl.sum(b_x, axis=1) / N
        b_xc = tl.where(mask, b_x - b_mean[:, None], 0.)
    if IS_L2:
        b_var = tl.sum(b_xc * b_xc, axis=1)
    else:
        b_var = tl.sum(b_xc * b_xc, axis=1) / N
    b_rstd = 1. / tl.sqrt(b_var + eps)
    if STORE_STATS:
        o_s = o_m.to(tl.int64) * G + i_g
        tl.store(RSTD + o_s, b_rstd, mask=m_m)
        if not IS_RMS:
            tl.store(MEAN + o_s, b_mean, mask=m_m)
    b_y = b_xc * b_rstd[:, None]
    if HAS_W:
        b_w = tl.load(W + i_g * N + o_n, mask=m_n, other=0.).to(tl.float32)
        b_y = b_y * b_w[None, :]
    if HAS_B:
        b_b = tl.load(B + i_g * N + o_n, mask=m_n, other=0.).to(tl.float32)
        b_y = b_y + b_b[None, :]
    if HAS_GATE:
        b_g = tl.load(GATE + offs, mask=mask, other=0.).to(tl.float32)
        b_y = b_y * _act_fwd(b_g, ACT)
    tl.store(Y + offs, b_y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def norm_bwd_kernel(X, W, B, GATE, MEAN, RSTD, DY, DRES_OUT, DX, DG, DW_PART, DB_PART,
                    M, N, G, rows_per_prog,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    IS_RMS: tl.constexpr, IS_L2: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
                    HAS_DRES: tl.constexpr, HAS_GATE: tl.constexpr, ACT: tl.constexpr):
    i_p = tl.program_id(0)
    i_g = tl.program_id(1)
    o_n = tl.arange(0, BLOCK_N)
    m_n = o_n < N
    if HAS_W:
        b_w = tl.load(W + i_g * N + o_n, mask=m_n, other=0.).to(tl.float32)
    if HAS_B:
        b_b = tl.load(B + i_g * N + o_n, mask=m_n, other=0.).to(tl.float32)
    b_dw = tl.zeros([BLOCK_N], dtype=tl.float32)
    b_db = tl.zeros([BLOCK_N], dtype=tl.float32)
    row_start = i_p * rows_per_prog
    row_end = tl.minimum(row_start + rows_per_prog, M)
    for r0 in range(row_start, row_end, BLOCK_M):
        o_m = r0 + tl.arange(0, BLOCK_M)
        m_m = o_m < row_end
        mask = m_m[:, None] & m_n[None, :]
        offs = o_m.to(tl.int64)[:, None] * (G * N) + i_g * N + o_n[None, :]
        o_s = o_m.to(tl.int64) * G + i_g
        b_x = tl.load(X + offs, mask=mask, other=0.).to(tl.float32)
        b_rstd = tl.load(RSTD + o_s, mask=m_m, other=0.)
        if IS_RMS:
            b_xhat = b_x * b_rstd[:, None]
        else:
            b_mean = tl.load(MEAN + o_s, mask=m_m, other=0.)
            b_xhat = tl.where(mask, (b_x - b_mean[:, None]) * b_rstd[:, None], 0.)
        b_dy = tl.load(DY + offs, mask=mask, other=0.).to(tl.float32)
        if HAS_GATE:
            b_y = b_xhat
            if HAS_W:
                b_y = b_y * b_w[None, :]
            if HAS_B:
                b_y = b_y + b_b[None, :]
            b_g = tl.load(GATE + offs, mask=mask, other=0.).to(tl.float32)
            b_dg = b_dy * b_y * _act_grad(b_g, ACT)
            tl.store(DG + offs, b_dg.to(DG.dtype.element_ty), mask=mask)
            b_dy = b_dy * _act_fwd(b_g, ACT)
        if HAS_W:
            b_dw += tl.sum(b_dy * b_xhat, axis=0)
            b_wdy = b_dy * b_w[None, :]
        else:
            b_wdy = b_dy
        if HAS_B:
            b_db += tl.sum(b_dy, axis=0)
        if IS_L2:
            b_c1 = tl.sum(b_wdy * b_xhat, axis=1)
        else:
            b_c1 = tl.sum(b_wdy * b_xhat, axis=1) / N
        if IS_RMS:
            b_dx = (b_wdy - b_xhat * b_c1[:, None]) * b_rstd[:, None]
        else:
            b_c2 = tl.sum(b_wdy, axis=1) / N
            b_dx = (b_wdy - b_xhat * b_c1[:, None] - b_c2[:, None]) * b_rstd[:, None]
        if HAS_DRES:
            b_dx += tl.load(DRES_OUT + offs, mask=mask, other=0.).to(tl.float32)
        tl.store(DX + offs, b_dx.to(DX.dtype.element_ty), mask=mask)
    o_p = i_p.to(tl.int64) * (G * N) + i_g * N + o_n
    if HAS_W:
        tl.store(DW_PART + o_p, b_dw, mask=m_n)
    if HAS_B:
        tl.store(DB_PART + o_p, b_db, mask=m_n)


def _tiles(N: int):
    BLOCK_N = next_pow2(N)
    if BLOCK_N > MAX_FEATURES:
        raise ValueError(f"normalised dimension {N} exceeds the supported maximum {MAX_FEATURES}")
    BLOCK_M = max(1, min(64, 4096 // BLOCK_N))
    tile = BLOCK_M * BLOCK_N
    num_warps = 1 if tile <= 512 else 2 if tile <= 1024 else 4 if tile < 4096 else 8 if tile <= 16384 else 16
    return BLOCK_M, BLOCK_N, num_warps


def norm_fwd(x2: torch.Tensor, weight, bias, residual2, eps: float, *, groups: int = 1, is_rms: bool,
             is_l2: bool = False, gate2=None, act: int = 0, residual_dtype=None, store_stats=True):
    """x2, residual2, gate2: [M, G*N] contiguous. Returns (y, residual_out or None, mean, rstd)."""
    M, C = x2.shape
    N = C // groups
    y = torch.empty_like(x2)
    res_out = None
    if residual2 is not None or residual_dtype is not None:
        res_out = torch.empty(M, C, dtype=residual_dtype or x2.dtype, device=x2.device)
    rstd = torch.empty(M * groups, dtype=torch.float32, device=x2.device)
    mean = None if is_rms else torch.empty(M * groups, dtype=torch.float32, device=x2.device)
    BLOCK_M, BLOCK_N, num_warps = _tiles(N)
    grid = (triton.cdiv(M, BLOCK_M), groups)
    if M > 0:
        norm_fwd_kernel[grid](
            x2, residual2, weight, bias, gate2, y, res_out, mean, rstd, M, N, groups, eps,
            BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, IS_RMS=is_rms, IS_L2=is_l2, HAS_W=weight is not None,
            HAS_B=bias is not None, HAS_RES=residual2 is not None, STORE_RES=res_out is not None,
            HAS_GATE=gate2 is not None, ACT=act, STORE_STATS=store_stats, num_warps=num_warps)
    return y, res_out, mean, rstd


def norm_bwd(dy2, x2, weight, bias, mean, rstd, *, groups: int = 1, is_rms: bool, is_l2: bool = False,
             gate2=None, act: int = 0, dres_out2: Optional[torch.Tensor] = None, x_dtype=None):
    """Returns (dx, dweight, dbias, dgate). x2 is the normalised input (the residual sum if any)."""
    M, C = x2.shape
    N = C // groups
    dx = torch.empty(M, C, dtype=x_dtype or x2.dtype, device=x2.device)
    dg = torch.empty_like(gate2) if gate2 is not None else None
    BLOCK_M, BLOCK_N, num_warps = _tiles(N)
    P = max(1, min(num_programs_cap(x2.device), triton.cdiv(M, BLOCK_M)))
    rows_per_prog = triton.cdiv(triton.cdiv(M, P), BLOCK_M) * BLOCK_M if M > 0 else BLOCK_M
    P = max(1, triton.cdiv(M, rows_per_prog))
    dw_part = torch.empty(P, C, dtype=torch.float32, device=x2.device) if weight is not None else None
    db_part = torch.empty(P, C, dtype=torch.float32, device=x2.device) if bias is not None else None
    if M > 0:
        norm_bwd_kernel[(P, groups)](
            x2, weight, bias, gate2, mean, rstd, dy2, dres_out2, dx, dg, dw_part, db_part,
            M, N, groups, rows_per_prog, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, IS_RMS=is_rms, IS_L2=is_l2,
            HAS_W=weight is not None, HAS_B=bias is not None, HAS_DRES=dres_out2 is not None,
            HAS_GATE=gate2 is not None, ACT=act, num_warps=num_warps)
        dw = dw_part.sum(0).to(weight.dtype) if weight is not None else None
        db = db_part.sum(0).to(bias.dtype) if bias is not None else None
    else:
        dw = torch.zeros_like(weight) if weight is not None else None
        db = torch.zeros_like(bias) if bias is not None else None
    return dx, dw, db, dg
