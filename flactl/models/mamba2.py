"""Mamba2 model (SSD on the scalar-decay kernels). model_type 'mamba2'; fla's key layout:
``backbone.embeddings``, ``backbone.layers.{i}.norm``, ``backbone.layers.{i}.mixer.*``, ``backbone.norm_f``,
``lm_head``. Blocks are norm → mixer → residual (no MLP); hybrid layers put softmax attention in ``mixer``."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn

from flactl.layers._deps import RMSNorm
from flactl.layers.mamba2 import Mamba2

from .config import FlactlConfig
from .modeling import FlactlForCausalLM, FlactlModel, build_attention


class Mamba2Config(FlactlConfig):
    model_type = "mamba2"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(self, head_dim: int = 64, hidden_size: int = 2048, state_size: int = 128,
                 num_hidden_layers: int = 48, norm_eps: float = 1e-5, pad_token_id: int = 0, expand: int = 2,
                 conv_kernel: int = 4, n_groups: int = 1, use_bias: bool = False, use_conv_bias: bool = True,
                 hidden_act: str = "silu", residual_in_fp32: bool = True, time_step_rank="auto",
                 time_step_min: float = 0.001, time_step_max: float = 0.1, time_step_floor: float = 1e-4,
                 time_step_limit: Tuple[float, float] = (0.0, float("inf")),
                 A_init_range: Tuple[float, float] = (1.0, 16.0), dt_limit: Optional[Tuple[float, float]] = None,
                 rescale_prenorm_residual: bool = True, rms_norm: bool = True, rmsnorm: Optional[bool] = None,
                 norm_before_gate: bool = False, chunk_size: int = 256, num_heads: Optional[int] = None,
                 **kwargs):
        self.head_dim, self.state_size, self.expand = head_dim, state_size, expand
        self.conv_kernel, self.n_groups = conv_kernel, n_groups
        self.use_bias, self.use_conv_bias = use_bias, use_conv_bias
        self.residual_in_fp32 = residual_in_fp32
        self.time_step_rank = time_step_rank
        self.time_step_min, self.time_step_max, self.time_step_floor = time_step_min, time_step_max, time_step_floor
        self.time_step_limit = tuple(dt_limit) if dt_limit is not None else tuple(time_step_limit)
        self.dt_limit = self.time_step_limit
        self.A_init_range = tuple(A_init_range)
        self.rescale_prenorm_residual = rescale_prenorm_residual
        self.rms_norm = rms_norm if rmsnorm is None else rmsnorm
        self.rmsnorm = self.rms_norm
        self.norm_before_gate, self.chunk_size = norm_before_gate, chunk_size
        self.num_heads = int(expand * hidden_size / head_dim) if num_heads is None else num_heads
        super().__init__(hidden_size=hidden_size, num_hidden_layers=num_hidden_layers, norm_eps=norm_eps,
                         pad_token_id=pad_token_id, hidden_act=hidden_act, **kwargs)


def build_mixer(config: Mamba2Config, layer_idx: int) -> Mamba2:
    return Mamba2(hidden_size=config.hidden_size, num_heads=config.num_heads, head_dim=config.head_dim,
                  state_size=config.state_size, expand=config.expand, n_groups=config.n_groups,
                  conv_kernel=config.conv_kernel, use_conv_bias=config.use_conv_bias, use_bias=config.use_bias,
                  rms_norm=config.rms_norm, norm_before_gate=config.norm_before_gate, norm_eps=config.norm_eps,
                  chunk_size=config.chunk_size, time_step_min=config.time_step_min,
                  time_step_max=config.time_step_max, time_step_floor=config.time_step_floor,
                  time_step_limit=config.time_step_limit, A_init_range=config.A_init_range, layer_idx=layer_idx)


class Mamba2Block(nn.Module):
    """``norm → mixer → (+residual)``; the residual stream is float32 when ``residual_in_fp32``."""

    def __init__(self, config, layer_idx: int, build_mixer_fn):
        super().__init__()
        self.config, self.layer_idx = config, layer_idx
        self.residual_in_fp32 = config.residual_in_fp32
        self.norm = RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.mixer = build_attention(config, layer_idx) or build_mixer_fn(config, layer_idx)

    def forward(self, hidden_states, past_key_values=None, use_cache=False, seq_ctx=None, **kwargs):
        residual = hidden_states
        h = self.norm(hidden_states.to(self.norm.weight.dtype))
        if self.residual_in_fp32:
            residual = residual.to(torch.float32)
        h, _, _ = self.mixer(h, past_key_values=past_key_values, use_cache=use_cache, seq_ctx=seq_ctx, **kwargs)
        return residual + h


class Mamba2Model(FlactlModel):
    config_class = Mamba2Config
    base_model_prefix = "backbone"
    build_mixer = staticmethod(build_mixer)
    block_class = Mamba2Block
    final_norm_name = "norm_f"
    _no_split_modules = ["Mamba2Block"]

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.last_hidden_state = out.last_hidden_state.to(self.embeddings.weight.dtype)
        return out


class Mamba2ForCausalLM(FlactlForCausalLM):
    config_class = Mamba2Config
    model_class = Mamba2Model
    base_model_prefix = "backbone"
    _no_split_modules = ["Mamba2Block"]
    _tied_weights_keys = {"lm_head.weight": "backbone.embeddings.weight"}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # mamba_ssm / HF Mamba2 checkpoints name the embedding ``embedding``; fla renames it on load too.
        for key in [k for k in state_dict if k.startswith(prefix + "backbone.embedding.")]:
            state_dict[key.replace("backbone.embedding.", "backbone.embeddings.")] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
