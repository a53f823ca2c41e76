"""Token-by-token reference recurrences (the test oracles). Slow, exact, computed in float32 or
float64 (``dtype``), returned in the input dtype (state in float32 unless dtype is float64).

Linear attention with decays (simple_gla / retention / linear_attn / gla):
    S_t = (exp(g_t) * exp(gk_t)[:, None] * exp(gv_t)[None, :]) ⊙ S_{t-1} + k_t^T v_t
    o_t = scale * q_t S_t
with S_t in R^{K x V}; g scalar per head [B,T,H], g_gamma constant per head [H], gk [B,T,H,K],
gv [B,T,H,V]; any subset may be given.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..utils.index import seq_boundaries


def naive_recurrent_linear(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: Optional[torch.Tensor] = None,
    g_gamma: Optional[torch.Tensor] = None,
    gk: Optional[torch.Tensor] = None,
    gv: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    cu_seqlens: Optional[torch.Tensor] = None,
    reverse: bool = False,
    dtype: torch.dtype = torch.float32,
):
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K ** -0.5 if scale is None else scale
    seqs = seq_boundaries(cu_seqlens, B, T)
    o = torch.zeros(B, T, H, V, dtype=dtype, device=q.device)
    finals = []
    qf, kf, vf = q.to(dtype), k.to(dtype), v.to(dtype)
    for n, (b, bos, eos) in enumerate(seqs):
        S = torch.zeros(H, K, V, dtype=dtype, device=q.device)
        if initial_state is not None:
            S = S + initial_state[n].to(dtype)
        steps = range(eos - 1, bos - 1, -1) if reverse else range(bos, eos)
        for t in steps:
            decay = torch.ones(H, K, V, dtype=dtype, device=q.device)
            if g is not None:
                decay = decay * g[b, t].to(dtype).exp()[:, None, None]
            if g_gamma is not None:
                decay = decay * g_gamma.to(dtype).exp()[:, None, None]
            if gk is not None:
                decay = decay * gk[b, t].to(dtype).exp()[:, :, None]
            if gv is not None:
                decay = decay * gv[b, t].to(dtype).exp()[:, None, :]
            S = decay * S + kf[b, t][:, :, None] * vf[b, t][:, None, :]
            o[b, t] = torch.einsum("hk,hkv->hv", qf[b, t] * scale, S)
        finals.append(S)
    final = torch.stack(finals).float() if dtype != torch.float64 else torch.stack(finals)
    return o.to(v.dtype), (final if output_final_state else None)
