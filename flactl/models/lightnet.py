"""LightNet model (Qin et al., 2024). model_type 'lightnet'; config fields as fla's LightNetConfig."""
from __future__ import annotations

from typing import Optional

from flactl.layers.lightnet import LightNetAttention

from .config import FlactlConfig
from .modeling import FlactlForCausalLM, FlactlModel


class LightNetConfig(FlactlConfig):
    model_type = "lightnet"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(self, attn_mode: str = "chunk", num_heads: Optional[int] = None, expand_ratio: Optional[int] = 128,
                 use_short_conv: bool = False, conv_size: int = 4, gate_low_rank_dim: int = 128,
                 elementwise_affine: Optional[bool] = True, **kwargs):
        self.attn_mode, self.num_heads, self.expand_ratio = attn_mode, num_heads, expand_ratio
        self.use_short_conv, self.conv_size = use_short_conv, conv_size
        self.gate_low_rank_dim, self.elementwise_affine = gate_low_rank_dim, elementwise_affine
        super().__init__(**kwargs)


def build_mixer(config: LightNetConfig, layer_idx: int) -> LightNetAttention:
    return LightNetAttention(
        mode=config.attn_mode, hidden_size=config.hidden_size, num_heads=config.num_heads,
        expand_ratio=config.expand_ratio, use_short_conv=config.use_short_conv, conv_size=config.conv_size,
        gate_low_rank_dim=config.gate_low_rank_dim, elementwise_affine=config.elementwise_affine,
        norm_eps=config.norm_eps, layer_idx=layer_idx)


class LightNetModel(FlactlModel):
    config_class = LightNetConfig
    build_mixer = staticmethod(build_mixer)


class LightNetForCausalLM(FlactlForCausalLM):
    config_class = LightNetConfig
    model_class = LightNetModel
