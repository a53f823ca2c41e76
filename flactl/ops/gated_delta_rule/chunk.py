"""``chunk_gated_delta_rule``: chunkwise-parallel Gated DeltaNet (kernels in ops/common/delta_*)."""
from __future__ import annotations

from typing import Optional

import torch

from ..common.delta_api import delta_chunk_op


def chunk_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    cu_seqlens: Optional[torch.LongTensor] = None,
    **kwargs,
):
    r"""Gated DeltaNet, chunked:
    ``S_t = exp(g_t) S_{t-1};  S_t += beta_t k_t (v_t - S_t^T k_t)^T;  o_t = scale S_t^T q_t``.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, HV, V]`` with ``HV`` a multiple of ``H`` (grouped value
            heads: value head j reads key head ``j // (HV // H)``).
        g: log-decay ``[B, T, HV]`` (<= 0), or the raw gate logits ``a`` with ``use_gate_in_kernel``.
        beta: ``[B, T, HV]`` (or logits with ``use_beta_sigmoid_in_kernel``); default 1.
        scale: default ``K ** -0.5``.
        initial_state: ``[N, HV, K, V]`` (``[N, HV, V, K]`` with ``state_v_first``).
        output_final_state: return the final state (float32).
        use_qk_l2norm_in_kernel: L2-normalise q and k first.
        cu_seqlens: LongTensor ``[N+1]`` offsets of packed sequences (B must be 1).
        kwargs: ``use_gate_in_kernel`` with ``A_log [HV]``, ``dt_bias [HV]``:
            ``g = -exp(A_log) * softplus(g + dt_bias)``; ``use_beta_sigmoid_in_kernel`` (beta =
            sigmoid(beta), times 2 with ``allow_neg_eigval``); ``state_v_first``; ``chunk_size`` (64).

    Returns:
        ``(o [B, T, HV, V], final_state or None)``.

    Example::

        >>> B, T, H, HV, K, V = 2, 100, 2, 4, 64, 64
        >>> q, k = torch.randn(B, T, H, K), torch.randn(B, T, H, K)
        >>> v, a, b = torch.randn(B, T, HV, V), torch.randn(B, T, HV), torch.randn(B, T, HV)
        >>> A_log, dt_bias = torch.zeros(HV), torch.zeros(HV)
        >>> o, ht = chunk_gated_delta_rule(q, k, v, a, b, use_qk_l2norm_in_kernel=True,
        ...     use_gate_in_kernel=True, A_log=A_log, dt_bias=dt_bias,
        ...     use_beta_sigmoid_in_kernel=True, output_final_state=True)
    """
    return delta_chunk_op(q, k, v, beta, g, gated=True, allow_gva=True, scale=scale,
                          initial_state=initial_state, output_final_state=output_final_state,
                          cu_seqlens=cu_seqlens, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, **kwargs)


chunk_gdn = chunk_gated_delta_rule
