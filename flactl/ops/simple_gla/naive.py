"""Float32 token-by-token reference for simple GLA (the test oracle): a thin wrapper over
``flactl.ops.common.naive.naive_recurrent_linear`` with a scalar per-head decay."""
from __future__ import annotations

from typing import Optional

import torch

from ..common.naive import naive_recurrent_linear


def naive_recurrent_simple_gla(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    g: Optional[torch.Tensor] = None, g_gamma: Optional[torch.Tensor] = None,
    scale: Optional[float] = None, initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False, cu_seqlens: Optional[torch.Tensor] = None,
    dtype: torch.dtype = torch.float32,
):
    """S_t = exp(g_t + g_gamma) S_{t-1} + k_t^T v_t, o_t = scale q_t S_t. Shapes as chunk_simple_gla."""
    return naive_recurrent_linear(q, k, v, g=g, g_gamma=g_gamma, scale=scale, initial_state=initial_state,
                                  output_final_state=output_final_state, cu_seqlens=cu_seqlens, dtype=dtype)
