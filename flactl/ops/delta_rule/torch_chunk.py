"""Vectorised torch chunk path for the delta rule (the CPU backend; shared with gated_delta_rule)."""
from __future__ import annotations

from ..common.delta_torch import torch_chunk_delta


def torch_chunk_delta_rule(q, k, v, beta, scale=None, initial_state=None, output_final_state=False,
                           cu_seqlens=None):
    """Same contract as ``chunk_delta_rule`` (no validation, no in-op transforms)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return torch_chunk_delta(q, k, v, beta, None, scale, initial_state, output_final_state, cu_seqlens)
