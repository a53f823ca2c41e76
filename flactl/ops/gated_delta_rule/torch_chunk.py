"""Vectorised torch chunk path for the gated delta rule (the CPU backend)."""
from __future__ import annotations

from ..common.delta_torch import torch_chunk_delta


def torch_chunk_gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
                                 cu_seqlens=None):
    """Same contract as ``chunk_gated_delta_rule`` without validation or in-op transforms."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return torch_chunk_delta(q, k, v, beta, g, scale, initial_state, output_final_state, cu_seqlens)
