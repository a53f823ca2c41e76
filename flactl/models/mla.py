"""MLA: multi-head latent attention (DeepSeek-V2) on torch SDPA. model_type 'mla' (fla's MLAConfig)."""
from __future__ import annotations

from typing import Optional

from transformers import PretrainedConfig

from flactl.layers.mla import MultiheadLatentAttention

from .config import FlactlConfig
from .modeling import FlactlForCausalLM, FlactlModel


class MLAConfig(FlactlConfig):
    model_type = "mla"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(self, hidden_size: int = 2048, num_hidden_layers: int = 24, num_heads: int = 16,
                 q_lora_rank: Optional[int] = 64, qk_rope_head_dim: int = 64, kv_lora_rank: int = 512,
                 v_head_dim: int = 128, qk_nope_head_dim: int = 128, qk_head_dim: Optional[int] = 192,
                 window_size: Optional[int] = None, rope_theta: Optional[float] = 10000.0,
                 rope_scaling: Optional[dict] = None, elementwise_affine: Optional[bool] = True, **kwargs):
        self.num_heads = num_heads
        self.q_lora_rank, self.kv_lora_rank = q_lora_rank, kv_lora_rank
        self.qk_rope_head_dim, self.qk_nope_head_dim = qk_rope_head_dim, qk_nope_head_dim
        self.qk_head_dim, self.v_head_dim = qk_head_dim, v_head_dim
        self.window_size, self.rope_theta = window_size, rope_theta
        self.elementwise_affine = elementwise_affine
        # transformers >= 5 keeps this in `rope_parameters` (`rope_scaling` became an alias property that
        # warns when set, and config.json is written with `rope_parameters`); older versions store it as is.
        if rope_scaling is None:
            rope_scaling = kwargs.pop("rope_parameters", None)
        if isinstance(getattr(PretrainedConfig, "rope_scaling", None), property):
            self.rope_parameters = rope_scaling
        else:
            self.rope_scaling = rope_scaling
        super().__init__(hidden_size=hidden_size, num_hidden_layers=num_hidden_layers, **kwargs)


def build_mixer(config: MLAConfig, layer_idx: int) -> MultiheadLatentAttention:
    return MultiheadLatentAttention(
        hidden_size=config.hidden_size, num_heads=config.num_heads, q_lora_rank=config.q_lora_rank,
        qk_rope_head_dim=config.qk_rope_head_dim, kv_lora_rank=config.kv_lora_rank, v_head_dim=config.v_head_dim,
        qk_nope_head_dim=config.qk_nope_head_dim, qk_head_dim=config.qk_head_dim, window_size=config.window_size,
        rope_theta=config.rope_theta, max_position_embeddings=config.max_position_embeddings,
        rope_scaling=getattr(config, "rope_scaling", None), layer_idx=layer_idx)


class MLAModel(FlactlModel):
    config_class = MLAConfig
    build_mixer = staticmethod(build_mixer)


class MLAForCausalLM(FlactlForCausalLM):
    config_class = MLAConfig
    model_class = MLAModel
