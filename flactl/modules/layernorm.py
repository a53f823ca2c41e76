"""Normalisation modules: RMSNorm, LayerNorm, GroupNorm, gated norms, norm fused with a linear.

All share one fused kernel pair (``norm_kernels.py``) on GPU / under ``TRITON_INTERPRET=1`` and a
float32 torch path on CPU. Class names, constructor arguments and parameter names follow fla
(``weight`` and optional ``bias``) so checkpoints load unchanged.

Residual fusion (pre-norm transformer blocks)::

    y, residual = norm(x, residual=residual, prenorm=True, residual_in_fp32=True)
    # residual <- x + residual (float32 if requested), y <- norm(x + residual)

Example::

    >>> norm = RMSNorm(2304)
    >>> y = norm(torch.randn(2, 7, 2304))
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._common import act_code, check_float, check_same_shape, torch_act, use_triton
from .norm_kernels import norm_bwd, norm_fwd

__all__ = [
    "RMSNorm", "LayerNorm", "GroupNorm", "RMSNormLinear", "LayerNormLinear",
    "FusedRMSNormGated", "FusedLayerNormGated", "FusedRMSNormSwishGate", "FusedLayerNormSwishGate",
    "FusedRMSNormGatedLinear", "FusedLayerNormGatedLinear",
    "rms_norm", "layer_norm", "group_norm", "norm_fn", "norm_linear_fn",
    "rms_norm_fn", "layer_norm_fn", "group_norm_fn", "rms_norm_linear", "layer_norm_linear",
]


# --------------------------------------------------------------------------------------------
# torch path (CPU tensors; also the test reference)
# --------------------------------------------------------------------------------------------
def _norm_torch(x, weight, bias, residual, gate, eps, groups, is_rms, is_l2, activation, residual_dtype):
    xf = x.float()
    res_out = None
    if residual is not None:
        xf = xf + residual.float()
    if residual_dtype is not None:
        res_out = xf.to(residual_dtype)
    shape = xf.shape
    xg = xf.reshape(*shape[:-1], groups, shape[-1] // groups)
    if not is_rms:
        xg = xg - xg.mean(-1, keepdim=True)
    ss = xg.pow(2).sum(-1, keepdim=True) if is_l2 else xg.pow(2).mean(-1, keepdim=True)
    y = (xg * torch.rsqrt(ss + eps)).reshape(shape)
    if weight is not None:
        y = y * weight.float()
    if bias is not None:
        y = y + bias.float()
    if gate is not None:
        y = y * torch_act(gate.float(), activation)
    return y.to(x.dtype), res_out


# --------------------------------------------------------------------------------------------
# Triton path
# --------------------------------------------------------------------------------------------
class _NormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, residual, gate, eps, groups, is_rms, is_l2, act, residual_dtype):
        shape, C = x.shape, x.shape[-1]
        x2 = x.reshape(-1, C).contiguous()
        r2 = residual.reshape(-1, C).contiguous() if residual is not None else None
        g2 = gate.reshape(-1, C).contiguous() if gate is not None else None
        y, res_out, mean, rstd = norm_fwd(x2, weight, bias, r2, eps, groups=groups, is_rms=is_rms,
                                          is_l2=is_l2, gate2=g2, act=act, residual_dtype=residual_dtype)
        ctx.save_for_backward(res_out if residual is not None else x2, weight, bias, g2, mean, rstd)
        ctx.cfg = (groups, is_rms, is_l2, act, x.dtype, residual.dtype if residual is not None else None, shape)
        return y.view(shape), (res_out.view(shape) if res_out is not None else None)

    @staticmethod
    def backward(ctx, dy, dres_out):
        xs, weight, bias, g2, mean, rstd = ctx.saved_tensors
        groups, is_rms, is_l2, act, x_dtype, res_dtype, shape = ctx.cfg
        C = shape[-1]
        dres2 = dres_out.reshape(-1, C).contiguous() if dres_out is not None else None
        dx, dw, db, dg = norm_bwd(dy.reshape(-1, C).contiguous(), xs, weight, bias, mean, rstd, groups=groups,
                                  is_rms=is_rms, is_l2=is_l2, gate2=g2, act=act, dres_out2=dres2, x_dtype=x_dtype)
        dres = dx.to(res_dtype).view(shape) if res_dtype is not None else None
        dg = dg.view(shape) if dg is not None else None
        return dx.view(shape), dw, db, dres, dg, None, None, None, None, None, None


def _validate(x, weight, bias, residual, gate, groups):
    check_float("x", x)
    C = x.shape[-1]
    if groups < 1 or C % groups != 0:
        raise ValueError(f"num_groups ({groups}) must divide the last dim of x ({C})")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and tuple(p.shape) != (C,):
            raise ValueError(f"{name} must have shape [{C}] (last dim of x), got {tuple(p.shape)}")
    if residual is not None:
        check_same_shape("residual", residual, "x", x)
    if gate is not None:
        check_same_shape("g", gate, "x", x)


def norm_fn(x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
            residual: Optional[torch.Tensor] = None, prenorm: bool = False, residual_in_fp32: bool = False,
            eps: float = 1e-6, is_rms_norm: bool = True, num_groups: int = 1, gate: Optional[torch.Tensor] = None,
            activation: str = "swish", is_l2: bool = False):
    """Generic fused norm over the last dim of ``x [..., C]`` (weight/bias ``[C]``).

    Returns ``y`` (dtype of x), or ``(y, residual_out)`` when ``prenorm``; ``residual_out = x + residual``
    in float32 if ``residual_in_fp32`` else in residual's (or x's) dtype.
    """
    _validate(x, weight, bias, residual, gate, num_groups)
    act = act_code(activation)
    if residual is not None:
        residual_dtype = torch.float32 if residual_in_fp32 else residual.dtype
    else:
        residual_dtype = None
    if use_triton(x):
        y, res_out = _NormFn.apply(x, weight, bias, residual, gate, eps, num_groups, is_rms_norm, is_l2, act,
                                   residual_dtype)
    else:
        y, res_out = _norm_torch(x, weight, bias, residual, gate, eps, num_groups, is_rms_norm, is_l2,
                                 activation, residual_dtype)
    if not prenorm:
        return y
    if res_out is None:  # no residual given: the "sum" is x itself
        res_out = x.float() if residual_in_fp32 else x
    return y, res_out


def rms_norm(x, weight, bias=None, residual=None, prenorm=False, residual_in_fp32=False, eps=1e-6):
    return norm_fn(x, weight, bias, residual, prenorm, residual_in_fp32, eps, is_rms_norm=True)


def layer_norm(x, weight, bias=None, residual=None, prenorm=False, residual_in_fp32=False, eps=1e-6):
    return norm_fn(x, weight, bias, residual, prenorm, residual_in_fp32, eps, is_rms_norm=False)


def group_norm(x, weight, bias=None, residual=None, prenorm=False, residual_in_fp32=False, eps=1e-6,
               is_rms_norm=False, num_groups=1):
    return norm_fn(x, weight, bias, residual, prenorm, residual_in_fp32, eps, is_rms_norm=is_rms_norm,
                   num_groups=num_groups)


rms_norm_fn, layer_norm_fn, group_norm_fn = rms_norm, layer_norm, group_norm


# --------------------------------------------------------------------------------------------
# norm + linear: the normalised activation is recomputed in backward, never stored
# --------------------------------------------------------------------------------------------
class _NormLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, norm_w, norm_b, lin_w, lin_b, residual, gate, eps, is_rms, act, residual_dtype):
        shape, C = x.shape, x.shape[-1]
        x2 = x.reshape(-1, C).contiguous()
        r2 = residual.reshape(-1, C).contiguous() if residual is not None else None
        g2 = gate.reshape(-1, C).contiguous() if gate is not None else None
        y, res_out, mean, rstd = norm_fwd(x2, norm_w, norm_b, r2, eps, is_rms=is_rms, gate2=g2, act=act,
                                          residual_dtype=residual_dtype)
        out = F.linear(y, lin_w, lin_b)
        ctx.save_for_backward(res_out if residual is not None else x2, norm_w, norm_b, lin_w, g2, mean, rstd)
        ctx.cfg = (eps, is_rms, act, x.dtype, residual.dtype if residual is not None else None, shape,
                   lin_b is not None)
        return out.view(*shape[:-1], -1), (res_out.view(shape) if res_out is not None else None)

    @staticmethod
    def backward(ctx, dout, dres_out):
        xs, norm_w, norm_b, lin_w, g2, mean, rstd = ctx.saved_tensors
        eps, is_rms, act, x_dtype, res_dtype, shape, has_lin_b = ctx.cfg
        C = shape[-1]
        # recompute y = norm(x) (no residual add: xs already is the sum)
        y, _, _, _ = norm_fwd(xs, norm_w, norm_b, None, eps, is_rms=is_rms, gate2=g2, act=act, store_stats=False)
        y = y.to(x_dtype)
        dout2 = dout.reshape(-1, dout.shape[-1])
        dlin_w = dout2.t().mm(y.to(dout2.dtype))
        dlin_b = dout2.sum(0) if has_lin_b else None
        dy = dout2.mm(lin_w.to(dout2.dtype))
        dres2 = dres_out.reshape(-1, C).contiguous() if dres_out is not None else None
        dx, dw, db, dg = norm_bwd(dy.contiguous(), xs, norm_w, norm_b, mean, rstd, is_rms=is_rms, gate2=g2, act=act,
                                  dres_out2=dres2, x_dtype=x_dtype)
        dres = dx.to(res_dtype).view(shape) if res_dtype is not None else None
        dg = dg.view(shape) if dg is not None else None
        return dx.view(shape), dw, db, dlin_w.to(lin_w.dtype), dlin_b, dres, dg, None, None, None, None


def norm_linear_fn(x, norm_weight, norm_bias, linear_weight, linear_bias=None, residual=None, prenorm=False,
                   residual_in_fp32=False, eps=1e-6, is_rms_norm=True, gate=None, activation="swish"):
    """``F.linear(norm(x) [* act(gate)], linear_weight, linear_bias)`` without storing ``norm(x)``."""
    _validate(x, norm_weight, norm_bias, residual, gate, 1)
    check_float("weight", linear_weight)
    if linear_weight.dim() != 2 or linear_weight.shape[1] != x.shape[-1]:
        raise ValueError(f"weight must have shape [out_features, {x.shape[-1]}], got {tuple(linear_weight.shape)}")
    act = act_code(activation)
    residual_dtype = (torch.float32 if residual_in_fp32 else residual.dtype) if residual is not None else None
    if use_triton(x):
        out, res_out = _NormLinearFn.apply(x, norm_weight, norm_bias, linear_weight, linear_bias, residual, gate,
                                           eps, is_rms_norm, act, residual_dtype)
    else:
        y, res_out = _norm_torch(x, norm_weight, norm_bias, residual, gate, eps, 1, is_rms_norm, False, activation,
                                 residual_dtype)
        out = F.linear(y, linear_weight, linear_bias)
    if not prenorm:
        return out
    if res_out is None:
        res_out = x.float() if residual_in_fp32 else x
    return out, res_out


def rms_norm_linear(x, norm_weight, norm_bias, linear_weight, linear_bias=None, residual=None, prenorm=False,
                    residual_in_fp32=False, eps=1e-6):
    return norm_linear_fn(x, norm_weight, norm_bias, linear_weight, linear_bias, residual, prenorm,
                          residual_in_fp32, eps, is_rms_norm=True)


def layer_norm_linear(x, norm_weight, norm_bias, linear_weight, linear_bias=None, residual=None, prenorm=False,
                      residual_in_fp32=False, eps=1e-6):
    return norm_linear_fn(x, norm_weight, norm_bias, linear_weight, linear_bias, residual, prenorm,
                          residual_in_fp32, eps, is_rms_norm=False)


# --------------------------------------------------------------------------------------------
# modules
# --------------------------------------------------------------------------------------------
class _NormBase(nn.Module):
    is_rms_norm = True

    def __init__(self, hidden_size: int, elementwise_affine: bool = True, bias: bool = False, eps: float = 1e-5,
                 device=None, dtype=None):
        super().__init__()
        if not isinstance(hidden_size, int) or hidden_size < 1:
            raise ValueError(f"hidden_size must be a positive int, got {hidden_size!r}")
        self.hidden_size = hidden_size
        self.elementwise_affine = elementwise_affine
        self.eps = eps
        kw = {"device": device, "dtype": dtype}
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(hidden_size, **kw))
            self.bias = nn.Parameter(torch.zeros(hidden_size, **kw)) if bias else None
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def reset_parameters(self):
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        s = f"{self.hidden_size}, eps={self.eps}"
        if not self.elementwise_affine:
            s += ", elementwise_affine=False"
        return s


class RMSNorm(_NormBase):
    """RMSNorm over the last dim, optional fused residual add. ``forward(x, residual=None, prenorm=False,
    residual_in_fp32=False)`` -> ``y`` or ``(y, residual_sum)`` when ``prenorm``."""
    is_rms_norm = True

    def forward(self, x, residual=None, prenorm=False, residual_in_fp32=False):
        return norm_fn(x, self.weight, self.bias, residual, prenorm, residual_in_fp32, self.eps,
                       is_rms_norm=self.is_rms_norm)


class LayerNorm(RMSNorm):
    """LayerNorm (mean-centred) with the same interface as :class:`RMSNorm`."""
    is_rms_norm = False


class GroupNorm(_NormBase):
    """Norm over ``num_groups`` equal groups of the last dim (``is_rms_norm`` skips centring)."""

    def __init__(self, num_groups: int, hidden_size: int, elementwise_affine: bool = True, bias: bool = False,
                 eps: float = 1e-5, is_rms_norm: bool = False, device=None, dtype=None):
        if not isinstance(num_groups, int) or num_groups < 1 or hidden_size % num_groups != 0:
            raise ValueError(f"num_groups ({num_groups}) must be a positive divisor of hidden_size ({hidden_size})")
        super().__init__(hidden_size, elementwise_affine, bias, eps, device, dtype)
        self.num_groups = num_groups
        self.is_rms_norm = is_rms_norm

    def forward(self, x, residual=None, prenorm=False, residual_in_fp32=False):
        return norm_fn(x, self.weight, self.bias, residual, prenorm, residual_in_fp32, self.eps,
                       is_rms_norm=self.is_rms_norm, num_groups=self.num_groups)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {super().extra_repr()}, is_rms_norm={self.is_rms_norm}"


class RMSNormLinear(_NormBase):
    """RMSNorm fused with the following linear: ``forward(x, weight, bias, residual=None, prenorm=False,
    residual_in_fp32=False)`` = ``F.linear(norm(x), weight, bias)``; the normalised activation is not stored."""
    is_rms_norm = True

    def forward(self, x, weight, bias=None, residual=None, prenorm=False, residual_in_fp32=False):
        return norm_linear_fn(x, self.weight, self.bias, weight, bias, residual, prenorm, residual_in_fp32,
                              self.eps, is_rms_norm=self.is_rms_norm)


class LayerNormLinear(RMSNormLinear):
    is_rms_norm = False


class FusedRMSNormGated(_NormBase):
    """``rmsnorm(x) * act(g)``, act in {'swish'/'silu', 'sigmoid'}; ``forward(x, g, residual=None,
    prenorm=False, residual_in_fp32=False)``. Norm over the last dim (e.g. head_v for per-head output norms)."""
    is_rms_norm = True

    def __init__(self, hidden_size: int, elementwise_affine: bool = True, eps: float = 1e-5,
                 activation: str = "swish", bias: bool = False, device=None, dtype=None):
        super().__init__(hidden_size, elementwise_affine, bias, eps, device, dtype)
        act_code(activation)
        self.activation = activation

    def forward(self, x, g, residual=None, prenorm=False, residual_in_fp32=False):
        return norm_fn(x, self.weight, self.bias, residual, prenorm, residual_in_fp32, self.eps,
                       is_rms_norm=self.is_rms_norm, gate=g, activation=self.activation)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={self.activation}"


class FusedLayerNormGated(FusedRMSNormGated):
    is_rms_norm = False


class FusedRMSNormGatedLinear(FusedRMSNormGated):
    """Gated RMSNorm fused with an output projection: ``forward(x, g, weight, bias=None, ...)``."""

    def forward(self, x, g, weight, bias=None, residual=None, prenorm=False, residual_in_fp32=False):
        return norm_linear_fn(x, self.weight, self.bias, weight, bias, residual, prenorm, residual_in_fp32,
                              self.eps, is_rms_norm=self.is_rms_norm, gate=g, activation=self.activation)


class FusedLayerNormGatedLinear(FusedRMSNormGatedLinear):
    is_rms_norm = False


# fla aliases (swish-gated names used by GLA/RetNet-style layers)
FusedRMSNormSwishGate = FusedRMSNormGated
FusedLayerNormSwishGate = FusedLayerNormGated
