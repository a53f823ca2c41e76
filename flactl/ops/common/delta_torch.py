"""Vectorised torch chunk path of the (gated) delta rule (CPU default; autograd gives the backward).

Same chunkwise WY/UT math as the Triton kernels (see delta_wy / delta_h / delta_o), written with
batched matmuls over all chunks and heads of a sequence; only the inter-chunk state pass loops.
The triangular solve uses ``torch.linalg.solve_triangular`` (differentiable). Computes in float32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..utils.index import seq_boundaries


def torch_chunk_delta(q, k, v, beta, g, scale, initial_state, output_final_state, cu_seqlens,
                      chunk_size: int = 64, p=None):
    """q,k [B,T,H,K]; v [B,T,HV,V]; beta, g [B,T,HV] (g may be None); returns (o, final fp32 or None).

    p: Comba's erase key [B,T,H,K] (with g): the erase reads the state before token i's decay, so the
    row factors of L and w use gc - g.
    """
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    G = HV // H
    C = chunk_size
    f = torch.float32
    qf = q.float().repeat_interleave(G, dim=2)
    kf = k.float().repeat_interleave(G, dim=2)
    pf = p.float().repeat_interleave(G, dim=2) if p is not None else kf
    vf, bf = v.float(), beta.float()
    gf = g.float() if g is not None else None
    outs, finals = [], []
    eye = torch.eye(C, device=q.device, dtype=f)
    causal = torch.ones(C, C, device=q.device, dtype=torch.bool).tril()
    strict = torch.ones(C, C, device=q.device, dtype=torch.bool).tril(-1)
    for n, (b, bos, eos) in enumerate(seq_boundaries(cu_seqlens, B, T)):
        L = eos - bos
        S = (initial_state[n].float() if initial_state is not None
             else torch.zeros(HV, K, V, device=q.device, dtype=f))
        if L == 0:
            finals.append(S)
            continue
        NC = (L + C - 1) // C
        pad = NC * C - L

        def chunks(x):  # [L, HV, D] -> [HV, NC, C, D]
            x = F.pad(x, (0, 0, 0, 0, 0, pad)) if x.dim() == 3 else F.pad(x, (0, 0, 0, pad))
            return x.reshape(NC, C, *x.shape[1:]).movedim(2, 0)

        qc, kc, vc = chunks(qf[b, bos:eos]), chunks(kf[b, bos:eos]), chunks(vf[b, bos:eos])
        pc = chunks(pf[b, bos:eos]) if p is not None else kc
        bc = chunks(bf[b, bos:eos])  # [HV, NC, C]
        if gf is not None:
            graw = chunks(gf[b, bos:eos])
            gc = graw.cumsum(-1)
            gcl = gc - graw if p is not None else gc
            diff = gc[..., :, None] - gc[..., None, :]
            gam = torch.where(causal, diff, torch.full_like(diff, -float("inf"))).exp()
            dl = gcl[..., :, None] - gc[..., None, :]
            gaml = torch.where(strict, dl, torch.full_like(dl, -float("inf"))).exp()
            eg = gc.exp()
            egw = gcl.exp()
            egl = (gc[..., -1:] - gc).exp()  # decay from each token to the chunk end
            glast = gc[..., -1].exp()
        else:
            gam = causal.to(f).expand(HV, NC, C, C)
            gaml = gam
            eg = egl = egw = torch.ones_like(bc)
            glast = torch.ones(HV, NC, device=q.device, dtype=f)
        kk = pc @ kc.transpose(-1, -2)
        Lm = torch.where(strict, kk * gaml * bc[..., :, None], torch.zeros_like(kk))
        A = torch.linalg.solve_triangular(eye + Lm, eye.expand_as(Lm), upper=False, unitriangular=True)
        w = A @ (pc * (bc * egw)[..., None])
        u = A @ (vc * bc[..., None])
        attn = (qc @ kc.transpose(-1, -2)) * gam
        os = []
        for c in range(NC):
            vn = u[:, c] - w[:, c] @ S
            os.append(scale * ((qc[:, c] * eg[:, c, :, None]) @ S + attn[:, c] @ vn))
            S = glast[:, c, None, None] * S + (kc[:, c] * egl[:, c, :, None]).transpose(-1, -2) @ vn
        o = torch.stack(os, 1).reshape(HV, NC * C, V)[:, :L].transpose(0, 1)
        outs.append((b, bos, eos, o))
        finals.append(S)
    o = torch.zeros(B, T, HV, V, device=q.device, dtype=f)
    if cu_seqlens is None:
        o = torch.stack([x[3] for x in outs], 0) if outs else o
    else:
        o = torch.cat([x[3] for x in outs], 0)[None] if outs else o
    final = torch.stack(finals, 0) if output_final_state else None
    return o.to(v.dtype), final
