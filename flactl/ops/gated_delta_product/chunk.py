"""``chunk_gated_delta_product``: DeltaProduct as a gated delta rule over the interleaved steps.

With n Householder steps per token, the token recurrence is exactly the gated delta rule run over
the n*T interleaved rows of (k, v, beta) when the decay g_t sits on the first row of token t (zero
log-decay elsewhere) and the query q_t is read out after the last row (zero queries elsewhere).
So the op expands q and g onto the n*T grid and calls the shared chunk kernels; gradients flow
back through the expansion. Cost: the chunk kernels on n*T rows.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..common.delta_api import delta_chunk_op
from ..utils import validate


def _spread(x: torch.Tensor, n: int, at_end: bool) -> torch.Tensor:
    """[B, T, ...] -> [B, T*n, ...], x on row n-1 (at_end) or row 0 of each group, zeros elsewhere."""
    B, T = x.shape[:2]
    z = x.new_zeros(B, T, n - 1, *x.shape[2:])
    parts = [z, x.unsqueeze(2)] if at_end else [x.unsqueeze(2), z]
    return torch.cat(parts, 2).reshape(B, T * n, *x.shape[2:])


def chunk_gated_delta_product(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: Optional[torch.Tensor],
    beta: torch.Tensor,
    num_householder: int = 1,
    scale: Optional[float] = None,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    cu_seqlens: Optional[torch.LongTensor] = None,
    **kwargs,
):
    r"""Gated DeltaProduct, chunked.

    Args:
        q: ``[B, T, H, K]``; k: ``[B, T*n, H, K]``, v: ``[B, T*n, HV, V]``, beta: ``[B, T*n, HV]``
            with n = ``num_householder`` steps per token, interleaved (row ``t*n + j`` is step j of token t).
        g: log-decay ``[B, T, HV]`` per token, or None (DeltaProduct without forget gate).
        cu_seqlens: token offsets ``[N+1]`` (of q's T); other arguments as in chunk_gated_delta_rule.

    Returns:
        ``(o [B, T, HV, V], final_state [N, HV, K, V] float32 or None)``.

    Example::

        >>> B, T, H, K, n = 1, 50, 2, 32, 2
        >>> q = torch.randn(B, T, H, K)
        >>> k = torch.nn.functional.normalize(torch.randn(B, T * n, H, K), dim=-1)
        >>> v, beta = torch.randn(B, T * n, H, K), torch.rand(B, T * n, H)
        >>> o, ht = chunk_gated_delta_product(q, k, v, -torch.rand(B, T, H), beta, num_householder=n)
    """
    n = int(num_householder)
    if n < 1:
        raise ValueError(f"num_householder must be >= 1, got {num_householder}")
    validate.check_rank("q", q, 4, "[B, T, H, K]")
    validate.check_rank("k", k, 4, "[B, T*num_householder, H, K]")
    B, T, H, K = q.shape
    if tuple(k.shape) != (B, T * n, H, K):
        raise ValueError(f"k must have shape [B, T*num_householder, H, K] = {(B, T * n, H, K)}, got {tuple(k.shape)}")
    validate.check_rank("v", v, 4, "[B, T*num_householder, HV, V]")
    if v.shape[1] != T * n:
        raise ValueError(f"v must have T*num_householder = {T * n} rows, got shape {tuple(v.shape)}")
    HV = v.shape[2]
    if g is not None:
        validate.check_gate("g", g, (B, T, HV), "[B, T, HV]")
    qn = q
    if use_qk_l2norm_in_kernel:
        from ..common.delta_chunk import l2norm
        qn, k = l2norm(q), l2norm(k)
    if scale is None:
        scale = K ** -0.5
    q2 = _spread(qn, n, at_end=True) if n > 1 else qn
    g2 = (_spread(g, n, at_end=False) if n > 1 else g) if g is not None else torch.zeros(
        B, T * n, HV, device=q.device, dtype=torch.float32)
    cu2 = cu_seqlens * n if cu_seqlens is not None else None
    o, ht = delta_chunk_op(q2, k, v, beta, g2, gated=True, allow_gva=True, scale=scale,
                           initial_state=initial_state, output_final_state=output_final_state,
                           cu_seqlens=cu2, **kwargs)
    if n > 1:
        o = o[:, n - 1::n]
    return o, ht
