"""Fused recurrent simple GLA (scalar per-head decay): a thin wrapper over the generic kernel in
``flactl.ops.common.fused_recurrent``. Used for decoding and short inputs."""
from __future__ import annotations

from typing import Optional

import torch

from ..common.fused_recurrent import fused_recurrent


def fused_recurrent_simple_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: Optional[torch.Tensor] = None,
    g_gamma: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    reverse: bool = False,
    state_v_first: bool = False,
    cu_seqlens: Optional[torch.LongTensor] = None,
):
    """S_t = exp(g_t + g_gamma) S_{t-1} + k_t^T v_t,  o_t = scale q_t S_t.

    Args:
        q, k: [B, T, H, K]; v: [B, T, H, V].
        g: log-decay [B, T, H] (<= 0), optional; g_gamma: constant log-decay [H], optional.
        scale: defaults to K ** -0.5.
        initial_state: [N, H, K, V] ([N, H, V, K] with ``state_v_first``); N = B or len(cu_seqlens) - 1.
        output_final_state: return the float32 final state.
        reverse: scan from the last token to the first.
        cu_seqlens: int [N+1] packed-sequence offsets (B must be 1).
    Returns:
        (o [B, T, H, V], final_state [N, H, K, V] float32 or None)

    Example:
        >>> q, k, v = (torch.randn(1, 1, 4, 64) for _ in range(3))
        >>> g = torch.rand(1, 1, 4).log()
        >>> o, ht = fused_recurrent_simple_gla(q, k, v, g, output_final_state=True)
    """
    return fused_recurrent(q, k, v, g=g, g_gamma=g_gamma, scale=scale, initial_state=initial_state,
                           output_final_state=output_final_state, reverse=reverse,
                           state_v_first=state_v_first, cu_seqlens=cu_seqlens)
