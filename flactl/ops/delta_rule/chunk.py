"""``chunk_delta_rule``: chunkwise-parallel DeltaNet (WY/UT transform; kernels in ops/common/delta_*)."""
from __future__ import annotations

from typing import Optional

import torch

from ..common.delta_api import delta_chunk_op


def chunk_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    cu_seqlens: Optional[torch.LongTensor] = None,
    **kwargs,
):
    r"""DeltaNet, chunked: ``S_t = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T``, ``o_t = scale S_t^T q_t``.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; beta: ``[B, T, H]`` (write strength, default 1).
        scale: default ``K ** -0.5``.
        initial_state: ``[N, H, K, V]`` (N = B, or number of sequences with ``cu_seqlens``).
        output_final_state: also return the final state ``[N, H, K, V]`` (float32).
        use_qk_l2norm_in_kernel: L2-normalise q and k first (eps 1e-6).
        cu_seqlens: LongTensor ``[N+1]`` of packed-sequence offsets (B must be 1).
        kwargs: ``chunk_size`` (64 only), ``state_v_first`` (states as ``[N, H, V, K]``);
            ``cu_seqlens_cpu`` is accepted and ignored.

    Returns:
        ``(o [B, T, H, V] in v's dtype, final_state or None)``.

    Example::

        >>> q, k = torch.randn(2, 100, 4, 64).chunk(2, dim=-1)
        >>> k = torch.nn.functional.normalize(k, dim=-1)
        >>> v, beta = torch.randn(2, 100, 4, 32), torch.rand(2, 100, 4)
        >>> o, ht = chunk_delta_rule(q, k, v, beta, output_final_state=True)
        >>> o.shape, ht.shape
        (torch.Size([2, 100, 4, 32]), torch.Size([2, 4, 32, 32]))
    """
    return delta_chunk_op(q, k, v, beta, None, gated=False, allow_gva=False, scale=scale,
                          initial_state=initial_state, output_final_state=output_final_state,
                          cu_seqlens=cu_seqlens, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, **kwargs)
