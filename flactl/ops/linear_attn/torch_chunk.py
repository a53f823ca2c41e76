"""Vectorised torch chunked linear attention (the path CPU tensors take; see ../common/chunk_torch.py)."""
from __future__ import annotations

from typing import Optional

from ..common.chunk_torch import torch_chunk_linear
from .chunk import normalize_output


def torch_chunk_linear_attn(q, k, v, scale: Optional[float] = None, initial_state=None, output_final_state=False,
                            normalize: bool = False, cu_seqlens=None, chunk_size: int = 64):
    """Same arguments and returns as ``chunk_linear_attn``; float32 math, torch autograd."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    o, ht = torch_chunk_linear(q, k, v, scale=scale, initial_state=initial_state,
                               output_final_state=output_final_state, cu_seqlens=cu_seqlens, chunk_size=chunk_size)
    if normalize:
        o = normalize_output(q, k, o, scale, cu_seqlens)
    return o, ht
