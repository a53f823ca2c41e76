"""``parallel_simple_gla``: fla's attention-form API, computed with the chunk kernels.

fla's parallel mode evaluates o = (scale · (q kᵀ) ⊙ D) v with D_ij = exp(Gabs_i − Gabs_j) (i ≥ j)
block by block; the chunked algorithm gives the same o with less work, so this entry point calls
``chunk_simple_gla`` and only materialises the attention matrix when asked
(``output_attentions=True``: float32 [B, H, T, T], quadratic memory — for inspection only).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..utils.index import seq_boundaries
from .chunk import chunk_simple_gla


def decayed_attention(q, k, g=None, g_gamma=None, scale=None, cu_seqlens=None) -> torch.Tensor:
    """scale · (q_i·k_j) · exp(Gabs_i − Gabs_j) for j <= i within a sequence, else 0: [B, H, T, T] float32."""
    B, T, H, K = q.shape
    scale = K ** -0.5 if scale is None else scale
    a = torch.zeros(B, H, T, T, dtype=torch.float32, device=q.device)
    for b, bos, eos in seq_boundaries(cu_seqlens, B, T):
        L = eos - bos
        G = torch.zeros(L, H, dtype=torch.float32, device=q.device)
        if g is not None:
            G = G + g[b, bos:eos].float().cumsum(0)
        if g_gamma is not None:
            G = G + g_gamma.float()[None] * torch.arange(1, L + 1, device=q.device, dtype=torch.float32)[:, None]
        diff = (G[:, None] - G[None, :]).permute(2, 0, 1)
        causal = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
        diff = torch.where(causal, diff, torch.full_like(diff, float("-inf")))
        s = torch.einsum("ihk,jhk->hij", q[b, bos:eos].float(), k[b, bos:eos].float()) * scale
        a[b, :, bos:eos, bos:eos] = s * diff.exp()
    return a


def parallel_simple_gla(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    g: Optional[torch.Tensor] = None, g_gamma: Optional[torch.Tensor] = None,
    scale: Optional[float] = None, output_attentions: bool = False,
    cu_seqlens: Optional[torch.Tensor] = None, **kwargs,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Simple GLA in fla's parallel-mode signature; returns (o [B,T,H,V], attn [B,H,T,T] or None).

    Example::

        >>> q, k, v = torch.randn(1, 20, 2, 16), torch.randn(1, 20, 2, 16), torch.randn(1, 20, 2, 16)
        >>> o, attn = parallel_simple_gla(q, k, v, g=-torch.rand(1, 20, 2) * 0.1, output_attentions=True)
    """
    o, _ = chunk_simple_gla(q, k, v, g=g, g_gamma=g_gamma, scale=scale, cu_seqlens=cu_seqlens)
    attn = None
    if output_attentions:
        with torch.no_grad():
            attn = decayed_attention(q, k, g, g_gamma, scale, cu_seqlens)
    return o, attn
