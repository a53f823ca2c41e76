"""Vectorised torch path for HGRN (CPU tensors without the Triton interpreter).

Chunks of C steps: with G_t the cumulative log-gate inside a chunk,
    h_t = sum_{s<=t} exp(G_t - G_s) x_s + exp(G_t) h_in
The [C, C] decay matrix only ever exponentiates differences G_t - G_s <= 0 (masked entries are set
to -inf before exp), so nothing overflows. Autograd differentiates it.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..utils.index import seq_boundaries

CHUNK = 16


def _scan(x: torch.Tensor, g: torch.Tensor, h: torch.Tensor):
    """x, g [B, L, D] float32, h [B, D] -> (o [B, L, D], h_last [B, D])."""
    L = x.shape[1]
    mask = torch.ones(CHUNK, CHUNK, dtype=torch.bool, device=x.device).tril()
    outs = []
    for s in range(0, L, CHUNK):
        xc, gc = x[:, s:s + CHUNK], g[:, s:s + CHUNK]
        c = xc.shape[1]
        G = gc.cumsum(1)
        diff = G[:, :, None, :] - G[:, None, :, :]
        A = torch.where(mask[:c, :c, None], diff, float("-inf")).exp()
        hc = torch.einsum("btsd,bsd->btd", A, xc) + G.exp() * h[:, None]
        h = hc[:, -1]
        outs.append(hc)
    o = torch.cat(outs, 1) if outs else x.new_zeros(x.shape)
    return o, h


def torch_chunk_hgrn(x, g, initial_state: Optional[torch.Tensor] = None, output_final_state: bool = False,
                     cu_seqlens: Optional[torch.Tensor] = None):
    """Same contract as ``chunk_hgrn`` / ``fused_recurrent_hgrn`` (inputs already validated)."""
    B, T, D = x.shape
    xf, gf = x.float(), g.float()
    h0 = initial_state.float() if initial_state is not None else None
    if cu_seqlens is None:
        h = h0 if h0 is not None else xf.new_zeros(B, D)
        o, ht = _scan(xf, gf, h)
    else:
        outs, finals = [], []
        for n, (_, bos, eos) in enumerate(seq_boundaries(cu_seqlens, B, T)):
            h = h0[n:n + 1] if h0 is not None else xf.new_zeros(1, D)
            o_n, h_n = _scan(xf[:, bos:eos], gf[:, bos:eos], h)
            outs.append(o_n)
            finals.append(h_n)
        o, ht = torch.cat(outs, 1), torch.cat(finals, 0)
    return o.to(x.dtype), (ht if output_final_state else None)
