"""Gated DeltaNet model. model_type 'gated_deltanet'; config fields as fla's GatedDeltaNetConfig."""
from __future__ import annotations

from typing import Optional

from flactl.layers.gated_deltanet import GatedDeltaNet

from .config import FlactlConfig
from .modeling import FlactlForCausalLM, FlactlModel


class GatedDeltaNetConfig(FlactlConfig):
    model_type = "gated_deltanet"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(self, attn_mode: str = "chunk", hidden_size: int = 2048, expand_v: float = 2, use_gate: bool = True,
                 use_short_conv: bool = True, conv_size: int = 4, head_dim: int = 256, num_heads: int = 6,
                 num_v_heads: Optional[int] = None, num_hidden_layers: int = 21, allow_neg_eigval: bool = False,
                 **kwargs):
        self.attn_mode = attn_mode
        self.expand_v, self.use_gate = expand_v, use_gate
        self.use_short_conv, self.conv_size = use_short_conv, conv_size
        self.head_dim, self.num_heads, self.num_v_heads = head_dim, num_heads, num_v_heads
        self.allow_neg_eigval = allow_neg_eigval
        super().__init__(hidden_size=hidden_size, num_hidden_layers=num_hidden_layers, **kwargs)


def build_mixer(config: GatedDeltaNetConfig, layer_idx: int) -> GatedDeltaNet:
    return GatedDeltaNet(mode=config.attn_mode, hidden_size=config.hidden_size, expand_v=config.expand_v,
                         head_dim=config.head_dim, num_heads=config.num_heads, num_v_heads=config.num_v_heads,
                         use_gate=config.use_gate, use_short_conv=config.use_short_conv, conv_size=config.conv_size,
                         allow_neg_eigval=config.allow_neg_eigval, norm_eps=config.norm_eps, layer_idx=layer_idx)


class GatedDeltaNetModel(FlactlModel):
    config_class = GatedDeltaNetConfig
    build_mixer = staticmethod(build_mixer)


class GatedDeltaNetForCausalLM(FlactlForCausalLM):
    config_class = GatedDeltaNetConfig
    model_class = GatedDeltaNetModel
