"""``chunk_comba``: chunkwise Comba on the shared delta-rule kernels (erase key p, see README.md)."""
from __future__ import annotations

from typing import Optional

import torch

from ..common.delta_api import delta_chunk_op


def chunk_comba(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    p: torch.Tensor,
    g: torch.Tensor,
    beta: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    initial_state: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    cu_seqlens: Optional[torch.LongTensor] = None,
    **kwargs,
):
    r"""Comba, chunked: ``S_t = exp(g_t) S_{t-1} + beta_t k_t (v_t - S_{t-1}^T p_t)^T``, ``o_t = scale S_t^T q_t``.

    Args:
        q, k, p: ``[B, T, H, K]`` (p: auxiliary erase key); v: ``[B, T, HV, V]`` (HV multiple of H);
        g: log-decay ``[B, T, HV]``; beta: ``[B, T, HV]``; other arguments as chunk_gated_delta_rule
        (``use_gate_in_kernel``/``A_log``/``dt_bias``, ``use_beta_sigmoid_in_kernel`` accepted too).
        ``use_qk_l2norm_in_kernel`` normalises q, k and p.

    Returns:
        ``(o [B, T, HV, V], final_state [N, HV, K, V] float32 or None)``.

    Example::

        >>> B, T, H, K = 1, 80, 2, 32
        >>> q, k, p = (torch.nn.functional.normalize(torch.randn(B, T, H, K), dim=-1) for _ in range(3))
        >>> v, g, beta = torch.randn(B, T, H, K), -torch.rand(B, T, H), torch.rand(B, T, H)
        >>> o, ht = chunk_comba(q, k, v, p, g, beta, output_final_state=True)
    """
    return delta_chunk_op(q, k, v, beta, g, gated=True, allow_gva=True, scale=scale,
                          initial_state=initial_state, output_final_state=output_final_state,
                          cu_seqlens=cu_seqlens, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, p=p, **kwargs)
