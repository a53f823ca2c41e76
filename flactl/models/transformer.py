"""Transformer (softmax attention on torch SDPA): GQA, sliding window, RoPE, qk-norm. model_type 'transformer'."""
from __future__ import annotations

from typing import Optional

from flactl.layers.attn import Attention

from .config import FlactlConfig
from .modeling import FlactlForCausalLM, FlactlModel


class TransformerConfig(FlactlConfig):
    model_type = "transformer"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(self, hidden_size: int = 2048, num_hidden_layers: int = 24, num_heads: int = 32,
                 num_kv_heads: Optional[int] = None, qkv_bias: bool = False, qk_norm: bool = False,
                 window_size: Optional[int] = None, rope_theta: Optional[float] = 10000.0,
                 elementwise_affine: Optional[bool] = True, **kwargs):
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.qkv_bias, self.qk_norm = qkv_bias, qk_norm
        self.window_size, self.rope_theta = window_size, rope_theta
        self.elementwise_affine = elementwise_affine
        super().__init__(hidden_size=hidden_size, num_hidden_layers=num_hidden_layers, **kwargs)


def build_mixer(config: TransformerConfig, layer_idx: int) -> Attention:
    return Attention(hidden_size=config.hidden_size, num_heads=config.num_heads, num_kv_heads=config.num_kv_heads,
                     qkv_bias=config.qkv_bias, qk_norm=config.qk_norm, window_size=config.window_size,
                     rope_theta=config.rope_theta, max_position_embeddings=config.max_position_embeddings,
                     norm_eps=config.norm_eps, layer_idx=layer_idx)


class TransformerModel(FlactlModel):
    config_class = TransformerConfig
    build_mixer = staticmethod(build_mixer)


class TransformerForCausalLM(FlactlForCausalLM):
    config_class = TransformerConfig
    model_class = TransformerModel
