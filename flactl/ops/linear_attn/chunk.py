"""Chunked (ungated) linear attention (Katharopoulos et al. 2020):

    S_t = S_{t-1} + k_t^T v_t,   o_t = scale * q_t S_t

the gate-free case of the simple GLA kernels (no gate tensor, no exp). With ``normalize=True`` the
output is divided by the running normaliser, as fla does:

    z_t = scale * q_t · sum_{s<=t, same sequence} k_s,    o_t <- o_t / (z_t + 1e-10)

(computed in float32 with torch; restarts at each sequence of cu_seqlens; no initial normaliser).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..simple_gla.chunk import chunk_linear_family
from ..utils.index import seq_boundaries


def normalize_output(q: torch.Tensor, k: torch.Tensor, o: torch.Tensor, scale: float,
                     cu_seqlens: Optional[torch.Tensor] = None) -> torch.Tensor:
    """o / (scale * q · cumsum(k) + 1e-10), cumsum per sequence; returns o's dtype."""
    kc = k.float().cumsum(1)
    if cu_seqlens is not None:
        # subtract the running sum up to each sequence's start
        B, T = k.shape[:2]
        base = torch.zeros_like(kc)
        for _, bos, eos in seq_boundaries(cu_seqlens, B, T):
            if bos > 0 and eos > bos:
                base[:, bos:eos] = kc[:, bos - 1:bos]
        kc = kc - base
    z = (q.float() * scale * kc).sum(-1, keepdim=True)
    return (o.float() / (z + 1e-10)).to(o.dtype)


def chunk_linear_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: Optional[float] = None,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    normalize: bool = False,
    cu_seqlens: Optional[torch.Tensor] = None,
    **kwargs,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Linear attention, chunked.

    Args:
        q, k: [B, T, H, K]; v: [B, T, H, V]; scale (default K ** -0.5);
        initial_state [N, H, K, V]; output_final_state; normalize (divide by q · cumsum(k), see module doc);
        cu_seqlens int [N+1] (B == 1).
    Returns:
        o [B, T, H, V], final state [N, H, K, V] float32 or None.

    Example::

        >>> q, k, v = torch.randn(1, 50, 4, 32).relu(), torch.randn(1, 50, 4, 32).relu(), torch.randn(1, 50, 4, 64)
        >>> o, _ = chunk_linear_attn(q, k, v, normalize=True)
    """
    if kwargs.get("head_first", False):
        raise ValueError("head_first=True is not supported: inputs must be [B, T, H, ...]")
    o, ht = chunk_linear_family(q, k, v, None, None, scale, initial_state, output_final_state, cu_seqlens,
                                kwargs.get("chunk_size", 64))
    if normalize:
        o = normalize_output(q, k, o, q.shape[-1] ** -0.5 if scale is None else float(scale), cu_seqlens)
    return o, ht
