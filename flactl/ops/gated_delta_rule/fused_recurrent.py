"""``fused_recurrent_gated_delta_rule``: token-by-token Gated DeltaNet (decoding)."""
from __future__ import annotations

from typing import Optional

import torch

from ..common.delta_api import delta_recurrent_op


def fused_recurrent_gated_delta_rule(
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
    r"""Gated DeltaNet, recurrent form (same math and arguments as :func:`chunk_gated_delta_rule`).

    The in-op transforms (l2norm, gate from logits, beta sigmoid) run inside the kernel, so a
    decode step is one launch with no host sync. ``inplace_final_state=True`` updates
    ``initial_state`` (float32, contiguous) in place (inference only).

    Example::

        >>> q, k = torch.randn(8, 1, 2, 64), torch.randn(8, 1, 2, 64)
        >>> v, g, b = torch.randn(8, 1, 4, 64), -torch.rand(8, 1, 4), torch.rand(8, 1, 4)
        >>> h = torch.zeros(8, 4, 64, 64)
        >>> o, h = fused_recurrent_gated_delta_rule(q, k, v, g, b, initial_state=h,
        ...     output_final_state=True, use_qk_l2norm_in_kernel=True)
    """
    return delta_recurrent_op(q, k, v, beta, g, gated=True, allow_gva=True, scale=scale,
                              initial_state=initial_state, output_final_state=output_final_state,
                              cu_seqlens=cu_seqlens, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, **kwargs)


fused_recurrent_gdn = fused_recurrent_gated_delta_rule
