"""Fused recurrent retention (RetNet): simple GLA with the fixed per-head decay
gamma_h = 1 - 2^(-5 - h), i.e. g_gamma = log(1 - 2^(-5 - h))."""
from __future__ import annotations

from typing import Optional

import torch

from ..common.fused_recurrent import fused_recurrent


def retention_log_decay(num_heads: int, device=None) -> torch.Tensor:
    """RetNet's per-head log-decay [H] (float32): log(1 - 2^(-5 - h))."""
    h = torch.arange(num_heads, dtype=torch.float32, device=device)
    return torch.log1p(-torch.exp2(-5.0 - h))


def fused_recurrent_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: Optional[float] = None,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    reverse: bool = False,
    state_v_first: bool = False,
    cu_seqlens: Optional[torch.LongTensor] = None,
):
    """S_t = gamma_h S_{t-1} + k_t^T v_t,  o_t = scale q_t S_t, gamma_h = 1 - 2^(-5 - h).

    Args:
        q, k: [B, T, H, K]; v: [B, T, H, V]; scale defaults to K ** -0.5.
        initial_state: [N, H, K, V] ([N, H, V, K] with ``state_v_first``).
        output_final_state, reverse, cu_seqlens: as in ``fused_recurrent_simple_gla``.
    Returns:
        (o [B, T, H, V], final_state [N, H, K, V] float32 or None)

    Example:
        >>> q, k, v = (torch.randn(2, 7, 4, 32) for _ in range(3))
        >>> o, ht = fused_recurrent_retention(q, k, v, output_final_state=True)
    """
    if not isinstance(q, torch.Tensor) or q.dim() != 4:
        raise ValueError(f"q must be a 4-D tensor [B, T, H, K], got {getattr(q, 'shape', type(q))}")
    g_gamma = retention_log_decay(q.shape[2], device=q.device)
    return fused_recurrent(q, k, v, g_gamma=g_gamma, scale=scale, initial_state=initial_state,
                           output_final_state=output_final_state, reverse=reverse,
                           state_v_first=state_v_first, cu_seqlens=cu_seqlens)
