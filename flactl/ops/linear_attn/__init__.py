"""Linear attention without decay (optionally normalised by q · cumsum(k))."""
import torch

from ..probes import register_probe
from .fused_recurrent import fused_recurrent_linear_attn  # written by K-REC
from .chunk import chunk_linear_attn, normalize_output
from .naive import naive_recurrent_linear_attn

__all__ = ["fused_recurrent_linear_attn", "chunk_linear_attn", "naive_recurrent_linear_attn", "normalize_output"]


def _probe_inputs(device, dtype):
    B, T, H, K, V = 2, 100, 2, 64, 32
    return dict(
        q=torch.randn(B, T, H, K, device=device).to(dtype), k=torch.randn(B, T, H, K, device=device).to(dtype),
        v=torch.randn(B, T, H, V, device=device).to(dtype),
        initial_state=torch.randn(B, H, K, V, device=device), output_final_state=True,
    )


register_probe("chunk_linear_attn", fn=chunk_linear_attn, ref=naive_recurrent_linear_attn,
               make_inputs=_probe_inputs, grad_inputs=("q", "k", "v", "initial_state"))
