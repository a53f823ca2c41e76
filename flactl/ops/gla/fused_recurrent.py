"""Fused recurrent GLA: per-channel key decay ``gk`` and/or value decay ``gv`` (log-space), a thin
wrapper over ``flactl.ops.common.fused_recurrent``."""
from __future__ import annotations

from typing import Optional

import torch

from ..common.fused_recurrent import fused_recurrent


def fused_recurrent_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gk: Optional[torch.Tensor] = None,
    gv: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    reverse: bool = False,
    state_v_first: bool = False,
    cu_seqlens: Optional[torch.LongTensor] = None,
):
    """S_t = (exp(gk_t)^T exp(gv_t)) ⊙ S_{t-1} + k_t^T v_t,  o_t = scale q_t S_t.

    Args:
        q, k: [B, T, H, K]; v: [B, T, H, V].
        gk: key-side log-decay [B, T, H, K] (<= 0), optional; gv: value-side log-decay [B, T, H, V].
        scale: defaults to K ** -0.5.
        initial_state: [N, H, K, V] ([N, H, V, K] with ``state_v_first``).
        output_final_state, reverse, cu_seqlens: as in ``fused_recurrent_simple_gla``.
    Returns:
        (o [B, T, H, V], final_state [N, H, K, V] float32 or None)

    Example:
        >>> q, k, v = (torch.randn(1, 9, 2, 16) for _ in range(3))
        >>> gk = torch.rand(1, 9, 2, 16).log()
        >>> o, ht = fused_recurrent_gla(q, k, v, gk=gk, output_final_state=True)
    """
    return fused_recurrent(q, k, v, gk=gk, gv=gv, scale=scale, initial_state=initial_state,
                           output_final_state=output_final_state, reverse=reverse,
                           state_v_first=state_v_first, cu_seqlens=cu_seqlens)
