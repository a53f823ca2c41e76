"""HGRN: elementwise gated linear recurrence h_t = exp(g_t) * h_{t-1} + x_t (see README.md)."""
import torch

from ..probes import register_probe
from .chunk import chunk_hgrn
from .fused_recurrent import fused_recurrent_hgrn
from .naive import naive_recurrent_hgrn

__all__ = ["chunk_hgrn", "fused_recurrent_hgrn", "naive_recurrent_hgrn"]


def _probe_inputs(device, dtype):
    # two uneven packed sequences (one crosses a chunk boundary), an initial state, final state out
    T, D = 70, 48
    return dict(
        x=torch.randn(1, T, D, device=device).to(dtype),
        g=torch.nn.functional.logsigmoid(torch.randn(1, T, D, device=device) + 2).to(dtype),
        initial_state=torch.randn(2, D, device=device),
        output_final_state=True,
        cu_seqlens=torch.tensor([0, 3, T], dtype=torch.long, device=device),
    )


for _name, _fn in (("chunk_hgrn", chunk_hgrn), ("fused_recurrent_hgrn", fused_recurrent_hgrn)):
    register_probe(_name, fn=_fn, ref=naive_recurrent_hgrn, make_inputs=_probe_inputs,
                   grad_inputs=("x", "g", "initial_state"))
