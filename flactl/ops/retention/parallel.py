"""``parallel_retention``: fla's attention-form API for retention, computed with the chunk kernels
(see flactl/ops/simple_gla/parallel.py)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..simple_gla.parallel import parallel_simple_gla
from ..utils.validate import check_rank
from .chunk import retention_log_decay


def parallel_retention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: Optional[float] = None,
    output_attentions: bool = False, cu_seqlens: Optional[torch.Tensor] = None, **kwargs,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Retention in fla's parallel-mode signature; returns (o, attn [B,H,T,T] float32 or None)."""
    check_rank("q", q, 4, "[B, T, H, K]")
    return parallel_simple_gla(q, k, v, g_gamma=retention_log_decay(q.shape[2], q.device), scale=scale,
                               output_attentions=output_attentions, cu_seqlens=cu_seqlens)
