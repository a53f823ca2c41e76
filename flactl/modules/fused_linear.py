"""Fused linear + loss heads that never materialise the full ``[N, vocab]`` logits.

``FusedLinearCrossEntropyLoss``: the tokens are processed in chunks; for each chunk
``logits = x_c W^T (+ b)`` is computed, the CE kernel turns that buffer *in place* into dloss/dlogits,
and ``dx_c = dlogits W``, ``dW += dlogits^T x_c`` (float32 accumulator) are formed immediately. Peak
extra memory is one chunk of logits plus dW. Backward only scales the stored gradients by the
incoming grad (and ``1/#valid`` for ``mean``). ``reduction='none'`` cannot pre-reduce dW, so it stores
per-row lse in forward and recomputes each chunk in backward with the per-row upstream grad.
Tied embeddings: pass the embedding matrix as ``weight``; its gradient accumulates as usual.

``FusedLinearKLDivLoss`` (alias ``FusedKLDivLoss``): distillation loss
``KL(softmax(t W_t^T / T) || softmax(x W^T / T))`` chunked the same way (teacher gets no gradient).

Example::

    >>> loss_fn = FusedLinearCrossEntropyLoss()
    >>> loss = loss_fn(x, labels, lm_head.weight)     # x [B, T, H], labels [B, T]
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._common import check_float, use_triton
from .cross_entropy import REDUCTIONS, _block_v, _ce_torch, ce_bwd_kernel, ce_fwd_kernel, ce_with_grad

__all__ = ["FusedLinearCrossEntropyLoss", "fused_linear_cross_entropy", "FusedLinearKLDivLoss", "FusedKLDivLoss",
           "fused_linear_kl_div"]


def _chunk_size(N: int, V: int, num_chunks: int) -> int:
    # at most num_chunks chunks, and a chunk's logits stay <= 2^28 elements (512 MiB in bf16)
    c = max(1, -(-N // max(1, num_chunks)))
    return max(1, min(c, (1 << 28) // max(V, 1)))


# dW += dlogits^T x is done in slices of vocab rows so the bf16 product temp stays ~64 MiB
DW_SLICE_ELEMS = 1 << 25


_FP32_ACCUMULATE_MM = [True]  # flips to False if this torch/GPU lacks addmm(out_dtype=float32)


def _accumulate_dw(dw, g, xc):
    """dw [V, H] (float32) += g[n, V]^T @ xc[n, H].

    On CUDA, one GEMM with bf16/fp16 inputs that accumulates straight into the float32 dw
    (``addmm(out_dtype=float32)``, cuBLAS beta=1): dw is read and written once per token chunk and
    there is no product temp. H100 (2026-11-22), 16k tokens x 2048 x vocab 128256: the sliced
    fallback below (bf16 product temp + add_) made fwd+bwd 49.65 ms vs 46.9 ms unfused; its extra
    traffic is ~1 GiB per chunk. The fallback (CPU, fp32 inputs, older torch) slices over V so the
    temp stays ~64 MiB.
    """
    if dw.is_cuda and g.dtype != torch.float32 and _FP32_ACCUMULATE_MM[0]:
        try:
            torch.addmm(dw, g.t(), xc, out_dtype=torch.float32, out=dw)
            return
        except (RuntimeError, TypeError):
            _FP32_ACCUMULATE_MM[0] = False
    V, H = dw.shape
    step = max(1, DW_SLICE_ELEMS // max(H, 1))
    for v0 in range(0, V, step):
        dw[v0:v0 + step].add_(g[:, v0:v0 + step].t().mm(xc))


def _logits(xc, weight, bias):
    return F.linear(xc, weight.to(xc.dtype), bias.to(xc.dtype) if bias is not None else None)


def _ce_loss_lse(logits, target, ignore_index, eps, scale, lse_sq):
    n, V = logits.shape
    if use_triton(logits):
        loss = torch.empty(n, dtype=torch.float32, device=logits.device)
        lse = torch.empty(n, dtype=torch.float32, device=logits.device)
        if n:
            ce_fwd_kernel[(n,)](logits, logits.stride(0), target, loss, lse, V, ignore_index, eps, scale, lse_sq,
                                1.0, BLOCK_V=_block_v(V), COMPUTE_GRAD=False, num_warps=8)
        return loss, lse
    return _ce_torch(logits, target, ignore_index, eps, scale, lse_sq)


def _ce_grad_rows(logits, target, lse, dloss_rows, ignore_index, eps, scale, lse_sq):
    """Overwrite logits with dloss_rows[i] * dloss_i/dlogits_i."""
    n, V = logits.shape
    if n == 0:
        return
    if use_triton(logits):
        ce_bwd_kernel[(n,)](logits, logits.stride(0), logits, logits.stride(0), target, lse, dloss_rows, V,
                            ignore_index, eps, scale, lse_sq, 1.0, BLOCK_V=_block_v(V), PER_ROW=True, num_warps=8)
        return
    p = torch.exp(logits.float() * scale - lse[:, None])
    g = p * (1 + 2 * lse_sq * lse[:, None]) - eps / V
    ignored = target == ignore_index
    y = torch.where(ignored, torch.zeros_like(target), target)
    g.scatter_add_(1, y[:, None], torch.full((n, 1), -(1 - eps), device=g.device))
    logits.copy_(g * (scale * dloss_rows.float() * (~ignored))[:, None])


class _FLCEFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x2, target, weight, bias, ignore_index, eps, scale, lse_sq, reduction, num_chunks):
        N, H = x2.shape
        V = weight.shape[0]
        C = _chunk_size(N, V, num_chunks)
        ctx.cfg = (ignore_index, eps, scale, lse_sq, reduction, C)
        if reduction == "none":
            loss = torch.empty(N, dtype=torch.float32, device=x2.device)
            lse = torch.empty(N, dtype=torch.float32, device=x2.device)
            for s in range(0, N, C):
                lg = _logits(x2[s:s + C], weight, bias)
                loss[s:s + C], lse[s:s + C] = _ce_loss_lse(lg, target[s:s + C], ignore_index, eps, scale, lse_sq)
            ctx.save_for_backward(x2, target, weight, bias, lse)
            return loss
        need_w = weight.requires_grad
        need_b = bias is not None and bias.requires_grad
        dx = torch.empty_like(x2)
        dw = torch.zeros(V, H, dtype=torch.float32, device=x2.device) if need_w else None
        db = torch.zeros(V, dtype=torch.float32, device=x2.device) if need_b else None
        total = torch.zeros((), dtype=torch.float32, device=x2.device)
        w = weight.to(x2.dtype)
        for s in range(0, N, C):
            xc = x2[s:s + C]
            lg = _logits(xc, weight, bias)
            total += ce_with_grad(lg, target[s:s + C], ignore_index, eps, scale, lse_sq, 1.0).sum()
            torch.mm(lg, w, out=dx[s:s + C])
            if need_w:
                _accumulate_dw(dw, lg, xc)
            if need_b:
                db.add_(lg.sum(0, dtype=torch.float32))
        n_valid = (target != ignore_index).sum().clamp(min=1).float() if reduction == "mean" else None
        ctx.save_for_backward(dx, dw, db, n_valid)
        ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None)
        return total / n_valid if reduction == "mean" else total

    @staticmethod
    def backward(ctx, dloss):
        ignore_index, eps, scale, lse_sq, reduction, C = ctx.cfg
        if reduction == "none":
            x2, target, weight, bias, lse = ctx.saved_tensors
            N, H = x2.shape
            dloss = dloss.float().contiguous()
            dx = torch.empty_like(x2)
            dw = torch.zeros(weight.shape, dtype=torch.float32, device=x2.device) if ctx.needs_input_grad[2] else None
            db = torch.zeros(bias.shape, dtype=torch.float32, device=x2.device) \
                if bias is not None and ctx.needs_input_grad[3] else None
            w = weight.to(x2.dtype)
            for s in range(0, N, C):
                xc = x2[s:s + C]
                lg = _logits(xc, weight, bias)
                _ce_grad_rows(lg, target[s:s + C], lse[s:s + C], dloss[s:s + C], ignore_index, eps, scale, lse_sq)
                torch.mm(lg, w, out=dx[s:s + C])
                if dw is not None:
                    _accumulate_dw(dw, lg, xc)
                if db is not None:
                    db.add_(lg.sum(0, dtype=torch.float32))
            return (dx, None, dw.to(weight.dtype) if dw is not None else None,
                    db.to(bias.dtype) if db is not None else None) + (None,) * 6
        dx, dw, db, n_valid = ctx.saved_tensors
        wdt, bdt = ctx.dtypes
        g = dloss.float() / n_valid if reduction == "mean" else dloss.float()
        dx = (dx * g).to(dx.dtype)
        dw = (dw * g).to(wdt) if dw is not None else None
        db = (db * g).to(bdt) if db is not None else None
        return (dx, None, dw, db) + (None,) * 6


def fused_linear_cross_entropy(x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                               bias: Optional[torch.Tensor] = None, ignore_index: int = -100,
                               label_smoothing: float = 0.0, logit_scale: float = 1.0, lse_square_scale: float = 0.0,
                               reduction: str = "mean", num_chunks: int = 8) -> torch.Tensor:
    """CE of ``x [..., H] @ weight[V, H]^T (+ bias)`` against ``target [...]`` without full logits."""
    check_float("x", x)
    check_float("weight", weight)
    H = x.shape[-1]
    if weight.dim() != 2 or weight.shape[1] != H:
        raise ValueError(f"weight must have shape [V, {H}], got {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias must have shape [{weight.shape[0]}], got {tuple(bias.shape)}")
    if not isinstance(target, torch.Tensor) or target.is_floating_point():
        raise ValueError("target must be an integer tensor of class indices")
    if target.numel() != x.numel() // max(H, 1):
        raise ValueError(f"target must have one entry per row of x {tuple(x.shape[:-1])}, got {tuple(target.shape)}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if not isinstance(num_chunks, int) or num_chunks < 1:
        raise ValueError(f"num_chunks must be a positive int, got {num_chunks!r}")
    loss = _FLCEFn.apply(x.reshape(-1, H).contiguous(), target.reshape(-1).contiguous(), weight, bias, ignore_index,
                         float(label_smoothing), float(logit_scale), float(lse_square_scale), reduction, num_chunks)
    return loss.view(target.shape) if reduction == "none" else loss


class FusedLinearCrossEntropyLoss(nn.Module):
    """fla-compatible: ``forward(x, target, weight, bias=None)``."""

    def __init__(self, ignore_index: int = -100, label_smoothing: float = 0.0, logit_scale: float = 1.0,
                 num_chunks: int = 8, reduction: str = "mean", lse_square_scale: float = 0.0,
                 use_l2warp: bool = False, l2_penalty_factor: float = 1e-4):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        if use_l2warp:
            raise ValueError("use_l2warp is not supported")
        self.ignore_index, self.label_smoothing, self.logit_scale = ignore_index, label_smoothing, logit_scale
        self.num_chunks, self.reduction, self.lse_square_scale = num_chunks, reduction, lse_square_scale

    def forward(self, x, target, weight, bias=None):
        return fused_linear_cross_entropy(x, target, weight, bias, self.ignore_index, self.label_smoothing,
                                          self.logit_scale, self.lse_square_scale, self.reduction, self.num_chunks)


class _FLKLFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x2, t2, weight, t_weight, temperature, reduction, num_chunks):
        N, H = x2.shape
        V = weight.shape[0]
        C = _chunk_size(N, V, num_chunks)
        dx = torch.empty_like(x2)
        dw = torch.zeros(V, H, dtype=torch.float32, device=x2.device) if weight.requires_grad else None
        total = torch.zeros((), dtype=torch.float32, device=x2.device)
        w = weight.to(x2.dtype)
        for s in range(0, N, C):
            xc = x2[s:s + C]
            ls = torch.log_softmax(F.linear(xc, w).float() / temperature, -1)
            lt = torch.log_softmax(F.linear(t2[s:s + C], t_weight.to(t2.dtype)).float() / temperature, -1)
            pt = lt.exp()
            total += (pt * (lt - ls)).sum()
            g = ((ls.exp() - pt) / temperature).to(x2.dtype)      # d KL / d student logits
            torch.mm(g, w, out=dx[s:s + C])
            if dw is not None:
                _accumulate_dw(dw, g, xc)
        scale = 1.0 / N if reduction == "batchmean" else 1.0
        ctx.save_for_backward(dx, dw)
        ctx.cfg = (scale, weight.dtype)
        return total * scale

    @staticmethod
    def backward(ctx, dloss):
        dx, dw = ctx.saved_tensors
        scale, wdt = ctx.cfg
        g = dloss.float() * scale
        return (dx * g).to(dx.dtype), None, (dw * g).to(wdt) if dw is not None else None, None, None, None, None


def fused_linear_kl_div(x, target_x, weight, target_weight, temperature: float = 1.0, reduction: str = "batchmean",
                        num_chunks: int = 8):
    """``KL(teacher || student)`` for student ``x @ weight^T`` and teacher ``target_x @ target_weight^T``."""
    check_float("x", x)
    check_float("target_x", target_x)
    if x.shape[:-1] != target_x.shape[:-1]:
        raise ValueError(f"x and target_x must have the same leading dims, got {tuple(x.shape)} and "
                         f"{tuple(target_x.shape)}")
    if weight.dim() != 2 or weight.shape[1] != x.shape[-1]:
        raise ValueError(f"weight must have shape [V, {x.shape[-1]}], got {tuple(weight.shape)}")
    if target_weight.dim() != 2 or target_weight.shape != (weight.shape[0], target_x.shape[-1]):
        raise ValueError(f"target_weight must have shape [{weight.shape[0]}, {target_x.shape[-1]}], "
                         f"got {tuple(target_weight.shape)}")
    if reduction not in ("batchmean", "sum"):
        raise ValueError(f"reduction must be 'batchmean' or 'sum', got {reduction!r}")
    return _FLKLFn.apply(x.reshape(-1, x.shape[-1]).contiguous(), target_x.reshape(-1, target_x.shape[-1]).detach(),
                         weight, target_weight.detach(), float(temperature), reduction, num_chunks)


class FusedLinearKLDivLoss(nn.Module):
    """``forward(x, target_x, weight, target_weight)`` -> KL(teacher || student) (batchmean over tokens)."""

    def __init__(self, ignore_index: int = -100, temperature: float = 1.0, reduction: str = "batchmean",
                 num_chunks: int = 8):
        super().__init__()
        self.ignore_index, self.temperature, self.reduction, self.num_chunks = (ignore_index, temperature, reduction,
                                                                               num_chunks)

    def forward(self, x, target_x, weight, target_weight):
        return fused_linear_kl_div(x, target_x, weight, target_weight, self.temperature, self.reduction,
                                   self.num_chunks)


FusedKLDivLoss = FusedLinearKLDivLoss
