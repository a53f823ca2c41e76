"""Vectorised torch chunkwise algorithm for (gated) linear attention — the path CPU tensors take.

Same math as the Triton kernels (see ``chunk_h``): within a chunk of BT steps, with local
cumulative log-decay G (scalar per head, or per key channel for GLA) and S the state entering it,

    o_i     = scale * [ (q_i ⊙ e^{G_i}) S + sum_{j<=i} (q_i · (k_j ⊙ e^{G_i - G_j})) v_j ]
    S_next  = e^{G_last} ⊙ S + (k ⊙ e^{G_last - G})^T v

Every exponent is masked to <= 0 before ``exp`` (decays <= 0), so nothing overflows. Computed in
float32 and differentiated by torch's autograd. One Python loop over chunks per sequence: fine for
CPU-sized problems (tests, tiny models), not meant to be fast.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..utils.index import seq_boundaries


def torch_chunk_linear(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: Optional[torch.Tensor] = None,
    g_gamma: Optional[torch.Tensor] = None,
    gk: Optional[torch.Tensor] = None,
    scale: float = 1.0,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    cu_seqlens: Optional[torch.Tensor] = None,
    chunk_size: int = 64,
):
    """q, k [B,T,H,K], v [B,T,H,V], g [B,T,H] | g_gamma [H] | gk [B,T,H,K] (raw per-step log-decays).

    Returns o [B,T,H,V] (v dtype) and the final state [N,H,K,V] float32 (or None)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    BT = chunk_size
    f32 = torch.float32
    outs, finals = [], []
    for n, (b, bos, eos) in enumerate(seq_boundaries(cu_seqlens, B, T)):
        S = initial_state[n].to(f32) if initial_state is not None else q.new_zeros(H, K, V, dtype=f32)
        seq_out = []
        for s in range(bos, eos, BT):
            e = min(s + BT, eos)
            L = e - s
            qc, kc, vc = q[b, s:e].to(f32), k[b, s:e].to(f32), v[b, s:e].to(f32)  # [L,H,*]
            causal = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
            if gk is not None:
                G = gk[b, s:e].to(f32).cumsum(0)  # [L,H,K]
                if g is not None or g_gamma is not None:
                    raise ValueError("torch_chunk_linear: combine scalar and vector gates before calling")
                diff = G[:, None] - G[None, :]  # [i,j,H,K]
                diff = torch.where(causal[:, :, None, None], diff, torch.full_like(diff, float("-inf")))
                A = torch.einsum("ihk,jhk,ijhk->hij", qc, kc, diff.exp())
                qd = qc * G.exp()
                Gl = G[-1]  # [H,K]
                kd = kc * (Gl[None] - G).exp()
                decay = Gl.exp()[:, :, None]
            else:
                G = q.new_zeros(L, H, dtype=f32)
                if g is not None:
                    G = G + g[b, s:e].to(f32).cumsum(0)
                if g_gamma is not None:
                    G = G + g_gamma.to(f32)[None, :] * torch.arange(1, L + 1, device=q.device, dtype=f32)[:, None]
                diff = (G[:, None] - G[None, :]).permute(2, 0, 1)  # [H,i,j]
                diff = torch.where(causal[None], diff, torch.full_like(diff, float("-inf")))
                A = torch.einsum("ihk,jhk->hij", qc, kc) * diff.exp()
                qd = qc * G.exp()[..., None]
                Gl = G[-1]  # [H]
                kd = kc * (Gl[None] - G).exp()[..., None]
                decay = Gl.exp()[:, None, None]
            o_c = torch.einsum("ihk,hkv->ihv", qd, S) + torch.einsum("hij,jhv->ihv", A, vc)
            seq_out.append(o_c * scale)
            S = decay * S + torch.einsum("jhk,jhv->hkv", kd, vc)
        outs.append(torch.cat(seq_out, 0) if seq_out else v.new_zeros(0, H, V, dtype=f32))
        finals.append(S)
    if cu_seqlens is None:
        o = torch.stack(outs, 0)
    else:
        o = torch.cat(outs, 0)[None]
    final = torch.stack(finals, 0) if output_final_state else None
    return o.to(v.dtype), final
