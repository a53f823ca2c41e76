"""Fused SwiGLU: ``swiglu(g, u) = silu(g) * u`` (Triton elementwise fwd/bwd, float32 math) and
``swiglu_linear(g, u, W, b) = F.linear(swiglu(g, u), W, b)`` which recomputes the product in backward
instead of storing it (saves one [N, intermediate] activation).

Example::

    >>> h = swiglu(torch.randn(4, 5632), torch.randn(4, 5632))
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ._common import check_float, check_same_shape, use_triton

__all__ = ["swiglu", "swiglu_linear", "swiglu_ref", "ACT2FN"]

BLOCK = 4096


@triton.jit
def swiglu_fwd_kernel(G, U, Y, n, BLOCK: tl.constexpr):
    o = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = o < n
    b_g = tl.load(G + o, mask=m, other=0.).to(tl.float32)
    b_u = tl.load(U + o, mask=m, other=0.).to(tl.float32)
    tl.store(Y + o, (b_g * tl.sigmoid(b_g) * b_u).to(Y.dtype.element_ty), mask=m)


@triton.jit
def swiglu_bwd_kernel(G, U, DY, DG, DU, Y, n, BLOCK: tl.constexpr, STORE_Y: tl.constexpr):
    o = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = o < n
    b_g = tl.load(G + o, mask=m, other=0.).to(tl.float32)
    b_u = tl.load(U + o, mask=m, other=0.).to(tl.float32)
    b_dy = tl.load(DY + o, mask=m, other=0.).to(tl.float32)
    b_s = tl.sigmoid(b_g)
    b_silu = b_g * b_s
    tl.store(DU + o, (b_dy * b_silu).to(DU.dtype.element_ty), mask=m)
    tl.store(DG + o, (b_dy * b_u * b_s * (1. + b_g * (1. - b_s))).to(DG.dtype.element_ty), mask=m)
    if STORE_Y:
        tl.store(Y + o, (b_silu * b_u).to(Y.dtype.element_ty), mask=m)


def _fwd(g, u):
    y = torch.empty_like(g)
    n = g.numel()
    if n:
        swiglu_fwd_kernel[(triton.cdiv(n, BLOCK),)](g, u, y, n, BLOCK=BLOCK, num_warps=8)
    return y


def _bwd(g, u, dy, store_y=False):
    dg, du = torch.empty_like(g), torch.empty_like(u)
    y = torch.empty_like(g) if store_y else None
    n = g.numel()
    if n:
        swiglu_bwd_kernel[(triton.cdiv(n, BLOCK),)](g, u, dy, dg, du, y, n, BLOCK=BLOCK, STORE_Y=store_y,
                                                    num_warps=8)
    return dg, du, y


class _SwiGLUFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g, u):
        g, u = g.contiguous(), u.contiguous()
        ctx.save_for_backward(g, u)
        return _fwd(g, u)

    @staticmethod
    def backward(ctx, dy):
        g, u = ctx.saved_tensors
        dg, du, _ = _bwd(g, u, dy.contiguous())
        return dg, du


class _SwiGLULinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g, u, weight, bias):
        g, u = g.contiguous(), u.contiguous()
        y = _fwd(g, u)
        ctx.save_for_backward(g, u, weight)
        ctx.has_bias = bias is not None
        return F.linear(y, weight, bias)

    @staticmethod
    def backward(ctx, dout):
        g, u, weight = ctx.saved_tensors
        dout2 = dout.reshape(-1, dout.shape[-1])
        dy = dout2.mm(weight.to(dout2.dtype)).view(g.shape)
        dg, du, y = _bwd(g, u, dy.contiguous(), store_y=True)
        dw = dout2.t().mm(y.reshape(-1, y.shape[-1]).to(dout2.dtype)).to(weight.dtype)
        db = dout2.sum(0) if ctx.has_bias else None
        return dg, du, dw, db


def swiglu_ref(g, u):
    return (F.silu(g.float()) * u.float()).to(g.dtype)


def swiglu(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``silu(g) * u`` elementwise; g, u same shape."""
    check_float("g", g)
    check_same_shape("u", u, "g", g)
    if use_triton(g):
        return _SwiGLUFn.apply(g, u)
    return swiglu_ref(g, u)


def swiglu_linear(g: torch.Tensor, u: torch.Tensor, weight: torch.Tensor, bias=None) -> torch.Tensor:
    """``F.linear(silu(g) * u, weight, bias)``; g, u ``[..., I]``, weight ``[O, I]``."""
    check_float("g", g)
    check_same_shape("u", u, "g", g)
    if weight.dim() != 2 or weight.shape[1] != g.shape[-1]:
        raise ValueError(f"weight must have shape [out, {g.shape[-1]}], got {tuple(weight.shape)}")
    if use_triton(g):
        return _SwiGLULinearFn.apply(g, u, weight, bias)
    return F.linear(swiglu_ref(g, u), weight, bias)


def _sqrelu(x):
    return torch.relu(x).square()


ACT2FN = {"swish": F.silu, "silu": F.silu, "sigmoid": torch.sigmoid, "relu": F.relu, "gelu": F.gelu,
          "sqrelu": _sqrelu, "tanh": torch.tanh}
