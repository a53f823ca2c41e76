"""Vectorised torch chunk path for Comba (the CPU backend of chunk_comba)."""
from __future__ import annotations

from ..common.delta_torch import torch_chunk_delta


def torch_chunk_comba(q, k, v, p, g, beta, scale=None, initial_state=None, output_final_state=False,
                      cu_seqlens=None):
    """Same contract as ``chunk_comba`` without validation or in-op transforms."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return torch_chunk_delta(q, k, v, beta, g, scale, initial_state, output_final_state, cu_seqlens, p=p)
