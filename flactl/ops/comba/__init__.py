"""Comba (Hu et al. 2025): ``chunk_comba``, ``fused_recurrent_comba``; math in README.md."""
from __future__ import annotations

import torch

from ..probes import register_probe
from .chunk import chunk_comba
from .fused_recurrent import fused_recurrent_comba
from .naive import naive_recurrent_comba

__all__ = ["chunk_comba", "fused_recurrent_comba", "naive_recurrent_comba"]


def _probe_inputs(device, dtype):
    B, T, H, HV, K, V = 1, 100, 1, 2, 64, 32
    return dict(
        q=torch.randn(B, T, H, K, device=device).to(dtype),
        k=torch.randn(B, T, H, K, device=device).to(dtype),
        v=torch.randn(B, T, HV, V, device=device).to(dtype),
        p=torch.randn(B, T, H, K, device=device).to(dtype),
        g=-torch.rand(B, T, HV, device=device) * 0.3,
        beta=torch.rand(B, T, HV, device=device).to(dtype),
        initial_state=torch.randn(B, HV, K, V, device=device),
        output_final_state=True, use_qk_l2norm_in_kernel=True)


def _ref(q, k, v, p, g, beta, **kw):
    return naive_recurrent_comba(q, k, v, p, g, beta, **kw)


def _rec(q, k, v, p, g, beta, **kw):
    return fused_recurrent_comba(q, k, p, v, g, beta, **kw)


for _name, _fn in (("chunk_comba", chunk_comba), ("fused_recurrent_comba", _rec)):
    register_probe(_name, fn=_fn, ref=_ref, make_inputs=_probe_inputs,
                   grad_inputs=("q", "k", "v", "p", "g", "beta", "initial_state"))
