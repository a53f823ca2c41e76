"""Gated Linear Attention model. model_type 'gla'; config fields as fla's GLAConfig."""
from __future__ import annotations

from typing import Optional

from flactl.layers.gla import GatedLinearAttention

from .config import FlactlConfig
from .modeling import FlactlForCausalLM, FlactlModel


class GLAConfig(FlactlConfig):
    model_type = "gla"
    keys_to_ignore_at_inference = ["past_key_values"]
    legacy_fields = ("use_gk", "use_gv")

    def __init__(self, attn_mode: str = "chunk", expand_k: float = 0.5, expand_v: float = 1, num_heads: int = 4,
                 num_kv_heads: Optional[int] = None, feature_map: Optional[str] = None, use_short_conv: bool = False,
                 conv_size: int = 4, use_output_gate: bool = True, clamp_min: Optional[float] = None,
                 elementwise_affine: Optional[bool] = True, **kwargs):
        self.attn_mode = attn_mode
        self.expand_k, self.expand_v = expand_k, expand_v
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.feature_map = feature_map
        self.use_short_conv, self.conv_size = use_short_conv, conv_size
        self.use_output_gate, self.clamp_min = use_output_gate, clamp_min
        self.elementwise_affine = elementwise_affine
        super().__init__(**kwargs)


def build_mixer(config: GLAConfig, layer_idx: int) -> GatedLinearAttention:
    return GatedLinearAttention(
        mode=config.attn_mode, hidden_size=config.hidden_size, expand_k=config.expand_k, expand_v=config.expand_v,
        num_heads=config.num_heads, num_kv_heads=config.num_kv_heads, feature_map=config.feature_map,
        use_short_conv=config.use_short_conv, conv_size=config.conv_size, use_output_gate=config.use_output_gate,
        gate_fn=config.hidden_act, elementwise_affine=config.elementwise_affine, norm_eps=config.norm_eps,
        clamp_min=config.clamp_min, fuse_norm=config.fuse_norm, layer_idx=layer_idx)


class GLAModel(FlactlModel):
    config_class = GLAConfig
    build_mixer = staticmethod(build_mixer)


class GLAForCausalLM(FlactlForCausalLM):
    config_class = GLAConfig
    model_class = GLAModel
