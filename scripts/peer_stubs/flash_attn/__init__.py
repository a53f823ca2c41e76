"""Stand-in for the flash-attn package, for the fla side of the parity checks only (scripts/gpu_models.py).

fla's Transformer and MLA layers import ``flash_attn_func`` / ``flash_attn_varlen_func`` and refuse to run
without them; the device machine has no flash-attn build. This computes the same function with torch's
SDPA in float32: causal with the bottom-right alignment flash-attn uses (query i of n sees keys up to
i + (k_len - n)), a (left, 0) sliding window, grouped kv heads, and the softmax scale. It is never on
flactl's import path: the parity script puts ``scripts/peer_stubs`` on sys.path when flash_attn is absent.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__version__ = "0.0-stub"


def _attend(q, k, v, causal, window_size, softmax_scale):
    """q [Tq, H, D], k/v [Tk, Hk, D] (one sequence)."""
    Tq, H, D = q.shape
    Tk, Hk = k.shape[0], k.shape[1]
    if Hk != H:
        k = k.repeat_interleave(H // Hk, dim=1)
        v = v.repeat_interleave(H // Hk, dim=1)
    i = torch.arange(Tq, device=q.device)[:, None] + (Tk - Tq)
    j = torch.arange(Tk, device=q.device)[None, :]
    allowed = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device)
    if causal:
        allowed &= j <= i
    left = window_size[0] if window_size is not None else -1
    if left is not None and left >= 0:
        allowed &= j >= i - left
    qf, kf, vf = (x.transpose(0, 1).float() for x in (q, k, v))
    o = F.scaled_dot_product_attention(qf, kf, vf, attn_mask=allowed, scale=softmax_scale)
    return o.transpose(0, 1).to(q.dtype)


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), **_):
    return torch.stack([_attend(q[b], k[b], v[b], causal, window_size, softmax_scale) for b in range(q.shape[0])])


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None,
                           dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), **_):
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    return torch.cat([_attend(q[cq[n]:cq[n + 1]], k[ck[n]:ck[n + 1]], v[ck[n]:ck[n + 1]], causal, window_size,
                              softmax_scale) for n in range(len(cq) - 1)])
