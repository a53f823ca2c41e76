"""Gated DeltaProduct model. model_type 'gated_deltaproduct'; config fields as fla's GatedDeltaProductConfig."""
from __future__ import annotations

from flactl.layers.gated_deltaproduct import GatedDeltaProduct

from .config import FlactlConfig
from .modeling import FlactlForCausalLM, FlactlModel


class GatedDeltaProductConfig(FlactlConfig):
    model_type = "gated_deltaproduct"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(self, attn_mode: str = "chunk", conv_size: int = 4, head_dim: int = 256, num_heads: int = 6,
                 expand_v: float = 2, use_output_gate: bool = True, use_short_conv: bool = True,
                 num_hidden_layers: int = 21, use_forget_gate: bool = False, allow_neg_eigval: bool = False,
                 num_householder: int = 1, **kwargs):
        self.attn_mode, self.conv_size = attn_mode, conv_size
        self.head_dim, self.num_heads, self.expand_v = head_dim, num_heads, expand_v
        self.use_output_gate, self.use_short_conv = use_output_gate, use_short_conv
        self.use_forget_gate, self.allow_neg_eigval = use_forget_gate, allow_neg_eigval
        self.num_householder = num_householder
        super().__init__(num_hidden_layers=num_hidden_layers, **kwargs)


def build_mixer(config: GatedDeltaProductConfig, layer_idx: int) -> GatedDeltaProduct:
    return GatedDeltaProduct(mode=config.attn_mode, hidden_size=config.hidden_size, expand_v=config.expand_v,
                             head_dim=config.head_dim, num_heads=config.num_heads,
                             num_householder=config.num_householder, use_forget_gate=config.use_forget_gate,
                             allow_neg_eigval=config.allow_neg_eigval, use_output_gate=config.use_output_gate,
                             use_short_conv=config.use_short_conv, conv_size=config.conv_size,
                             norm_eps=config.norm_eps, layer_idx=layer_idx)


class GatedDeltaProductModel(FlactlModel):
    config_class = GatedDeltaProductConfig
    build_mixer = staticmethod(build_mixer)


class GatedDeltaProductForCausalLM(FlactlForCausalLM):
    config_class = GatedDeltaProductConfig
    model_class = GatedDeltaProductModel
