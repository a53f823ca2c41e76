"""DeltaNet (Yang et al., 2024): the delta rule  S_t = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T,
o_t = S_t^T q_t * K^-1/2, with q/k L2-normalised inside the kernel. Parameter names equal fla's ``DeltaNet``."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._deps import delta_op
from .base import RecurrentMixer


def _qk_act(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "relu":
        return F.relu(x)
    if name == "elu":
        return F.elu(x) + 1.0
    return x  # 'identity' (and 'silu', applied earlier with the projection / conv)


class DeltaNet(RecurrentMixer):
    """DeltaNet token mixer.

    Args (fla's names/defaults): mode='chunk', hidden_size=1024, expand_k=1.0, expand_v=1.0, num_heads=4,
    use_beta=True, use_gate=False, use_short_conv=True, conv_size=4, conv_bias=False, allow_neg_eigval=False,
    qk_activation='silu' (silu|relu|elu|identity), qk_norm='l2' (l2|sum), norm_eps=1e-5, layer_idx=None.

    forward(hidden_states [B, T, h], attention_mask, past_key_values, use_cache, cu_seqlens)
    → (o [B, T, h], None, past_key_values). Cached ``recurrent_state`` ``[N, H, K, V]``.
    """

    def __init__(self, mode: str = "chunk", d_model: Optional[int] = None, hidden_size: int = 1024,
                 expand_k: float = 1.0, expand_v: float = 1.0, num_heads: int = 4, use_beta: bool = True,
                 use_gate: bool = False, use_short_conv: bool = True, conv_size: int = 4, conv_bias: bool = False,
                 allow_neg_eigval: bool = False, layer_idx: Optional[int] = None, qk_activation: str = "silu",
                 qk_norm: str = "l2", norm_eps: float = 1e-5, **kwargs):
        super().__init__()
        if d_model is not None:
            hidden_size = d_model
        if qk_activation not in ("silu", "relu", "elu", "identity"):
            raise ValueError(f"qk_activation must be silu|relu|elu|identity, got {qk_activation!r}")
        if qk_norm not in ("l2", "sum"):
            raise ValueError(f"qk_norm must be 'l2' or 'sum', got {qk_norm!r}")
        self.mode, self.layer_idx = mode, layer_idx
        self.hidden_size, self.num_heads = hidden_size, num_heads
        self.key_dim, self.value_dim = int(hidden_size * expand_k), int(hidden_size * expand_v)
        self.head_k_dim, self.head_v_dim = self.key_dim // num_heads, self.value_dim // num_heads
        self.use_beta, self.use_gate, self.use_short_conv = use_beta, use_gate, use_short_conv
        self.allow_neg_eigval, self.qk_activation, self.qk_norm = allow_neg_eigval, qk_activation, qk_norm
        self.build_qkv(hidden_size, self.key_dim, self.key_dim, self.value_dim, use_short_conv, conv_size, conv_bias, qk_activation="silu" if qk_activation == "silu" else None)
        if use_beta:
            self.b_proj = nn.Linear(hidden_size, num_heads, bias=False)
        self.build_gated_output(hidden_size, self.value_dim, self.head_v_dim, use_gate, norm_eps)

    def mix(self, x: torch.Tensor, cu: Optional[torch.Tensor], state: dict, mode: str, use_cache: bool, **kwargs):
        q, k, v, conv_state = self.project_qkv(x, state, use_cache, cu)
        if not self.use_short_conv:
            if self.qk_activation == "silu":
                q, k = F.silu(q), F.silu(k)
            v = F.silu(v)
        lead = x.shape[:2]
        q = _qk_act(q.view(*lead, self.num_heads, self.head_k_dim), self.qk_activation)
        k = _qk_act(k.view(*lead, self.num_heads, self.head_k_dim), self.qk_activation)
        v = v.view(*lead, self.num_heads, self.head_v_dim)
        if self.qk_norm == "sum":
            q, k = q / q.sum(-1, keepdim=True), k / k.sum(-1, keepdim=True)
        beta = self.b_proj(x).sigmoid() if self.use_beta else q.new_ones(*lead, self.num_heads)
        if self.allow_neg_eigval:
            beta = beta * 2.0
        h0 = state.get("recurrent_state")
        o, ht = delta_op(mode, q, k, v, beta, initial_state=h0, output_final_state=use_cache, cu_seqlens=cu,
                         use_qk_l2norm_in_kernel=self.qk_norm == "l2")
        states = dict(recurrent_state=ht, conv_state=conv_state)
        o = self.gated_output(o, x)
        return o, states
