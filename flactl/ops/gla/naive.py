"""Float32 token-by-token reference for GLA (the test oracle): a thin wrapper over
``flactl.ops.common.naive.naive_recurrent_linear`` with a per-key-channel decay."""
from __future__ import annotations

from typing import Optional

import torch

from ..common.naive import naive_recurrent_linear


def naive_recurrent_gla(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
    scale: Optional[float] = None, initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False, cu_seqlens: Optional[torch.Tensor] = None,
    dtype: torch.dtype = torch.float32,
):
    """S_t = exp(g_t)[:, None] ⊙ S_{t-1} + k_t^T v_t, o_t = scale q_t S_t; g [B,T,H,K]."""
    return naive_recurrent_linear(q, k, v, gk=g, scale=scale, initial_state=initial_state,
                                  output_final_state=output_final_state, cu_seqlens=cu_seqlens, dtype=dtype)
