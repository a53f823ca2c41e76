"""Torch path for the gated delta product: the same expansion onto the interleaved grid, run on
the shared vectorised torch chunk path (chunk_gated_delta_product dispatches to it on CPU)."""
from __future__ import annotations

from .chunk import chunk_gated_delta_product
from ..utils.backend import force_backend


def torch_chunk_gated_delta_product(q, k, v, g, beta, num_householder=1, **kwargs):
    with force_backend("torch"):
        return chunk_gated_delta_product(q, k, v, g, beta, num_householder=num_householder, **kwargs)
