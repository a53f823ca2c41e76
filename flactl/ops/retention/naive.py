"""Float32 token-by-token reference for retention (the test oracle)."""
from __future__ import annotations

from typing import Optional

import torch

from ..common.naive import naive_recurrent_linear
from .chunk import retention_log_decay


def naive_recurrent_retention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: Optional[float] = None,
    initial_state: Optional[torch.Tensor] = None, output_final_state: bool = False,
    cu_seqlens: Optional[torch.Tensor] = None, dtype: torch.dtype = torch.float32,
):
    """S_t = (1 - 2^(-5-h)) S_{t-1} + k_t^T v_t, o_t = scale q_t S_t."""
    g_gamma = retention_log_decay(q.shape[2], q.device)
    return naive_recurrent_linear(q, k, v, g_gamma=g_gamma, scale=scale, initial_state=initial_state,
                                  output_final_state=output_final_state, cu_seqlens=cu_seqlens, dtype=dtype)
