"""``fused_recurrent_comba``: token-by-token Comba (decoding). Positional order follows fla:
``(q, k, p, v, g, beta, ...)`` (note: chunk_comba takes ``(q, k, v, p, ...)``)."""
from __future__ import annotations

from typing import Optional

import torch

from ..common.delta_api import delta_recurrent_op


def fused_recurrent_comba(
    q: torch.Tensor,
    k: torch.Tensor,
    p: torch.Tensor,
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
    r"""Comba, recurrent form (same math as :func:`chunk_comba`); backward recomputes through the chunk
    kernels. ``inplace_final_state=True`` updates ``initial_state`` in place (inference).

    Example::

        >>> q, k, p = torch.randn(4, 1, 2, 32), torch.randn(4, 1, 2, 32), torch.randn(4, 1, 2, 32)
        >>> v, g, beta = torch.randn(4, 1, 2, 32), -torch.rand(4, 1, 2), torch.rand(4, 1, 2)
        >>> o, h = fused_recurrent_comba(q, k, p, v, g, beta, output_final_state=True,
        ...                              use_qk_l2norm_in_kernel=True)
    """
    return delta_recurrent_op(q, k, v, beta, g, gated=True, allow_gva=True, scale=scale,
                              initial_state=initial_state, output_final_state=output_final_state,
                              cu_seqlens=cu_seqlens, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, p=p, **kwargs)
