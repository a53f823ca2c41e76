"""Fused cross entropy over rows of logits ``[N, V]`` (any V: 32000, 128256, 151936, ...).

Per row with ``z = logit_scale * logits`` and smoothing ``eps``:
    lse  = log sum_j exp(z_j)
    loss = lse - (1-eps) z_y - eps/V sum_j z_j  (+ lse_square_scale * lse^2, the z-loss)
    dz_j = softmax_j - (1-eps)[j == y] - eps/V  (+ 2 lse_square_scale lse softmax_j);  dlogits = scale * dz
Rows whose target is ``ignore_index`` have loss 0 and gradient 0; ``mean`` divides by the number of
non-ignored rows (as ``F.cross_entropy``). One program per row streams the vocabulary in blocks with
an online max / sum-exp kept per lane (one pass), a second pass writes the gradient when requested.
``ce_with_grad`` writes the gradient in place into the logits buffer: it is the core of the fused
linear cross entropy (no second [N, V] buffer).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import triton
import triton.language as tl

from ._common import check_float, use_triton

__all__ = ["FusedCrossEntropyLoss", "cross_entropy_loss", "ce_with_grad", "REDUCTIONS"]

REDUCTIONS = ("mean", "sum", "none")


@triton.jit
def ce_fwd_kernel(LOGITS, stride, TARGET, LOSS, LSE, V, ignore_index, eps, scale, lse_sq, grad_scale,
                  BLOCK_V: tl.constexpr, COMPUTE_GRAD: tl.constexpr):
    i_n = tl.program_id(0).to(tl.int64)
    p_row = LOGITS + i_n * stride
    y = tl.load(TARGET + i_n).to(tl.int64)
    ignored = y == ignore_index
    o_v = tl.arange(0, BLOCK_V)
    b_m = tl.full([BLOCK_V], -1e30, dtype=tl.float32)
    b_s = tl.zeros([BLOCK_V], dtype=tl.float32)
    b_sz = tl.zeros([BLOCK_V], dtype=tl.float32)
    for v0 in range(0, V, BLOCK_V):
        m_v = (v0 + o_v) < V
        b_z = tl.load(p_row + v0 + o_v, mask=m_v, other=float("-inf")).to(tl.float32) * scale
        b_mn = tl.maximum(b_m, b_z)
        b_s = b_s * tl.exp(b_m - b_mn) + tl.exp(b_z - b_mn)
        b_m = b_mn
        b_sz += tl.where(m_v, b_z, 0.)
    m = tl.max(b_m, axis=0)
    lse = m + tl.log(tl.sum(b_s * tl.exp(b_m - m), axis=0))
    y_safe = tl.where(ignored, 0, y)
    z_y = tl.load(p_row + y_safe).to(tl.float32) * scale
    loss = lse - (1. - eps) * z_y - eps / V * tl.sum(b_sz, axis=0) + lse_sq * lse * lse
    loss = tl.where(ignored, 0., loss)
    tl.store(LOSS + i_n, loss)
    tl.store(LSE + i_n, lse)
    if COMPUTE_GRAD:
        keep = tl.where(ignored, 0., grad_scale * scale)
        for v0 in range(0, V, BLOCK_V):
            m_v = (v0 + o_v) < V
            b_z = tl.load(p_row + v0 + o_v, mask=m_v, other=0.).to(tl.float32) * scale
            b_p = tl.exp(b_z - lse)
            b_g = b_p * (1. + 2. * lse_sq * lse) - eps / V - tl.where(v0 + o_v == y, 1. - eps, 0.)
            tl.store(p_row + v0 + o_v, (b_g * keep).to(LOGITS.dtype.element_ty), mask=m_v)


@triton.jit
def ce_bwd_kernel(LOGITS, stride, DLOGITS, d_stride, TARGET, LSE, DLOSS, V, ignore_index, eps, scale, lse_sq,
                  dloss_scale, BLOCK_V: tl.constexpr, PER_ROW: tl.constexpr):
    i_n = tl.program_id(0).to(tl.int64)
    y = tl.load(TARGET + i_n).to(tl.int64)
    lse = tl.load(LSE + i_n)
    if PER_ROW:
        dl = tl.load(DLOSS + i_n).to(tl.float32) * dloss_scale
    else:
        dl = tl.load(DLOSS).to(tl.float32) * dloss_scale
    keep = tl.where(y == ignore_index, 0., dl * scale)
    o_v = tl.arange(0, BLOCK_V)
    for v0 in range(0, V, BLOCK_V):
        m_v = (v0 + o_v) < V
        b_z = tl.load(LOGITS + i_n * stride + v0 + o_v, mask=m_v, other=0.).to(tl.float32) * scale
        b_p = tl.exp(b_z - lse)
        b_g = b_p * (1. + 2. * lse_sq * lse) - eps / V - tl.where(v0 + o_v == y, 1. - eps, 0.)
        tl.store(DLOGITS + i_n * d_stride + v0 + o_v, (b_g * keep).to(DLOGITS.dtype.element_ty), mask=m_v)


def _block_v(V: int) -> int:
    return min(triton.next_power_of_2(V), 4096 if torch.cuda.is_available() else 1024)


def _ce_torch(logits, target, ignore_index, eps, scale, lse_sq):
    """Per-row loss and lse in float32 (torch path)."""
    z = logits.float() * scale
    lse = torch.logsumexp(z, dim=-1)
    ignored = target == ignore_index
    y = torch.where(ignored, torch.zeros_like(target), target)
    z_y = z.gather(1, y[:, None]).squeeze(1)
    loss = lse - (1 - eps) * z_y + lse_sq * lse * lse
    if eps > 0:
        loss = loss - eps * z.mean(-1)
    return torch.where(ignored, torch.zeros_like(loss), loss), lse


def ce_with_grad(logits: torch.Tensor, target: torch.Tensor, ignore_index: int, eps: float, scale: float,
                 lse_sq: float, grad_scale: float) -> torch.Tensor:
    """Per-row float32 loss ``[n]``; overwrites ``logits [n, V]`` with ``grad_scale * dloss/dlogits``."""
    n, V = logits.shape
    loss = torch.empty(n, dtype=torch.float32, device=logits.device)
    if n == 0:
        return loss
    if use_triton(logits):
        lse = torch.empty(n, dtype=torch.float32, device=logits.device)
        ce_fwd_kernel[(n,)](logits, logits.stride(0), target, loss, lse, V, ignore_index, eps, scale, lse_sq,
                            grad_scale, BLOCK_V=_block_v(V), COMPUTE_GRAD=True, num_warps=8)
        return loss
    loss, lse = _ce_torch(logits, target, ignore_index, eps, scale, lse_sq)
    p = torch.softmax(logits.float() * scale, dim=-1)
    g = p * (1 + 2 * lse_sq * lse[:, None]) - eps / V
    ignored = target == ignore_index
    y = torch.where(ignored, torch.zeros_like(target), target)
    g.scatter_add_(1, y[:, None], torch.full((n, 1), -(1 - eps), device=g.device))
    g = g * (scale * grad_scale) * (~ignored)[:, None]
    logits.copy_(g)
    return loss


class _CEFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, ignore_index, eps, scale, lse_sq, reduction, inplace_backward):
        n, V = logits.shape
        if logits.stride(-1) != 1:
            logits = logits.contiguous()
        loss = torch.empty(n, dtype=torch.float32, device=logits.device)
        lse = torch.empty(n, dtype=torch.float32, device=logits.device)
        if n:
            ce_fwd_kernel[(n,)](logits, logits.stride(0), target, loss, lse, V, ignore_index, eps, scale, lse_sq,
                                1.0, BLOCK_V=_block_v(V), COMPUTE_GRAD=False, num_warps=8)
        n_valid = (target != ignore_index).sum() if reduction == "mean" else None
        ctx.save_for_backward(logits, target, lse, n_valid)
        ctx.cfg = (ignore_index, eps, scale, lse_sq, reduction, inplace_backward)
        if reduction == "none":
            return loss
        total = loss.sum()
        return total / n_valid.clamp(min=1) if reduction == "mean" else total

    @staticmethod
    def backward(ctx, dloss):
        logits, target, lse, n_valid = ctx.saved_tensors
        ignore_index, eps, scale, lse_sq, reduction, inplace = ctx.cfg
        n, V = logits.shape
        dlogits = logits if inplace else torch.empty_like(logits)
        if reduction == "mean":
            dloss = dloss / n_valid.clamp(min=1)
        dloss = dloss.float().contiguous()
        if n:
            ce_bwd_kernel[(n,)](logits, logits.stride(0), dlogits, dlogits.stride(0), target, lse, dloss, V,
                                ignore_index, eps, scale, lse_sq, 1.0, BLOCK_V=_block_v(V),
                                PER_ROW=reduction == "none", num_warps=8)
        return dlogits, None, None, None, None, None, None, None


def _check_ce(logits, target, reduction, eps):
    check_float("input", logits)
    if logits.dim() < 2:
        raise ValueError(f"input must have shape [..., V], got {tuple(logits.shape)}")
    if not isinstance(target, torch.Tensor) or target.is_floating_point():
        raise ValueError("target must be an integer tensor of class indices")
    if target.numel() != logits.numel() // logits.shape[-1]:
        raise ValueError(f"target must have {logits.numel() // logits.shape[-1]} elements (one per row of input "
                         f"{tuple(logits.shape)}), got shape {tuple(target.shape)}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {eps}")


def cross_entropy_loss(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0,
                       logit_scale: float = 1.0, lse_square_scale: float = 0.0, ignore_index: int = -100,
                       reduction: str = "mean", inplace_backward: bool = False) -> torch.Tensor:
    """Cross entropy of ``logits [..., V]`` against ``target [...]``; loss in float32."""
    _check_ce(logits, target, reduction, label_smoothing)
    V = logits.shape[-1]
    lg = logits.reshape(-1, V)
    tg = target.reshape(-1)
    if use_triton(logits):
        out = _CEFn.apply(lg, tg.contiguous(), ignore_index, float(label_smoothing), float(logit_scale),
                          float(lse_square_scale), reduction, inplace_backward)
    else:
        loss, _ = _ce_torch(lg, tg, ignore_index, label_smoothing, logit_scale, lse_square_scale)
        if reduction == "none":
            out = loss
        elif reduction == "sum":
            out = loss.sum()
        else:
            out = loss.sum() / (tg != ignore_index).sum().clamp(min=1)
    return out.view(target.shape) if reduction == "none" else out


class FusedCrossEntropyLoss(nn.Module):
    """fla-compatible fused CE: ``forward(input [..., V], target [...])``."""

    def __init__(self, ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
                 logit_scale: float = 1.0, lse_square_scale: float = 0.0, inplace_backward: bool = False,
                 process_group=None, return_z_loss: bool = False):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        if process_group is not None or return_z_loss:
            raise ValueError("process_group (tensor-parallel CE) and return_z_loss are not supported")
        self.ignore_index, self.reduction = ignore_index, reduction
        self.label_smoothing, self.logit_scale = label_smoothing, logit_scale
        self.lse_square_scale, self.inplace_backward = lse_square_scale, inplace_backward

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cross_entropy_loss(input, target, self.label_smoothing, self.logit_scale, self.lse_square_scale,
                                  self.ignore_index, self.reduction, self.inplace_backward)
