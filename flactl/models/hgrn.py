"""HGRN and HGRN2 models. model_types 'hgrn' / 'hgrn2'. With ``use_lower_bound`` the model owns
``lower_bounds [L, hidden]``; layer i gets ``cumsum(softmax(lower_bounds, 0))[i] - softmax(..)[0]``
(monotone lower bounds on the forget gate, 0 for the first layer)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from flactl.layers.hgrn import HGRNAttention
from flactl.layers.hgrn2 import HGRN2Attention

from .config import FlactlConfig
from .modeling import FlactlForCausalLM, FlactlModel


class HGRNConfig(FlactlConfig):
    model_type = "hgrn"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(self, attn_mode: str = "chunk", expand_ratio: Optional[int] = 1, use_short_conv: bool = False,
                 conv_size: int = 4, use_lower_bound: bool = True, elementwise_affine: Optional[bool] = True,
                 **kwargs):
        self.attn_mode, self.expand_ratio = attn_mode, expand_ratio
        self.use_short_conv, self.conv_size = use_short_conv, conv_size
        self.use_lower_bound, self.elementwise_affine = use_lower_bound, elementwise_affine
        super().__init__(**kwargs)


class HGRN2Config(FlactlConfig):
    model_type = "hgrn2"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(self, attn_mode: str = "chunk", num_heads: Optional[int] = None, expand_ratio: Optional[int] = 128,
                 use_short_conv: bool = False, conv_size: int = 4, use_lower_bound: bool = True,
                 elementwise_affine: Optional[bool] = True, **kwargs):
        self.attn_mode, self.num_heads, self.expand_ratio = attn_mode, num_heads, expand_ratio
        self.use_short_conv, self.conv_size = use_short_conv, conv_size
        self.use_lower_bound, self.elementwise_affine = use_lower_bound, elementwise_affine
        super().__init__(**kwargs)


def build_hgrn(config: HGRNConfig, layer_idx: int) -> HGRNAttention:
    return HGRNAttention(mode=config.attn_mode, hidden_size=config.hidden_size, expand_ratio=config.expand_ratio,
                         use_short_conv=config.use_short_conv, conv_size=config.conv_size,
                         elementwise_affine=config.elementwise_affine, norm_eps=config.norm_eps, layer_idx=layer_idx)


def build_hgrn2(config: HGRN2Config, layer_idx: int) -> HGRN2Attention:
    return HGRN2Attention(mode=config.attn_mode, hidden_size=config.hidden_size, num_heads=config.num_heads,
                          expand_ratio=config.expand_ratio, use_short_conv=config.use_short_conv,
                          conv_size=config.conv_size, elementwise_affine=config.elementwise_affine,
                          norm_eps=config.norm_eps, layer_idx=layer_idx)


class _LowerBoundModel(FlactlModel):
    def __init__(self, config):
        super().__init__(config)
        if config.use_lower_bound:
            self.lower_bounds = nn.Parameter(torch.zeros(config.num_hidden_layers, config.hidden_size))

    def forward(self, *args, **kwargs):
        self._lb = None
        if getattr(self, "lower_bounds", None) is not None:
            lb = self.lower_bounds.softmax(0)
            self._lb = lb.cumsum(0) - lb[0]
        try:
            return super().forward(*args, **kwargs)
        finally:
            self._lb = None

    def layer_kwargs(self, layer_idx: int) -> dict:
        if self._lb is None or self.config.attn_spec(layer_idx) is not None:
            return {}
        return {"lower_bound": self._lb[layer_idx]}


class HGRNModel(_LowerBoundModel):
    config_class = HGRNConfig
    build_mixer = staticmethod(build_hgrn)


class HGRNForCausalLM(FlactlForCausalLM):
    config_class = HGRNConfig
    model_class = HGRNModel


class HGRN2Model(_LowerBoundModel):
    config_class = HGRN2Config
    build_mixer = staticmethod(build_hgrn2)


class HGRN2ForCausalLM(FlactlForCausalLM):
    config_class = HGRN2Config
    model_class = HGRN2Model
