"""Reference HGRN recurrence (elementwise, not multi-head): h_t = exp(g_t) * h_{t-1} + x_t, o_t = h_t.

x, g: [B, T, D] (g is a log forget gate, <= 0); state [N, D].
"""
from __future__ import annotations

from typing import Optional

import torch

from ..utils.index import seq_boundaries


def naive_recurrent_hgrn(x, g, initial_state: Optional[torch.Tensor] = None, output_final_state: bool = False,
                         cu_seqlens: Optional[torch.Tensor] = None, dtype: torch.dtype = torch.float32):
    B, T, D = x.shape
    o = torch.zeros(B, T, D, dtype=dtype, device=x.device)
    finals = []
    for n, (b, bos, eos) in enumerate(seq_boundaries(cu_seqlens, B, T)):
        h = torch.zeros(D, dtype=dtype, device=x.device)
        if initial_state is not None:
            h = h + initial_state[n].to(dtype)
        for t in range(bos, eos):
            h = g[b, t].to(dtype).exp() * h + x[b, t].to(dtype)
            o[b, t] = h
        finals.append(h)
    final = torch.stack(finals)
    final = final if dtype == torch.float64 else final.float()
    return o.to(x.dtype), (final if output_final_state else None)
