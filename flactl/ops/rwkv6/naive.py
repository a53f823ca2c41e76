"""Float32 token-by-token RWKV6 oracle, written from the recurrence:

    o_t = scale · r_t (S_{t-1} + diag(u) k_t^T v_t),    S_t = diag(exp(w_t)) S_{t-1} + k_t^T v_t
"""
from __future__ import annotations

from typing import Optional

import torch


def naive_recurrent_rwkv6(r, k, v, w, u, scale: Optional[float] = None, initial_state=None,
                          output_final_state: bool = False, cu_seqlens=None):
    """Same arguments as ``chunk_rwkv6``; returns (o [B, T, H, V] in v's dtype, final [N, H, K, V] fp32)."""
    B, T, H, K = r.shape
    V = v.shape[-1]
    scale = K ** -0.5 if scale is None else scale
    dt = torch.promote_types(r.dtype, torch.float32)
    r, k, v, w, u = (t.to(dt) for t in (r, k, v, w, u))
    if cu_seqlens is None:
        seqs = [(b, 0, T) for b in range(B)]
    else:
        cu = cu_seqlens.tolist()
        seqs = [(0, a, b) for a, b in zip(cu[:-1], cu[1:])]
    outs = [[None] * T for _ in range(B)]
    finals = []
    for n, (b, bos, eos) in enumerate(seqs):
        S = initial_state[n].to(dt) if initial_state is not None else r.new_zeros(H, K, V)
        for t in range(bos, eos):
            kv = k[b, t, :, :, None] * v[b, t, :, None, :]                 # [H, K, V]
            outs[b][t] = ((r[b, t, :, :, None] * scale) * (S + u[:, :, None] * kv)).sum(1)  # [H, V]
            S = torch.exp(w[b, t])[:, :, None] * S + kv
        finals.append(S)
    o = torch.stack([torch.stack(row, 0) if T else r.new_zeros(0, H, V) for row in
                     [[x if x is not None else r.new_zeros(H, V) for x in outs[b]] for b in range(B)]], 0)
    return o, (torch.stack(finals, 0) if output_final_state else None)
