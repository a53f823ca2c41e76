"""Chunked retention (RetNet, Sun et al. 2023): simple GLA with a fixed per-head decay

    gamma_h = 1 - 2^(-5 - h),   S_t = gamma_h S_{t-1} + k_t^T v_t,   o_t = scale * q_t S_t

i.e. ``chunk_simple_gla(..., g_gamma=log(gamma))``; the decay is folded into the kernels (no gate
tensor is read), see flactl/ops/simple_gla.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..simple_gla.chunk import chunk_linear_family
from ..utils.validate import check_rank


def retention_log_decay(H: int, device=None) -> torch.Tensor:
    """log(1 - 2^(-5 - h)) for h = 0..H-1, float32 [H]."""
    return torch.log1p(-torch.pow(2.0, -5.0 - torch.arange(H, dtype=torch.float32, device=device)))


def chunk_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: Optional[float] = None,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    cu_seqlens: Optional[torch.Tensor] = None,
    **kwargs,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Multi-scale retention, chunked.

    Args:
        q, k: [B, T, H, K]; v: [B, T, H, V]; scale (default K ** -0.5);
        initial_state [N, H, K, V]; output_final_state; cu_seqlens int [N+1] (B == 1).
    Returns:
        o [B, T, H, V], final state [N, H, K, V] float32 or None.

    Example::

        >>> q, k, v = torch.randn(1, 50, 4, 32), torch.randn(1, 50, 4, 32), torch.randn(1, 50, 4, 64)
        >>> o, _ = chunk_retention(q, k, v)
    """
    if kwargs.get("head_first", False):
        raise ValueError("head_first=True is not supported: inputs must be [B, T, H, ...]")
    check_rank("q", q, 4, "[B, T, H, K]")
    g_gamma = retention_log_decay(q.shape[2], q.device)
    return chunk_linear_family(q, k, v, None, g_gamma, scale, initial_state, output_final_state, cu_seqlens,
                               kwargs.get("chunk_size", 64))
