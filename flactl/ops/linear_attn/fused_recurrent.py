"""Fused recurrent linear attention (no decay), optionally normalised by the running key sum.

    S_t = S_{t-1} + k_t^T v_t,   o_t = scale q_t S_t
    normalize=True:  z_t = z_0 + sum_{s<=t} k_s,   o_t <- o_t / (scale q_t . z_t + 1e-10)
(sums run from the end when ``reverse``). The state part is the generic kernel in
``flactl.ops.common.fused_recurrent``; the normaliser is a float32 cumsum that autograd differentiates.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch

from ..common.fused_recurrent import fused_recurrent
from ..utils.index import seq_boundaries

_EPS = 1e-10


def _key_cumsum(k: torch.Tensor, reverse: bool, cu_seqlens: Optional[torch.Tensor]) -> torch.Tensor:
    """Per-sequence running sum of k ([B, T, H, K], float32)."""
    kf = k.float()

    def csum(x):
        return x.flip(1).cumsum(1).flip(1) if reverse else x.cumsum(1)

    if cu_seqlens is None:
        return csum(kf)
    B, T = k.shape[:2]
    return torch.cat([csum(kf[:, bos:eos]) for _, bos, eos in seq_boundaries(cu_seqlens, B, T)], 1)


def fused_recurrent_linear_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: Optional[float] = None,
    initial_state: Optional[Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]] = None,
    output_final_state: bool = False,
    reverse: bool = False,
    normalize: bool = False,
    cu_seqlens: Optional[torch.LongTensor] = None,
):
    """Linear attention, token by token.

    Args:
        q, k: [B, T, H, K]; v: [B, T, H, V]; scale defaults to K ** -0.5.
        initial_state: [N, H, K, V]; with ``normalize`` either that or a tuple (kv_state [N, H, K, V],
            z_state [N, 1, H, K]) carrying the running key sum.
        output_final_state: return the final state (with ``normalize``: the tuple (kv_state, z_state)).
        reverse: scan from the last token to the first.
        normalize: divide each output by scale * q_t . z_t (+1e-10), z_t the running key sum.
        cu_seqlens: int [N+1] packed-sequence offsets (B must be 1).
    Returns:
        (o [B, T, H, V], final state or None)

    Example:
        >>> q, k, v = (torch.rand(2, 6, 2, 16) for _ in range(3))
        >>> o, (S, z) = fused_recurrent_linear_attn(q, k, v, normalize=True, output_final_state=True)
    """
    kv_init, z_init = initial_state, None
    if isinstance(initial_state, (tuple, list)):
        if not normalize or len(initial_state) != 2:
            raise ValueError("initial_state may be a (kv_state, z_state) tuple only with normalize=True")
        kv_init, z_init = initial_state
    o, ht = fused_recurrent(q, k, v, scale=scale, initial_state=kv_init, output_final_state=output_final_state,
                            reverse=reverse, cu_seqlens=cu_seqlens)
    if not normalize:
        return o, ht
    B, T, H, K = q.shape
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    if z_init is not None and (not isinstance(z_init, torch.Tensor) or tuple(z_init.shape) != (N, 1, H, K)):
        raise ValueError(f"z_state in initial_state must have shape [N, 1, H, K] = {(N, 1, H, K)}, "
                         f"got {getattr(z_init, 'shape', type(z_init))}")
    scale = K ** -0.5 if scale is None else float(scale)
    z = _key_cumsum(k, reverse, cu_seqlens)
    if z_init is not None:
        if cu_seqlens is None:
            z = z + z_init.float()
        else:
            lens = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
            z = z + z_init.float()[:, 0].repeat_interleave(lens, dim=0, output_size=T)[None]
    den = (q.float() * scale * z).sum(-1, keepdim=True) + _EPS
    o = (o.float() / den).to(o.dtype)
    if not output_final_state:
        return o, None
    if cu_seqlens is None:
        z_final = z[:, :1] if reverse else z[:, -1:]
        if T == 0:
            z_final = z_init.float() if z_init is not None else q.new_zeros(B, 1, H, K, dtype=torch.float32)
    else:
        finals = []
        for n, (_, bos, eos) in enumerate(seq_boundaries(cu_seqlens, B, T)):
            if eos > bos:
                finals.append(z[0, bos:bos + 1] if reverse else z[0, eos - 1:eos])
            else:  # an empty sequence keeps its initial key sum
                finals.append(z_init[n].float() if z_init is not None else z.new_zeros(1, H, K))
        z_final = torch.stack(finals, 0)
    return o, (ht, z_final)
