"""Reference Comba recurrence (Hu et al. 2025, "Comba: Improving Bilinear RNNs with Closed-loop
Control"), token by token — the oracle. The erase uses an auxiliary key p and the state *before*
the token's decay:

    e_t = v_t - S_{t-1}^T p_t
    S_t = exp(g_t) S_{t-1} + beta_t k_t e_t^T
    o_t = scale S_t^T q_t

GVA as in the gated delta rule: q, k, p have H heads; v, g, beta and the state HV = G*H.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..utils.index import seq_boundaries


def naive_recurrent_comba(q, k, v, p, g, beta, scale: Optional[float] = None, initial_state=None,
                          output_final_state=False, cu_seqlens=None, use_qk_l2norm_in_kernel=False,
                          dtype=torch.float32):
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    G = HV // H
    scale = K ** -0.5 if scale is None else scale
    qf, kf, pf, vf, bf = (x.to(dtype) for x in (q, k, p, v, beta))
    if use_qk_l2norm_in_kernel:
        qf, kf, pf = (x / x.norm(dim=-1, keepdim=True).clamp_min(1e-6) for x in (qf, kf, pf))
    qf, kf, pf = (x.repeat_interleave(G, 2) for x in (qf, kf, pf))
    o = torch.zeros(B, T, HV, V, dtype=dtype, device=q.device)
    finals = []
    for n, (b, bos, eos) in enumerate(seq_boundaries(cu_seqlens, B, T)):
        S = torch.zeros(HV, K, V, dtype=dtype, device=q.device)
        if initial_state is not None:
            S = S + initial_state[n].to(dtype)
        for t in range(bos, eos):
            err = vf[b, t] - torch.einsum("hk,hkv->hv", pf[b, t], S)
            S = S * g[b, t].to(dtype).exp()[:, None, None] + bf[b, t][:, None, None] * kf[b, t][:, :, None] * err[:, None, :]
            o[b, t] = torch.einsum("hk,hkv->hv", qf[b, t] * scale, S)
        finals.append(S)
    final = torch.stack(finals)
    final = final if dtype == torch.float64 else final.float()
    return o.to(v.dtype), (final if output_final_state else None)
