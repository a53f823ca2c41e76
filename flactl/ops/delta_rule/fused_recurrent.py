"""``fused_recurrent_delta_rule``: token-by-token DeltaNet (decoding; kernel in ops/common/delta_recurrent)."""
from __future__ import annotations

from typing import Optional

import torch

from ..common.delta_api import delta_recurrent_op


def fused_recurrent_delta_rule(
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
    r"""DeltaNet, recurrent form (same math and arguments as :func:`chunk_delta_rule`).

    Extra kwargs: ``inplace_final_state=True`` writes the final state into ``initial_state``
    (float32, contiguous; inference only). The backward recomputes through the chunked kernels.

    Example::

        >>> q, k = torch.randn(2, 1, 4, 64).chunk(2, dim=-1)
        >>> v, beta = torch.randn(2, 1, 4, 32), torch.rand(2, 1, 4)
        >>> h = torch.randn(2, 4, 32, 32)
        >>> o, h = fused_recurrent_delta_rule(q, k, v, beta, initial_state=h, output_final_state=True)
    """
    return delta_recurrent_op(q, k, v, beta, None, gated=False, allow_gva=False, scale=scale,
                              initial_state=initial_state, output_final_state=output_final_state,
                              cu_seqlens=cu_seqlens, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, **kwargs)
