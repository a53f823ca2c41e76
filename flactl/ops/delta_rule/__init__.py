"""DeltaNet (Yang et al. 2024): ``chunk_delta_rule``, ``fused_recurrent_delta_rule``; math in README.md."""
from __future__ import annotations

import torch

from ..probes import register_probe
from .chunk import chunk_delta_rule
from .fused_recurrent import fused_recurrent_delta_rule
from .naive import naive_recurrent_delta_rule

__all__ = ["chunk_delta_rule", "fused_recurrent_delta_rule", "naive_recurrent_delta_rule"]


def _probe_inputs(device, dtype):
    B, T, H, K, V = 2, 100, 2, 64, 32
    q = torch.randn(B, T, H, K, device=device).to(dtype)
    k = torch.nn.functional.normalize(torch.randn(B, T, H, K, device=device), dim=-1).to(dtype)
    v = torch.randn(B, T, H, V, device=device).to(dtype)
    beta = torch.rand(B, T, H, device=device).to(dtype)
    h0 = torch.randn(B, H, K, V, device=device)
    return dict(q=q, k=k, v=v, beta=beta, initial_state=h0, output_final_state=True)


def _ref(q, k, v, beta, initial_state, output_final_state):
    return naive_recurrent_delta_rule(q, k, v, beta, initial_state=initial_state, output_final_state=True)


for _name, _fn in (("chunk_delta_rule", chunk_delta_rule), ("fused_recurrent_delta_rule", fused_recurrent_delta_rule)):
    register_probe(_name, fn=_fn, ref=_ref, make_inputs=_probe_inputs,
                   grad_inputs=("q", "k", "v", "beta", "initial_state"))
