"""Linear attention model. model_type 'linear_attn'; config fields as fla's LinearAttentionConfig."""
from __future__ import annotations

from typing import Optional

from flactl.layers.linear_attn import LinearAttention

from .config import FlactlConfig
from .modeling import FlactlForCausalLM, FlactlModel


class LinearAttentionConfig(FlactlConfig):
    model_type = "linear_attn"
    keys_to_ignore_at_inference = ["past_key_values"]
    valid_attn_modes = ("chunk", "fused_recurrent", "fused_chunk")

    def __init__(self, attn_mode: str = "fused_chunk", expand_k: float = 1, expand_v: float = 1, num_heads: int = 4,
                 num_kv_heads: Optional[int] = None, feature_map: str = "elementwise_product",
                 tie_feature_map_qk: bool = False, norm_q: bool = False, norm_k: bool = False,
                 norm_feature_map: bool = False, elementwise_affine: Optional[bool] = True, **kwargs):
        self.attn_mode = attn_mode
        self.expand_k, self.expand_v = expand_k, expand_v
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.feature_map, self.tie_feature_map_qk = feature_map, tie_feature_map_qk
        self.norm_q, self.norm_k, self.norm_feature_map = norm_q, norm_k, norm_feature_map
        self.elementwise_affine = elementwise_affine
        super().__init__(**kwargs)


def build_mixer(config: LinearAttentionConfig, layer_idx: int) -> LinearAttention:
    return LinearAttention(mode=config.attn_mode, hidden_size=config.hidden_size, expand_k=config.expand_k,
                           expand_v=config.expand_v, num_heads=config.num_heads, num_kv_heads=config.num_kv_heads,
                           feature_map=config.feature_map, tie_feature_map_qk=config.tie_feature_map_qk,
                           norm_q=config.norm_q, norm_k=config.norm_k, do_feature_map_norm=config.norm_feature_map,
                           elementwise_affine=config.elementwise_affine, norm_eps=config.norm_eps,
                           layer_idx=layer_idx)


class LinearAttentionModel(FlactlModel):
    config_class = LinearAttentionConfig
    build_mixer = staticmethod(build_mixer)


class LinearAttentionForCausalLM(FlactlForCausalLM):
    config_class = LinearAttentionConfig
    model_class = LinearAttentionModel
