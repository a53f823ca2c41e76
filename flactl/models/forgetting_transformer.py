"""Forgetting Transformer (FoX): softmax attention with a data-dependent forget gate, no RoPE.
model_type 'forgetting_transformer' (fla's ForgettingTransformerConfig)."""
from __future__ import annotations

from typing import Optional

from flactl.layers.forgetting_attn import ForgettingAttention

from .config import FlactlConfig
from .modeling import FlactlForCausalLM, FlactlModel


class ForgettingTransformerConfig(FlactlConfig):
    model_type = "forgetting_transformer"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(self, hidden_size: int = 2048, num_hidden_layers: int = 24, num_heads: int = 32,
                 num_kv_heads: Optional[int] = None, qkv_bias: bool = False, qk_norm: bool = False,
                 window_size: Optional[int] = None, use_output_gate: bool = False,
                 elementwise_affine: Optional[bool] = True, **kwargs):
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.qkv_bias, self.qk_norm = qkv_bias, qk_norm
        self.window_size, self.use_output_gate = window_size, use_output_gate
        self.elementwise_affine = elementwise_affine
        super().__init__(hidden_size=hidden_size, num_hidden_layers=num_hidden_layers, **kwargs)


def build_mixer(config: ForgettingTransformerConfig, layer_idx: int) -> ForgettingAttention:
    return ForgettingAttention(hidden_size=config.hidden_size, num_heads=config.num_heads,
                               num_kv_heads=config.num_kv_heads, qkv_bias=config.qkv_bias, qk_norm=config.qk_norm,
                               window_size=config.window_size, use_output_gate=config.use_output_gate,
                               layer_idx=layer_idx)


class ForgettingTransformerModel(FlactlModel):
    config_class = ForgettingTransformerConfig
    build_mixer = staticmethod(build_mixer)


class ForgettingTransformerForCausalLM(FlactlForCausalLM):
    config_class = ForgettingTransformerConfig
    model_class = ForgettingTransformerModel
