"""Retention (RetNet): simple GLA with the fixed decay log(1 - 2^(-5-h)) per head."""
import torch

from ..probes import register_probe
from .fused_recurrent import fused_recurrent_retention  # written by K-REC
from .chunk import chunk_retention, retention_log_decay
from .parallel import parallel_retention
from .naive import naive_recurrent_retention

__all__ = ["fused_recurrent_retention", "parallel_retention", "chunk_retention", "naive_recurrent_retention", "retention_log_decay"]


def _probe_inputs(device, dtype):
    B, T, H, K, V = 2, 100, 2, 64, 32
    return dict(
        q=torch.randn(B, T, H, K, device=device).to(dtype), k=torch.randn(B, T, H, K, device=device).to(dtype),
        v=torch.randn(B, T, H, V, device=device).to(dtype),
        initial_state=torch.randn(B, H, K, V, device=device), output_final_state=True,
    )


register_probe("chunk_retention", fn=chunk_retention, ref=naive_recurrent_retention, make_inputs=_probe_inputs,
               grad_inputs=("q", "k", "v", "initial_state"))
