"""Vectorised torch chunked retention (the path CPU tensors take; see ../common/chunk_torch.py)."""
from __future__ import annotations

from typing import Optional

from ..common.chunk_torch import torch_chunk_linear
from .chunk import retention_log_decay


def torch_chunk_retention(q, k, v, scale: Optional[float] = None, initial_state=None, output_final_state=False,
                          cu_seqlens=None, chunk_size: int = 64):
    """Same arguments and returns as ``chunk_retention``; float32 math, torch autograd."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return torch_chunk_linear(q, k, v, g_gamma=retention_log_decay(q.shape[2], q.device), scale=scale,
                              initial_state=initial_state, output_final_state=output_final_state,
                              cu_seqlens=cu_seqlens, chunk_size=chunk_size)
