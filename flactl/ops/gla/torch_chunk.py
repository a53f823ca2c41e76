"""Vectorised torch chunked GLA (the path CPU tensors take; see ../common/chunk_torch.py)."""
from __future__ import annotations

from typing import Optional

from ..common.chunk_torch import torch_chunk_linear


def torch_chunk_gla(q, k, v, g, scale: Optional[float] = None, initial_state=None, output_final_state=False,
                    cu_seqlens=None, chunk_size: int = 64):
    """Same arguments and returns as ``chunk_gla`` (g [B,T,H,K]); exact masked-exponent einsum, float32."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return torch_chunk_linear(q, k, v, gk=g, scale=scale, initial_state=initial_state,
                              output_final_state=output_final_state, cu_seqlens=cu_seqlens, chunk_size=chunk_size)
