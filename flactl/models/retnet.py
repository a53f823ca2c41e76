"""RetNet model. model_type 'retnet'; config fields as fla's RetNetConfig (hidden_ratio defaults to 2)."""
from __future__ import annotations

from typing import Optional

from flactl.layers.multiscale_retention import MultiScaleRetention

from .config import FlactlConfig
from .modeling import FlactlForCausalLM, FlactlModel


class RetNetConfig(FlactlConfig):
    model_type = "retnet"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(self, attn_mode: str = "chunk", expand_k: float = 1, expand_v: float = 2, hidden_ratio: float = 2,
                 num_heads: int = 8, num_kv_heads: Optional[int] = None, feature_map: Optional[str] = None,
                 use_short_conv: bool = False, conv_size: int = 4, use_output_gate: bool = True,
                 elementwise_affine: Optional[bool] = True, **kwargs):
        self.attn_mode = attn_mode
        self.expand_k, self.expand_v = expand_k, expand_v
        self.num_heads, self.num_kv_heads, self.feature_map = num_heads, num_kv_heads, feature_map
        # use_short_conv is stored like fla's but, like fla's block, not passed to the layer.
        self.use_short_conv, self.conv_size = use_short_conv, conv_size
        self.use_output_gate, self.elementwise_affine = use_output_gate, elementwise_affine
        super().__init__(hidden_ratio=hidden_ratio, **kwargs)


def build_mixer(config: RetNetConfig, layer_idx: int) -> MultiScaleRetention:
    return MultiScaleRetention(mode=config.attn_mode, hidden_size=config.hidden_size, expand_k=config.expand_k,
                               expand_v=config.expand_v, num_heads=config.num_heads, num_kv_heads=config.num_kv_heads,
                               feature_map=config.feature_map, use_output_gate=config.use_output_gate,
                               gate_fn=config.hidden_act, elementwise_affine=config.elementwise_affine,
                               norm_eps=config.norm_eps, fuse_norm=config.fuse_norm, layer_idx=layer_idx)


class RetNetModel(FlactlModel):
    config_class = RetNetConfig
    build_mixer = staticmethod(build_mixer)


class RetNetForCausalLM(FlactlForCausalLM):
    config_class = RetNetConfig
    model_class = RetNetModel
