"""GLA: gated linear attention with a per-key-channel log-decay g [B,T,H,K]."""
import torch

from ..probes import register_probe
from .fused_recurrent import fused_recurrent_gla  # written by K-REC
from .chunk import chunk_gla
from .naive import naive_recurrent_gla

__all__ = ["fused_recurrent_gla", "chunk_gla", "naive_recurrent_gla"]


def _probe_inputs(device, dtype):
    B, T, H, K, V = 2, 100, 2, 64, 32
    return dict(
        q=torch.randn(B, T, H, K, device=device).to(dtype), k=torch.randn(B, T, H, K, device=device).to(dtype),
        v=torch.randn(B, T, H, V, device=device).to(dtype),
        g=torch.nn.functional.logsigmoid(torch.randn(B, T, H, K, device=device)) / 16,
        initial_state=torch.randn(B, H, K, V, device=device), output_final_state=True,
    )


register_probe("chunk_gla", fn=chunk_gla, ref=naive_recurrent_gla, make_inputs=_probe_inputs,
               grad_inputs=("q", "k", "v", "g", "initial_state"))
