"""Simple GLA: linear attention with a scalar log-decay per head and step (g [B,T,H], g_gamma [H])."""
import torch

from ..probes import register_probe
from .fused_recurrent import fused_recurrent_simple_gla  # written by K-REC
from .chunk import chunk_simple_gla
from .parallel import parallel_simple_gla
from .naive import naive_recurrent_simple_gla

__all__ = ["fused_recurrent_simple_gla", "parallel_simple_gla", "chunk_simple_gla", "naive_recurrent_simple_gla"]


def _probe_inputs(device, dtype):
    B, T, H, K, V = 2, 100, 2, 64, 32
    return dict(
        q=torch.randn(B, T, H, K, device=device).to(dtype), k=torch.randn(B, T, H, K, device=device).to(dtype),
        v=torch.randn(B, T, H, V, device=device).to(dtype),
        g=torch.empty(B, T, H, device=device).uniform_(0.9, 0.999).log(),
        initial_state=torch.randn(B, H, K, V, device=device), output_final_state=True,
    )


register_probe("chunk_simple_gla", fn=chunk_simple_gla, ref=naive_recurrent_simple_gla, make_inputs=_probe_inputs,
               grad_inputs=("q", "k", "v", "g", "initial_state"))
