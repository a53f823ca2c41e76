"""Row-wise L2 normalisation ``y = x / sqrt(sum(x^2) + eps)`` over the last dim, with backward.

Runs on the shared fused norm kernels (sum instead of mean, no weight). Example::

    >>> q = l2_norm(torch.randn(2, 5, 4, 64))   # each head vector has unit norm
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from .layernorm import norm_fn

__all__ = ["l2_norm", "l2norm", "L2Norm"]


def l2_norm(x: torch.Tensor, eps: float = 1e-6, output_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """x: [..., D] -> same shape, unit L2 norm over D (output in ``output_dtype`` or x's dtype)."""
    y = norm_fn(x, None, None, eps=eps, is_rms_norm=True, is_l2=True)
    return y if output_dtype is None else y.to(output_dtype)


l2norm = l2_norm


class L2Norm(nn.Module):
    def __init__(self, eps: float = 1e-6, output_dtype: Optional[torch.dtype] = None):
        super().__init__()
        self.eps = eps
        self.output_dtype = output_dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return l2_norm(x, self.eps, self.output_dtype)
