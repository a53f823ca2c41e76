"""HGRN (Qin et al., 2023): element-wise gated linear recurrence with a per-layer forget-gate lower bound.

    f_t = lb + (1 - lb) * sigmoid(W_f x_t),   i_t = silu(W_i x_t) * (1 - f_t)
    h_t = f_t ⊙ h_{t-1} + i_t,                o_t = W_o (rmsnorm(h_t) * silu(W_g x_t))

Parameter names equal fla's ``HGRNAttention``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._deps import FusedRMSNormGated, ShortConvolution, hgrn_op
from .base import RecurrentMixer


class HGRNAttention(RecurrentMixer):
    """HGRN token mixer.

    Args: mode='chunk', hidden_size=1024, expand_ratio=1, use_short_conv=False, conv_size=4, conv_bias=False,
    elementwise_affine=True, norm_eps=1e-5, layer_idx=None.
    forward(hidden_states, attention_mask, past_key_values, use_cache, cu_seqlens, lower_bound [D] or None)
    → (o, None, past_key_values). Cached ``recurrent_state`` ``[N, D*expand_ratio]``.
    """

    def __init__(self, mode: str = "chunk", hidden_size: int = 1024, expand_ratio: Optional[int] = 1,
                 use_short_conv: bool = False, conv_size: int = 4, conv_bias: bool = False,
                 elementwise_affine: Optional[bool] = True, norm_eps: float = 1e-5, layer_idx: Optional[int] = None,
                 **kwargs):
        super().__init__()
        self.mode, self.layer_idx = mode, layer_idx
        self.hidden_size, self.expand_ratio = hidden_size, expand_ratio
        self.input_dim = int(hidden_size * expand_ratio)
        self.use_short_conv = use_short_conv
        self.i_proj = nn.Linear(hidden_size, self.input_dim, bias=False)
        self.f_proj = nn.Linear(hidden_size, self.input_dim, bias=False)
        self.g_proj = nn.Linear(hidden_size, self.input_dim, bias=False)
        if use_short_conv:
            self.f_conv1d = ShortConvolution(self.input_dim, conv_size, bias=conv_bias, activation=None)
            self.i_conv1d = ShortConvolution(self.input_dim, conv_size, bias=conv_bias, activation=None)
        self.g_norm = FusedRMSNormGated(self.input_dim, elementwise_affine, norm_eps)
        self.o_proj = nn.Linear(self.input_dim, hidden_size, bias=False)

    def mix(self, x: torch.Tensor, cu: Optional[torch.Tensor], state: dict, mode: str, use_cache: bool,
            lower_bound: Optional[torch.Tensor] = None, **kwargs):
        i, f = self.i_proj(x), self.f_proj(x)
        conv_state = None
        if self.use_short_conv:
            (i, f), conv_state = self.run_convs((self.i_conv1d, self.f_conv1d), (i, f), state, use_cache, cu)
        f = f.float().sigmoid()
        if lower_bound is not None and self.layer_idx is not None and self.layer_idx > 0:
            f = lower_bound.float() + (1 - lower_bound.float()) * f
        i = (F.silu(i.float()) * (1 - f)).to(x.dtype)
        g = f.log()
        h0 = state.get("recurrent_state")
        o, ht = hgrn_op(mode, i, g, initial_state=h0, output_final_state=use_cache, cu_seqlens=cu)
        states = dict(recurrent_state=ht, conv_state=conv_state)
        o = self.o_proj(self.g_norm(o, self.g_proj(x)))
        return o, states
