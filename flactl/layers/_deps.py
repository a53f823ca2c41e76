"""The ops and fused modules the layers call, resolved in one place.

Every layer calls the public ops of ``flactl.ops.<family>`` and the modules of ``flactl.modules``.
While one of them is not published yet, a plain-torch stand-in defined here keeps the layers usable
(same math, token-by-token; slow). :func:`missing` lists what is currently stood in for, so tests and
reports can say so; nothing here changes numerics once the real op exists.
"""
from __future__ import annotations

import importlib
import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

_MISSING: set = set()


def _real(module: str, name: str):
    try:
        mod = importlib.import_module(module)
        fn = getattr(mod, name)
    except (ImportError, AttributeError):
        _MISSING.add(f"{module}.{name}")
        return None
    _MISSING.discard(f"{module}.{name}")
    return fn


def missing() -> list:
    """Names of ops/modules that are currently replaced by the torch stand-ins in this file."""
    return sorted(_MISSING)


# ----------------------------------------------------------------------------------------------
# Ops
# ----------------------------------------------------------------------------------------------

def _naive_linear(q, k, v, g=None, g_gamma=None, gk=None, scale=None, initial_state=None,
                  output_final_state=False, cu_seqlens=None):
    from flactl.ops.common.naive import naive_recurrent_linear
    o, ht = naive_recurrent_linear(q, k, v, g=g, g_gamma=g_gamma, gk=gk, scale=scale,
                                   initial_state=initial_state, output_final_state=output_final_state,
                                   cu_seqlens=cu_seqlens)
    return o, ht


def linear_op(mode: str, q, k, v, *, g=None, g_gamma=None, gk=None, scale=None, initial_state=None,
              output_final_state=False, cu_seqlens=None):
    """Linear attention with decays. ``gk [B,T,H,K]`` → gla ops; ``g [B,T,H]`` / ``g_gamma [H]`` →
    simple_gla ops; no gate → simple_gla without decay. Returns ``(o, final_state [N,H,K,V] fp32)``."""
    kw = dict(scale=scale, initial_state=initial_state, output_final_state=output_final_state,
              cu_seqlens=cu_seqlens)
    if gk is not None:
        fn = (_real("flactl.ops.gla", "chunk_gla") if mode == "chunk"
              else _real("flactl.ops.gla", "fused_recurrent_gla"))
        if fn is not None:
            return fn(q, k, v, gk, **kw) if mode == "chunk" else fn(q, k, v, gk=gk, **kw)
        return _naive_linear(q, k, v, gk=gk, **kw)
    fn = _real("flactl.ops.simple_gla", f"{mode}_simple_gla")
    if fn is not None:
        return fn(q, k, v, g=g, g_gamma=g_gamma, **kw)
    return _naive_linear(q, k, v, g=g, g_gamma=g_gamma, **kw)


def delta_op(mode: str, q, k, v, beta, *, g=None, scale=None, initial_state=None, output_final_state=False,
             cu_seqlens=None, use_qk_l2norm_in_kernel=False, gated: bool = False, **gate_kwargs):
    """(Gated) delta rule, GVA allowed. ``gated=False`` → ``flactl.ops.delta_rule``, else gated_delta_rule.

    ``gate_kwargs``: ``use_gate_in_kernel`` (+ ``A_log``, ``dt_bias``: g is then the raw logits ``a``),
    ``use_beta_sigmoid_in_kernel``, ``allow_neg_eigval`` — passed to the op, or applied here in torch
    when the op is stood in for.
    """
    kw = dict(scale=scale, initial_state=initial_state, output_final_state=output_final_state,
              cu_seqlens=cu_seqlens, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel)
    if not gated:
        fn = _real("flactl.ops.delta_rule", f"{mode}_delta_rule")
        if fn is not None:
            return fn(q, k, v, beta, **kw, **gate_kwargs)
    else:
        fn = _real("flactl.ops.gated_delta_rule", f"{mode}_gated_delta_rule")
        if fn is not None:
            return fn(q, k, v, g, beta, **kw, **gate_kwargs)
    if gate_kwargs.get("use_gate_in_kernel"):
        g = -gate_kwargs["A_log"].float().exp() * F.softplus(g.float() + gate_kwargs["dt_bias"].float())
    if gate_kwargs.get("use_beta_sigmoid_in_kernel"):
        beta = beta.float().sigmoid() * (2.0 if gate_kwargs.get("allow_neg_eigval") else 1.0)
    from flactl.ops.delta_rule.naive import naive_recurrent_delta_rule
    return naive_recurrent_delta_rule(q, k, v, beta, g=g, scale=scale, initial_state=initial_state,
                                      output_final_state=output_final_state, cu_seqlens=cu_seqlens,
                                      use_qk_l2norm=use_qk_l2norm_in_kernel)


def comba_op(mode: str, q, k, v, p, g, beta, *, scale=None, initial_state=None, output_final_state=False,
             cu_seqlens=None, use_qk_l2norm_in_kernel=False, **gate_kwargs):
    """Comba (``flactl.ops.comba``): erase key ``p [B,T,H,K]``, GVA allowed. Arguments in chunk_comba's
    order; fused_recurrent_comba takes ``(q, k, p, v, ...)`` (fla's order) and is called so here.
    ``gate_kwargs`` as in :func:`delta_op`. Returns ``(o, final_state [N,HV,K,V] fp32)``."""
    kw = dict(scale=scale, initial_state=initial_state, output_final_state=output_final_state,
              cu_seqlens=cu_seqlens, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel)
    fn = _real("flactl.ops.comba", f"{mode}_comba")
    if fn is not None:
        if mode == "chunk":
            return fn(q, k, v, p, g, beta, **kw, **gate_kwargs)
        return fn(q, k, p, v, g, beta, **kw, **gate_kwargs)
    if gate_kwargs.get("use_gate_in_kernel"):
        g = -gate_kwargs["A_log"].float().exp() * F.softplus(g.float() + gate_kwargs["dt_bias"].float())
    if gate_kwargs.get("use_beta_sigmoid_in_kernel"):
        beta = beta.float().sigmoid() * (2.0 if gate_kwargs.get("allow_neg_eigval") else 1.0)
    from flactl.ops.comba.naive import naive_recurrent_comba
    return naive_recurrent_comba(q, k, v, p, g, beta, **kw)


def delta_product_op(mode: str, q, k, v, g, beta, num_householder: int, *, scale=None, initial_state=None,
                     output_final_state=False, cu_seqlens=None, use_qk_l2norm_in_kernel=False):
    """Gated DeltaProduct: ``q [B,T,H,K]``, ``g [B,T,H]`` or None per token; ``k, v, beta`` with
    ``num_householder`` interleaved rows per token (``[B, T*n, ...]``); ``cu_seqlens`` in tokens.

    ``chunk`` → ``chunk_gated_delta_product``. There is no fused_recurrent DeltaProduct op (fla decodes
    the same way): decoding runs the (gated) delta rule over the interleaved rows with the decay on
    each token's first row and the query on its last. Returns ``(o [B,T,H,V], final_state fp32)``."""
    n = int(num_householder)
    kw = dict(scale=scale, initial_state=initial_state, output_final_state=output_final_state,
              use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel)
    if mode == "chunk":
        fn = _real("flactl.ops.gated_delta_product", "chunk_gated_delta_product")
        if fn is not None:
            return fn(q, k, v, g, beta, num_householder=n, cu_seqlens=cu_seqlens, **kw)
    B, T = q.shape[:2]
    qi = q.new_zeros(B, T, n, *q.shape[2:])
    qi[:, :, -1] = q
    qi = qi.view(B, T * n, *q.shape[2:])
    gi = None
    if g is not None:
        gi = g.new_zeros(B, T, n, *g.shape[2:])
        gi[:, :, 0] = g
        gi = gi.view(B, T * n, *g.shape[2:])
    o, ht = delta_op(mode, qi, k, v, beta if gi is not None else beta.to(k.dtype), g=gi, gated=gi is not None,
                     cu_seqlens=cu_seqlens * n if cu_seqlens is not None else None, **kw)
    return o.view(B, T, n, *o.shape[2:])[:, :, -1], ht


def hgrn_op(mode: str, x, g, *, initial_state=None, output_final_state=False, cu_seqlens=None):
    fn = _real("flactl.ops.hgrn", f"{mode}_hgrn")
    if fn is not None:
        return fn(x, g, initial_state=initial_state, output_final_state=output_final_state, cu_seqlens=cu_seqlens)
    from flactl.ops.hgrn.naive import naive_recurrent_hgrn
    return naive_recurrent_hgrn(x, g, initial_state=initial_state, output_final_state=output_final_state,
                                cu_seqlens=cu_seqlens)


# ----------------------------------------------------------------------------------------------
# Modules (stand-ins keep fla's parameter names so state dicts never change)
# ----------------------------------------------------------------------------------------------

class _RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, elementwise_affine: bool = True, eps: float = 1e-5, bias: bool = False):
        super().__init__()
        self.hidden_size, self.eps = hidden_size, eps
        self.weight = nn.Parameter(torch.ones(hidden_size)) if elementwise_affine else None
        self.bias = nn.Parameter(torch.zeros(hidden_size)) if (elementwise_affine and bias) else None

    def forward(self, x, residual=None, prenorm=False, residual_in_fp32=False):
        if residual is not None:
            x = x + residual
        residual_out = x
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.weight is not None:
            y = y * self.weight.float()
        if self.bias is not None:
            y = y + self.bias.float()
        y = y.to(x.dtype)
        return (y, residual_out) if prenorm else y


class _FusedRMSNormGated(_RMSNorm):
    def __init__(self, hidden_size: int, elementwise_affine: bool = True, eps: float = 1e-5,
                 activation: str = "swish", **kwargs):
        super().__init__(hidden_size, elementwise_affine, eps)
        self.activation = activation

    def forward(self, x, g, residual=None, prenorm=False, residual_in_fp32=False):
        y = super().forward(x)
        act = torch.sigmoid(g.float()) if self.activation == "sigmoid" else F.silu(g.float())
        return (y.float() * act).to(x.dtype)


class _ShortConvolution(nn.Conv1d):
    """Depthwise causal conv with an optional activation. Cache ``[N, D, W]`` = the last W inputs."""

    def __init__(self, hidden_size: int, kernel_size: int, bias: bool = False, activation: Optional[str] = "silu",
                 **kwargs):
        super().__init__(hidden_size, hidden_size, kernel_size, groups=hidden_size, padding=0, bias=bias)
        self.hidden_size, self.activation = hidden_size, activation

    def forward(self, x, residual=None, mask=None, cache=None, output_final_state=False, cu_seqlens=None, **kw):
        W = self.kernel_size[0]
        seqs = ([(0, int(a), int(b)) for a, b in zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist())]
                if cu_seqlens is not None else [(b, 0, x.shape[1]) for b in range(x.shape[0])])
        outs, finals = [], []
        for n, (b, bos, eos) in enumerate(seqs):
            xs = x[b, bos:eos].transpose(0, 1)  # [D, L]
            prev = cache[n, :, 1:].to(x.dtype) if cache is not None else xs.new_zeros(xs.shape[0], W - 1)
            xp = torch.cat([prev, xs], dim=-1)
            y = F.conv1d(xp.unsqueeze(0), self.weight, self.bias, groups=self.hidden_size)[0]
            finals.append(xp[:, -W:] if xp.shape[-1] >= W else F.pad(xp, (W - xp.shape[-1], 0)))
            outs.append(y.transpose(0, 1))
        if cu_seqlens is not None:
            y = torch.cat(outs, 0).unsqueeze(0)
        else:
            y = torch.stack(outs, 0)
        if self.activation in ("silu", "swish"):
            y = F.silu(y)
        if residual is not None:
            y = y + residual
        return y, (torch.stack(finals, 0) if output_final_state else None)


class _GatedMLP(nn.Module):
    def __init__(self, hidden_size: int, hidden_ratio: Optional[int] = None, intermediate_size: Optional[int] = None,
                 hidden_act: str = "swish", fuse_swiglu: bool = True, **kwargs):
        super().__init__()
        if intermediate_size is None:
            hidden_ratio = 4 if hidden_ratio is None else hidden_ratio
            intermediate_size = int(hidden_size * hidden_ratio * 2 / 3)
            intermediate_size = 256 * ((intermediate_size + 256 - 1) // 256)
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x, **kwargs):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def _module(name: str, fallback):
    real = _real("flactl.modules", name)
    return real if real is not None else fallback


def RMSNorm(*args, **kwargs):
    return _module("RMSNorm", _RMSNorm)(*args, **kwargs)


def FusedRMSNormGated(*args, **kwargs):
    return _module("FusedRMSNormGated", _FusedRMSNormGated)(*args, **kwargs)


def ShortConvolution(*args, **kwargs):
    return _module("ShortConvolution", _ShortConvolution)(*args, **kwargs)


def GatedMLP(*args, **kwargs):
    return _module("GatedMLP", _GatedMLP)(*args, **kwargs)


def short_conv(conv: nn.Module, x: torch.Tensor, cache=None, output_final_state=False, cu_seqlens=None):
    """Run a ShortConvolution; returns ``(y, final_cache [N, D, W] or None)``."""
    out = conv(x, cache=cache, output_final_state=output_final_state, cu_seqlens=cu_seqlens)
    return out if isinstance(out, tuple) else (out, None)


def l2_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    fn = _real("flactl.modules", "l2_norm")
    if fn is not None:
        return fn(x)
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).sum(-1, keepdim=True) + eps)).to(x.dtype)


def cross_entropy_losses():
    """(FusedCrossEntropyLoss class or None, FusedLinearCrossEntropyLoss class or None)."""
    return _real("flactl.modules", "FusedCrossEntropyLoss"), _real("flactl.modules", "FusedLinearCrossEntropyLoss")


def inv_softplus(x: torch.Tensor) -> torch.Tensor:
    return x + torch.log(-torch.expm1(-x))


__all__ = ["linear_op", "delta_op", "comba_op", "delta_product_op", "hgrn_op", "RMSNorm", "FusedRMSNormGated", "ShortConvolution", "GatedMLP",
           "short_conv", "l2_norm", "cross_entropy_losses", "missing", "inv_softplus", "math"]
