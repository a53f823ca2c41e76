"""Reference (gated) delta rule, token by token — the oracle for delta_rule / gated_delta_rule.

    S_t = exp(g_t) S_{t-1}                       (g_t = 0 for the ungated delta rule)
    S_t = S_t + beta_t k_t (v_t - S_t^T k_t)^T   (S_t in R^{K x V})
    o_t = scale * S_t^T q_t

Grouped value heads (GVA): q,k have H heads; v, beta, g have HV = G*H heads; value head j uses
key head j // G. The state is per value head: [N, HV, K, V].
"""
from __future__ import annotations

from typing import Optional

import torch

from ..utils.index import seq_boundaries


def naive_recurrent_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    cu_seqlens: Optional[torch.Tensor] = None,
    use_qk_l2norm: bool = False,
    dtype: torch.dtype = torch.float32,
    use_qk_l2norm_in_kernel: bool = False,
):
    use_qk_l2norm = use_qk_l2norm or use_qk_l2norm_in_kernel
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    G = HV // H
    scale = K ** -0.5 if scale is None else scale
    qf, kf, vf, bf = q.to(dtype), k.to(dtype), v.to(dtype), beta.to(dtype)
    if use_qk_l2norm:
        qf = qf / qf.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        kf = kf / kf.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    qf = qf.repeat_interleave(G, dim=2)
    kf = kf.repeat_interleave(G, dim=2)
    o = torch.zeros(B, T, HV, V, dtype=dtype, device=q.device)
    finals = []
    for n, (b, bos, eos) in enumerate(seq_boundaries(cu_seqlens, B, T)):
        S = torch.zeros(HV, K, V, dtype=dtype, device=q.device)
        if initial_state is not None:
            S = S + initial_state[n].to(dtype)
        for t in range(bos, eos):
            if g is not None:
                S = S * g[b, t].to(dtype).exp()[:, None, None]
            kt = kf[b, t]
            err = vf[b, t] - torch.einsum("hk,hkv->hv", kt, S)
            S = S + bf[b, t][:, None, None] * kt[:, :, None] * err[:, None, :]
            o[b, t] = torch.einsum("hk,hkv->hv", qf[b, t] * scale, S)
        finals.append(S)
    final = torch.stack(finals)
    final = final if dtype == torch.float64 else final.float()
    return o.to(v.dtype), (final if output_final_state else None)
