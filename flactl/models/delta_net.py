"""DeltaNet model. model_type 'delta_net'; config fields as fla's DeltaNetConfig."""
from __future__ import annotations

from flactl.layers.delta_net import DeltaNet

from .config import FlactlConfig
from .modeling import FlactlForCausalLM, FlactlModel


class DeltaNetConfig(FlactlConfig):
    model_type = "delta_net"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(self, attn_mode: str = "chunk", expand_k: float = 1, expand_v: float = 1, use_gate: bool = False,
                 use_short_conv: bool = True, conv_size: int = 4, use_beta: bool = True, use_output_norm: bool = True,
                 num_heads: int = 16, qk_norm: str = "l2", qk_activation: str = "silu",
                 allow_neg_eigval: bool = False, **kwargs):
        self.attn_mode = attn_mode
        self.expand_k, self.expand_v = expand_k, expand_v
        self.use_gate, self.use_short_conv, self.conv_size = use_gate, use_short_conv, conv_size
        self.use_beta, self.use_output_norm = use_beta, use_output_norm
        self.num_heads, self.qk_norm, self.qk_activation = num_heads, qk_norm, qk_activation
        self.allow_neg_eigval = allow_neg_eigval
        super().__init__(**kwargs)


def build_mixer(config: DeltaNetConfig, layer_idx: int) -> DeltaNet:
    return DeltaNet(mode=config.attn_mode, hidden_size=config.hidden_size, expand_k=config.expand_k,
                    expand_v=config.expand_v, num_heads=config.num_heads, use_gate=config.use_gate,
                    use_beta=config.use_beta, use_short_conv=config.use_short_conv, conv_size=config.conv_size,
                    qk_norm=config.qk_norm, qk_activation=config.qk_activation, norm_eps=config.norm_eps,
                    allow_neg_eigval=config.allow_neg_eigval, layer_idx=layer_idx)


class DeltaNetModel(FlactlModel):
    config_class = DeltaNetConfig
    build_mixer = staticmethod(build_mixer)


class DeltaNetForCausalLM(FlactlForCausalLM):
    config_class = DeltaNetConfig
    model_class = DeltaNetModel
