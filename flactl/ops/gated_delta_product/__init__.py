"""Gated DeltaProduct (Siems et al. 2025): ``chunk_gated_delta_product``; math in README.md.

Decoding uses ``fused_recurrent_gated_delta_rule`` on the interleaved steps (as fla's layer does).
"""
from __future__ import annotations

import torch

from ..probes import register_probe
from .chunk import chunk_gated_delta_product
from .naive import naive_recurrent_gated_delta_product

__all__ = ["chunk_gated_delta_product", "naive_recurrent_gated_delta_product"]


def _probe_inputs(device, dtype):
    B, T, H, K, V, n = 1, 70, 2, 64, 32, 2
    return dict(
        q=torch.randn(B, T, H, K, device=device).to(dtype),
        k=torch.nn.functional.normalize(torch.randn(B, T * n, H, K, device=device), dim=-1).to(dtype),
        v=torch.randn(B, T * n, H, V, device=device).to(dtype),
        g=-torch.rand(B, T, H, device=device) * 0.2,
        beta=torch.rand(B, T * n, H, device=device).to(dtype),
        initial_state=torch.randn(B, H, K, V, device=device),
        num_householder=n, output_final_state=True)


register_probe("chunk_gated_delta_product", fn=chunk_gated_delta_product, ref=naive_recurrent_gated_delta_product,
               make_inputs=_probe_inputs, grad_inputs=("q", "k", "v", "g", "beta", "initial_state"))
