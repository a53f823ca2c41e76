"""Float32 token-by-token reference for linear attention (the test oracle)."""
from __future__ import annotations

from typing import Optional

import torch

from ..common.naive import naive_recurrent_linear
from .chunk import normalize_output


def naive_recurrent_linear_attn(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: Optional[float] = None,
    initial_state: Optional[torch.Tensor] = None, output_final_state: bool = False,
    normalize: bool = False, cu_seqlens: Optional[torch.Tensor] = None, dtype: torch.dtype = torch.float32,
):
    """S_t = S_{t-1} + k_t^T v_t, o_t = scale q_t S_t (optionally / (scale q_t · sum_{s<=t} k_s))."""
    o, ht = naive_recurrent_linear(q, k, v, scale=scale, initial_state=initial_state,
                                   output_final_state=output_final_state, cu_seqlens=cu_seqlens, dtype=dtype)
    if normalize:
        o = normalize_output(q, k, o, q.shape[-1] ** -0.5 if scale is None else scale, cu_seqlens)
    return o, ht
