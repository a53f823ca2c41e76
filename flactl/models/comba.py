"""Comba model. model_type 'comba'; config fields as fla's CombaConfig.

fla's CombaBlock does not forward ``use_output_correction`` / ``use_inner_decay`` / ``correction_factor``
to the layer (the layer defaults True / True / 1.0 apply). flactl passes them: with the defaults (what
every fla config holds unless edited by hand) the two are identical.
"""
from __future__ import annotations

from typing import Optional

from flactl.layers.comba import Comba

from .config import FlactlConfig
from .modeling import FlactlForCausalLM, FlactlModel


class CombaConfig(FlactlConfig):
    model_type = "comba"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(self, attn_mode: str = "chunk", hidden_size: int = 2048, conv_size: int = 4, head_dim: int = 256,
                 num_heads: int = 6, num_v_heads: Optional[int] = None, expand_v: float = 2.0,
                 use_output_gate: bool = True, use_short_conv: bool = True, use_output_correction: bool = True,
                 use_inner_decay: bool = True, correction_factor: float = 1.0, num_hidden_layers: int = 21,
                 **kwargs):
        self.attn_mode, self.conv_size = attn_mode, conv_size
        self.head_dim, self.num_heads, self.num_v_heads, self.expand_v = head_dim, num_heads, num_v_heads, expand_v
        self.use_output_gate, self.use_short_conv = use_output_gate, use_short_conv
        self.use_output_correction, self.use_inner_decay = use_output_correction, use_inner_decay
        self.correction_factor = correction_factor
        super().__init__(hidden_size=hidden_size, num_hidden_layers=num_hidden_layers, **kwargs)


def build_mixer(config: CombaConfig, layer_idx: int) -> Comba:
    return Comba(mode=config.attn_mode, hidden_size=config.hidden_size, expand_v=config.expand_v,
                 head_dim=config.head_dim, num_heads=config.num_heads, num_v_heads=config.num_v_heads,
                 use_output_gate=config.use_output_gate, use_short_conv=config.use_short_conv,
                 use_output_correction=config.use_output_correction, use_inner_decay=config.use_inner_decay,
                 correction_factor=config.correction_factor, conv_size=config.conv_size, norm_eps=config.norm_eps,
                 layer_idx=layer_idx)


class CombaModel(FlactlModel):
    config_class = CombaConfig
    build_mixer = staticmethod(build_mixer)


class CombaForCausalLM(FlactlForCausalLM):
    config_class = CombaConfig
    model_class = CombaModel
