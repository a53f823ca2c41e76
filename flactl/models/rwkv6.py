"""RWKV6 "Finch" model. model_type 'rwkv6'; config fields and key layout as fla's ``RWKV6Config`` /
``RWKV6ForCausalLM``: ``model.layers.{i}.{pre_norm (layer 0, norm_first), attn_norm, attn, ffn_norm, ffn}``
with LayerNorms (``norm_bias``) and the RWKV channel-mix FFN (``ffn.key``, ``ffn.value``, ``ffn.receptance``);
final ``model.norm`` is a LayerNorm too. The FFN's token shift is cached as ``ffn_state`` ``[N, h]``."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from flactl.layers.rwkv6 import LerpLinear, RWKV6Attention
from flactl.modules import LayerNorm, token_shift
from flactl.modules.activations import ACT2FN

from .config import FlactlConfig
from .modeling import FlactlForCausalLM, FlactlModel, build_attention


class RWKV6Config(FlactlConfig):
    model_type = "rwkv6"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(self, attn_mode: str = "chunk", hidden_size: int = 2048, expand_k: float = 0.5,
                 expand_v: float = 1.0, hidden_ratio: Optional[float] = 3.5, intermediate_size: Optional[int] = None,
                 num_hidden_layers: int = 24, num_heads: int = 4, proj_low_rank_dim: int = 32,
                 gate_low_rank_dim: int = 64, hidden_act: str = "sqrelu", norm_first: bool = True,
                 norm_bias: bool = True, norm_eps: float = 1e-5, **kwargs):
        self.attn_mode, self.expand_k, self.expand_v, self.num_heads = attn_mode, expand_k, expand_v, num_heads
        self.proj_low_rank_dim, self.gate_low_rank_dim = proj_low_rank_dim, gate_low_rank_dim
        self.norm_first, self.norm_bias = norm_first, norm_bias
        super().__init__(hidden_size=hidden_size, hidden_ratio=hidden_ratio, intermediate_size=intermediate_size,
                         num_hidden_layers=num_hidden_layers, hidden_act=hidden_act, norm_eps=norm_eps, **kwargs)


def build_mixer(config: RWKV6Config, layer_idx: int) -> RWKV6Attention:
    return RWKV6Attention(mode=config.attn_mode, hidden_size=config.hidden_size, expand_k=config.expand_k,
                          expand_v=config.expand_v, num_heads=config.num_heads,
                          proj_low_rank_dim=config.proj_low_rank_dim, gate_low_rank_dim=config.gate_low_rank_dim,
                          norm_eps=config.norm_eps, fuse_norm=config.fuse_norm, layer_idx=layer_idx)


class RWKV6FeedForward(nn.Module):
    """RWKV channel mixing: ``sigmoid(receptance(lerp(x))) ⊙ value(act(key(lerp(x))))`` with a token shift."""

    def __init__(self, hidden_size: int, hidden_ratio: Optional[float] = None, intermediate_size: Optional[int] = None,
                 hidden_act: str = "sqrelu", layer_idx: Optional[int] = None):
        super().__init__()
        if intermediate_size is None:
            intermediate_size = int(hidden_size * (3.5 if hidden_ratio is None else hidden_ratio))
            intermediate_size = 32 * ((intermediate_size + 31) // 32)
        if hidden_act not in ACT2FN:
            raise ValueError(f"hidden_act must be one of {list(ACT2FN)}, got {hidden_act!r}")
        self.hidden_size, self.intermediate_size, self.layer_idx = hidden_size, intermediate_size, layer_idx
        self.key = LerpLinear(hidden_size, intermediate_size)
        self.value = nn.Linear(intermediate_size, hidden_size, bias=False)
        self.receptance = LerpLinear(hidden_size, hidden_size)
        self.act_fn = ACT2FN[hidden_act]

    def forward(self, x: torch.Tensor, past_key_values=None, use_cache: bool = False,
                cu_seqlens: Optional[torch.Tensor] = None) -> torch.Tensor:
        state = past_key_values.get_layer_state(self.layer_idx) if past_key_values is not None else None
        cache = state.get("ffn_state") if state else None
        delta, last = token_shift(x, cu_seqlens, cache=cache, output_cache=True)
        out = self.receptance(x, delta).sigmoid() * self.value(self.act_fn(self.key(x, delta)))
        if past_key_values is not None and use_cache:
            past_key_values.update_layer(self.layer_idx, offset=0, ffn_state=last)
        return out


def _layer_norm(config):
    return LayerNorm(config.hidden_size, bias=config.norm_bias, eps=config.norm_eps)


class RWKV6Block(nn.Module):
    """``[pre_norm] → attn_norm → attn → (+res) → ffn_norm → ffn → (+res)`` (fla's RWKV6Block)."""

    def __init__(self, config, layer_idx: int, build_mixer_fn):
        super().__init__()
        self.config, self.layer_idx = config, layer_idx
        if config.norm_first and layer_idx == 0:
            self.pre_norm = _layer_norm(config)
        self.attn_norm = _layer_norm(config)
        self.attn = build_attention(config, layer_idx) or build_mixer_fn(config, layer_idx)
        self.ffn_norm = _layer_norm(config)
        self.ffn = RWKV6FeedForward(config.hidden_size, config.hidden_ratio, config.intermediate_size,
                                    config.hidden_act, layer_idx=layer_idx)

    def forward(self, hidden_states, past_key_values=None, use_cache=False, seq_ctx=None, **kwargs):
        residual = self.pre_norm(hidden_states) if hasattr(self, "pre_norm") else hidden_states
        h = self.attn_norm(residual)
        h, _, past_key_values = self.attn(h, past_key_values=past_key_values, use_cache=use_cache,
                                          seq_ctx=seq_ctx, **kwargs)
        h, residual = self.ffn_norm(h, residual, prenorm=True)
        cu = seq_ctx.cu_seqlens if seq_ctx is not None else None
        h = self.ffn(h, past_key_values, use_cache, cu)
        return residual + h


class RWKV6Model(FlactlModel):
    config_class = RWKV6Config
    build_mixer = staticmethod(build_mixer)
    block_class = RWKV6Block
    _no_split_modules = ["RWKV6Block"]

    def __init__(self, config):
        super().__init__(config)
        self.norm = _layer_norm(config)  # LayerNorm (with bias), not the default RMSNorm


class RWKV6ForCausalLM(FlactlForCausalLM):
    config_class = RWKV6Config
    model_class = RWKV6Model
    _no_split_modules = ["RWKV6Block"]
