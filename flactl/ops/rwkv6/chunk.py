"""RWKV6 ("Finch") on the GLA kernels: no kernel of its own.

    S_t = diag(exp(w_t)) S_{t-1} + k_t^T v_t,      o_t = scale · r_t (S_{t-1} + diag(u) k_t^T v_t)

The output reads the state *before* token t's update, plus a bonus ``u [H, K]`` for the current token.
GLA is inclusive (``o_t = scale · q_t P_t``, ``P_t = diag(exp(g_t)) P_{t-1} + k_t^T v_t``), so feeding it
k, v, w shifted right by one token inside each sequence (zeros at every sequence start) gives
``P_t = S_{t-1}``. The bonus term and the final state ``S_last = diag(exp(w_last)) P_last + k_last^T v_last``
are added in torch. See README.md in this folder for the derivation.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..gla import chunk_gla, fused_recurrent_gla
from ..utils.validate import check_cu_seqlens, check_gate, check_initial_state, check_qkv, check_rank, check_shape


def _validate(r, k, v, w, u, initial_state, cu_seqlens):
    for name, t in (("r", r), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    check_rank("r", r, 4, "[B, T, H, K]")
    check_rank("k", k, 4, "[B, T, H, K]")
    if r.shape != k.shape:
        raise ValueError(f"r and k must have the same shape [B, T, H, K], got r {tuple(r.shape)}, k {tuple(k.shape)}")
    B, T, H, _, K, V = check_qkv(r, k, v)
    if not (r.dtype == k.dtype == v.dtype):
        raise ValueError(f"r, k, v must share one dtype, got {r.dtype}, {k.dtype}, {v.dtype}")
    if w is None:
        raise ValueError("w (the [B, T, H, K] log-decay) is required")
    check_gate("w", w, (B, T, H, K), "[B, T, H, K]")
    if u is None or not isinstance(u, torch.Tensor):
        raise ValueError(f"u (the bonus [H, K]) must be a torch.Tensor, got {type(u).__name__}")
    check_rank("u", u, 2, "[H, K]")
    check_shape("u", u, (H, K), "[H, K]")
    N = check_cu_seqlens(cu_seqlens, B, T)
    check_initial_state(initial_state, N, H, K, V)
    return B, T, H, K, V, N


def _bounds(B: int, T: int, cu_seqlens: Optional[torch.Tensor], device):
    """(starts, ends) LongTensors [N] of each sequence in the flat [B*T] token stream."""
    if cu_seqlens is not None:
        cu = cu_seqlens.to(device=device, dtype=torch.long)
        return cu[:-1], cu[1:]
    starts = torch.arange(B, device=device, dtype=torch.long) * T
    return starts, starts + T


def shift_right(x: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """x [B, T, ...] → x[t-1] per sequence, zeros at each sequence's first token (``starts`` flat)."""
    B, T = x.shape[:2]
    flat = x.reshape(B * T, *x.shape[2:])
    prev = torch.cat([flat.new_zeros(1, *flat.shape[1:]), flat[:-1]], 0)
    first = torch.zeros(B * T, dtype=torch.bool, device=x.device)
    first[starts[starts < B * T]] = True
    prev = torch.where(first.view(-1, *([1] * (flat.dim() - 1))), torch.zeros_like(prev), prev)
    return prev.view_as(x)


def _rwkv6(gla_fn, r, k, v, w, u, scale, initial_state, output_final_state, cu_seqlens):
    B, T, H, K, V, N = _validate(r, k, v, w, u, initial_state, cu_seqlens)
    scale = K ** -0.5 if scale is None else float(scale)
    starts, ends = _bounds(B, T, cu_seqlens, r.device)
    ks, vs, ws = (shift_right(t, starts) for t in (k, v, w))
    o, ht = gla_fn(r, ks, vs, ws.float(), scale, initial_state, output_final_state, cu_seqlens)
    bonus = (r.float() * u.float() * k.float()).sum(-1, keepdim=True) * scale  # [B, T, H, 1]
    o = (o.float() + bonus * v.float()).to(o.dtype)
    if output_final_state:
        nonempty = ends > starts
        last = (ends - 1).clamp(min=0)
        if B * T > 0:
            kl = k.reshape(B * T, H, K)[last].float()
            vl = v.reshape(B * T, H, V)[last].float()
            wl = w.reshape(B * T, H, K)[last].float()
            step = torch.exp(wl)[..., None] * ht + kl[..., None] * vl[..., None, :]
            ht = torch.where(nonempty.view(N, 1, 1, 1), step, ht)
    return o, ht


def _chunk(r, k, v, g, scale, h0, out_final, cu):
    return chunk_gla(r, k, v, g, scale=scale, initial_state=h0, output_final_state=out_final, cu_seqlens=cu)


def _recurrent(r, k, v, g, scale, h0, out_final, cu):
    return fused_recurrent_gla(r, k, v, gk=g, scale=scale, initial_state=h0, output_final_state=out_final,
                               cu_seqlens=cu)


def chunk_rwkv6(
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    scale: Optional[float] = None,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    cu_seqlens: Optional[torch.LongTensor] = None,
    **kwargs,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """RWKV6 linear attention, chunked (training and prefill), on ``chunk_gla``.

    Args:
        r, k: [B, T, H, K] receptance (query) and keys; v: [B, T, H, V] (one dtype).
        w: [B, T, H, K] per-step log-decay (<= 0; the layers pass ``-exp(...)``), float32 recommended.
        u: [H, K] bonus of the current token.
        scale: defaults to K ** -0.5 (the layers pass 1.0).
        initial_state: [N, H, K, V]; N = B, or the number of sequences with ``cu_seqlens``.
        output_final_state: also return the final state [N, H, K, V] float32.
        cu_seqlens: int [N+1] offsets of packed sequences (B == 1).
    Returns:
        o [B, T, H, V] (dtype of v), final state or None.

    Example::

        >>> r, k = torch.randn(2, 100, 4, 64), torch.randn(2, 100, 4, 64)
        >>> v, w = torch.randn(2, 100, 4, 32), -torch.rand(2, 100, 4, 64)
        >>> o, s = chunk_rwkv6(r, k, v, w, torch.randn(4, 64), output_final_state=True)
    """
    if kwargs.get("head_first", False):
        raise ValueError("head_first=True is not supported: inputs must be [B, T, H, ...]")
    return _rwkv6(_chunk, r, k, v, w, u, scale, initial_state, output_final_state, cu_seqlens)


def fused_recurrent_rwkv6(
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    scale: Optional[float] = None,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    reverse: bool = False,
    cu_seqlens: Optional[torch.LongTensor] = None,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """RWKV6 token by token (decoding), on ``fused_recurrent_gla``. Arguments as :func:`chunk_rwkv6`;
    ``reverse=True`` is not supported (ValueError).

    Example::

        >>> r, k, v = (torch.randn(1, 9, 2, 16) for _ in range(3))
        >>> o, s = fused_recurrent_rwkv6(r, k, v, -torch.rand(1, 9, 2, 16), torch.randn(2, 16),
        ...                              output_final_state=True)
    """
    if reverse:
        raise ValueError("reverse=True is not supported by fused_recurrent_rwkv6")
    return _rwkv6(_recurrent, r, k, v, w, u, scale, initial_state, output_final_state, cu_seqlens)
