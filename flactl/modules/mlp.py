"""``GatedMLP``: SwiGLU feed-forward, ``down_proj(act(gate_proj(x)) * up_proj(x))``.

Parameter names ``gate_proj``, ``up_proj``, ``down_proj`` (no bias) match fla's checkpoints. With
``fuse_swiglu`` and a swish activation the product and the down projection run through
``swiglu_linear`` (the product is recomputed in backward, not stored).

``intermediate_size`` default (fla): ``int(hidden_size * hidden_ratio * 2/3)`` rounded up to a multiple of
256, ``hidden_ratio`` default 4.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from .activations import ACT2FN, swiglu_linear

__all__ = ["GatedMLP"]


class GatedMLP(nn.Module):
    def __init__(self, hidden_size: int, hidden_ratio: Optional[int] = None, intermediate_size: Optional[int] = None,
                 hidden_act: str = "swish", fuse_swiglu: bool = True):
        super().__init__()
        if hidden_act not in ACT2FN:
            raise ValueError(f"hidden_act must be one of {sorted(ACT2FN)}, got {hidden_act!r}")
        if hidden_ratio is None:
            hidden_ratio = 4
        if intermediate_size is None:
            intermediate_size = int(hidden_size * hidden_ratio * 2 / 3)
            intermediate_size = 256 * ((intermediate_size + 256 - 1) // 256)
        self.hidden_size = hidden_size
        self.hidden_ratio = hidden_ratio
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.fuse_swiglu = fuse_swiglu and hidden_act in ("swish", "silu")
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)
        self.act_fn = ACT2FN[hidden_act]

    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        gate, up = self.gate_proj(x), self.up_proj(x)
        if self.fuse_swiglu:
            return swiglu_linear(gate, up, self.down_proj.weight, self.down_proj.bias)
        return self.down_proj(self.act_fn(gate) * up)
