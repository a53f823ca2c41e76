"""Reference Gated DeltaProduct (Siems et al. 2025), token by token — the oracle.

For token t with num_householder = n steps (k, v, beta carry n interleaved rows per token along T):
    S = exp(g_t) S
    for j in 0..n-1:  S = S + beta_{t,j} k_{t,j} (v_{t,j} - S^T k_{t,j})^T
    o_t = scale S^T q_t
"""
from __future__ import annotations

from typing import Optional

import torch

from ..utils.index import seq_boundaries


def naive_recurrent_gated_delta_product(q, k, v, g, beta, num_householder: int = 1, scale: Optional[float] = None,
                                        initial_state=None, output_final_state=False, cu_seqlens=None,
                                        use_qk_l2norm_in_kernel=False, dtype=torch.float32):
    B, T, H, K = q.shape
    n = num_householder
    HV, V = v.shape[2], v.shape[3]
    G = HV // H
    scale = K ** -0.5 if scale is None else scale
    qf, kf, vf, bf = q.to(dtype), k.to(dtype), v.to(dtype), beta.to(dtype)
    if use_qk_l2norm_in_kernel:
        qf = qf / qf.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        kf = kf / kf.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    qf, kf = qf.repeat_interleave(G, 2), kf.repeat_interleave(G, 2)
    o = torch.zeros(B, T, HV, V, dtype=dtype, device=q.device)
    finals = []
    for i, (b, bos, eos) in enumerate(seq_boundaries(cu_seqlens, B, T)):
        S = torch.zeros(HV, K, V, dtype=dtype, device=q.device)
        if initial_state is not None:
            S = S + initial_state[i].to(dtype)
        for t in range(bos, eos):
            if g is not None:
                S = S * g[b, t].to(dtype).exp()[:, None, None]
            for j in range(n):
                kt, vt, bt = kf[b, t * n + j], vf[b, t * n + j], bf[b, t * n + j]
                err = vt - torch.einsum("hk,hkv->hv", kt, S)
                S = S + bt[:, None, None] * kt[:, :, None] * err[:, None, :]
            o[b, t] = torch.einsum("hk,hkv->hv", qf[b, t] * scale, S)
        finals.append(S)
    final = torch.stack(finals)
    final = final if dtype == torch.float64 else final.float()
    return o.to(v.dtype), (final if output_final_state else None)
