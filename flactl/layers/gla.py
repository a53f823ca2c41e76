"""Gated Linear Attention (Yang et al., 2024): per-key-channel data-dependent decay.

    gk_t = logsigmoid(W2 W1 x_t + b) / gate_logit_normalizer      (log decay, [H, K])
    S_t = diag(exp(gk_t)) S_{t-1} + k_t v_t^T,   o_t = norm(q_t^T S_t * K^-1/2) * swish(g_t)

Parameter names equal fla's ``GatedLinearAttention`` (fla-facts §3.3).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._deps import linear_op
from .base import RecurrentMixer

_FEATURE = {None: None, "identity": None, "relu": F.relu, "elu": lambda x: F.elu(x) + 1, "swish": F.silu,
            "silu": F.silu, "sigmoid": torch.sigmoid}


class GatedLinearAttention(RecurrentMixer):
    """GLA token mixer.

    Args (fla's names and defaults): mode='chunk', hidden_size=1024, expand_k=0.5, expand_v=1.0,
    num_heads=4, num_kv_heads=None (GQA by repeating k/v/gk), feature_map=None, use_short_conv=False,
    conv_size=4, conv_bias=False, use_output_gate=True, gate_fn='swish', elementwise_affine=True,
    norm_eps=1e-5, gate_logit_normalizer=16, gate_low_rank_dim=16, clamp_min=None, fuse_norm=True,
    layer_idx=None.

    forward(hidden_states [B, T, h], attention_mask [B, T], past_key_values, use_cache, cu_seqlens)
    → (o [B, T, h], None, past_key_values). Cached ``recurrent_state`` is ``[N, H, K, V]`` float32.
    """

    def __init__(self, mode: str = "chunk", hidden_size: int = 1024, expand_k: float = 0.5, expand_v: float = 1.0,
                 num_heads: int = 4, num_kv_heads: Optional[int] = None, feature_map: Optional[str] = None,
                 use_short_conv: bool = False, conv_size: int = 4, conv_bias: bool = False,
                 use_output_gate: bool = True, gate_fn: str = "swish", elementwise_affine: Optional[bool] = True,
                 norm_eps: float = 1e-5, gate_logit_normalizer: int = 16, gate_low_rank_dim: int = 16,
                 clamp_min: Optional[float] = None, fuse_norm: bool = True, layer_idx: Optional[int] = None,
                 **kwargs):
        super().__init__()
        self.mode, self.layer_idx = mode, layer_idx
        self.build_heads(hidden_size, num_heads, num_kv_heads, expand_k, expand_v)
        if feature_map not in _FEATURE:
            raise ValueError(f"feature_map must be one of {list(_FEATURE)}, got {feature_map!r}")
        self.feature_map_fn = _FEATURE[feature_map]
        self.use_short_conv = use_short_conv
        self.gate_logit_normalizer, self.clamp_min = gate_logit_normalizer, clamp_min

        self.build_qkv(hidden_size, self.key_dim, self.key_dim_per_group, self.value_dim_per_group, use_short_conv, conv_size, conv_bias)
        self.gk_proj = nn.Sequential(nn.Linear(hidden_size, gate_low_rank_dim, bias=False),
                                     nn.Linear(gate_low_rank_dim, self.key_dim_per_group, bias=True))
        self.build_norm_gate_output(hidden_size, use_output_gate, gate_fn, fuse_norm, elementwise_affine, norm_eps)

    def mix(self, x: torch.Tensor, cu: Optional[torch.Tensor], state: dict, mode: str, use_cache: bool, **kwargs):
        q, k, v, conv_state = self.project_qkv(x, state, use_cache, cu)
        gk = self.gk_proj(x)
        lead = x.shape[:2]
        q = q.view(*lead, self.num_heads, self.head_k_dim)
        k = k.view(*lead, self.num_kv_heads, self.head_k_dim)
        v = v.view(*lead, self.num_kv_heads, self.head_v_dim)
        gk = gk.view(*lead, self.num_kv_heads, self.head_k_dim)
        if self.feature_map_fn is not None:
            q, k = self.feature_map_fn(q), self.feature_map_fn(k)
        gk = F.logsigmoid(gk.float()) / self.gate_logit_normalizer
        if self.clamp_min is not None:
            gk = gk.clamp_min(self.clamp_min)
        if self.num_kv_groups > 1:
            k, v, gk = (t.repeat_interleave(self.num_kv_groups, dim=2) for t in (k, v, gk))
        h0 = state.get("recurrent_state")
        o, ht = linear_op(mode, q, k, v, gk=gk, initial_state=h0, output_final_state=use_cache, cu_seqlens=cu)
        states = dict(recurrent_state=ht, conv_state=conv_state)
        return self.norm_gate_output(o, x), states
