"""RetNet's multi-scale retention (Sun et al., 2023): linear attention with a fixed per-head decay

    gamma_h = 1 - 2^(-5 - h),   S_t = gamma_h S_{t-1} + k_t v_t^T,   o_t = norm(q_t^T S_t K^-1/2) * swish(g_t)

q and k carry rotary position embeddings (positions per sequence, so padding/varlen/decoding agree).
Parameter names equal fla's ``MultiScaleRetention`` (no rotary keys: the tables are computed on the fly).
"""
from __future__ import annotations

from typing import Optional

import torch

from ._deps import _real, linear_op
from .base import RecurrentMixer
from .gla import _FEATURE
from .utils import rope_qk


def retention_log_decay(num_heads: int, device=None) -> torch.Tensor:
    """log(1 - 2^(-5-h)) for h = 0..H-1, float32 ``[H]``."""
    h = torch.arange(num_heads, dtype=torch.float32, device=device)
    return torch.log1p(-torch.pow(2.0, -5.0 - h))


class MultiScaleRetention(RecurrentMixer):
    """Retention token mixer.

    Args (fla's names/defaults): mode='chunk', hidden_size=1024, expand_k=1.0, expand_v=2.0, num_heads=8,
    num_kv_heads=None, feature_map=None, use_short_conv=False, conv_size=4, conv_bias=False,
    use_output_gate=True, gate_fn='swish', elementwise_affine=True, norm_eps=1e-5, fuse_norm=True,
    layer_idx=None, rope_theta=10000.

    forward(hidden_states [B, T, h], attention_mask, past_key_values, use_cache, cu_seqlens)
    → (o [B, T, h], None, past_key_values). Cached ``recurrent_state`` ``[N, H, K, V]`` float32.
    """

    def __init__(self, mode: str = "chunk", hidden_size: int = 1024, expand_k: float = 1.0, expand_v: float = 2.0,
                 num_heads: int = 8, num_kv_heads: Optional[int] = None, feature_map: Optional[str] = None,
                 use_short_conv: bool = False, conv_size: int = 4, conv_bias: bool = False,
                 use_output_gate: bool = True, gate_fn: str = "swish", elementwise_affine: Optional[bool] = True,
                 norm_eps: float = 1e-5, fuse_norm: bool = True, layer_idx: Optional[int] = None,
                 rope_theta: float = 10000.0, **kwargs):
        super().__init__()
        self.mode, self.layer_idx = mode, layer_idx
        self.build_heads(hidden_size, num_heads, num_kv_heads, expand_k, expand_v)
        self.feature_map_fn = _FEATURE[feature_map]
        self.use_short_conv, self.rope_theta = use_short_conv, rope_theta
        self.build_qkv(hidden_size, self.key_dim, self.key_dim_per_group, self.value_dim_per_group, use_short_conv, conv_size, conv_bias)
        self.build_norm_gate_output(hidden_size, use_output_gate, gate_fn, fuse_norm, elementwise_affine, norm_eps)

    def mix(self, x: torch.Tensor, cu: Optional[torch.Tensor], state: dict, mode: str, use_cache: bool, ctx=None,
            **kwargs):
        q, k, v, conv_state = self.project_qkv(x, state, use_cache, cu)
        lead = x.shape[:2]
        q = q.view(*lead, self.num_heads, self.head_k_dim)
        k = k.view(*lead, self.num_kv_heads, self.head_k_dim)
        v = v.view(*lead, self.num_kv_heads, self.head_v_dim)
        if self.feature_map_fn is not None:
            q, k = self.feature_map_fn(q), self.feature_map_fn(k)
        q, k = rope_qk(q, k, ctx, self.head_k_dim, self.rope_theta)
        if self.num_kv_groups > 1:
            k, v = k.repeat_interleave(self.num_kv_groups, dim=2), v.repeat_interleave(self.num_kv_groups, dim=2)
        h0 = state.get("recurrent_state")
        kw = dict(initial_state=h0, output_final_state=use_cache, cu_seqlens=cu)
        fn = _real("flactl.ops.retention", f"{mode}_retention")
        if fn is not None:
            o, ht = fn(q, k, v, **kw)
        else:
            o, ht = linear_op(mode, q, k, v, g_gamma=retention_log_decay(self.num_heads, q.device), **kw)
        states = dict(recurrent_state=ht, conv_state=conv_state)
        return self.norm_gate_output(o, x), states
