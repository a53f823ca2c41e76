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


def resolve_hgrn2_expand_ratio(hidden_size: int, num_heads: Optional[int], expand_ratio: Optional[int],
                               use_lower_bound: bool) -> int:
    """HGRN2's ``expand_ratio`` is the head dim of the forget gates (fla): ``num_heads = hidden_size //
    expand_ratio`` when num_heads is None; given only ``num_heads``, ``expand_ratio = hidden_size //
    num_heads``; neither → fla's default 128. The input/output heads split ``hidden_size`` by num_heads,
    and the model's lower bounds (``[L, hidden_size]``) add to the ``num_heads * expand_ratio`` forget
    channels, so inconsistent values raise ``ValueError`` here instead of failing in forward."""
    derived_heads = num_heads is None
    if derived_heads:
        expand_ratio = 128 if expand_ratio is None else int(expand_ratio)
        num_heads = hidden_size // expand_ratio if expand_ratio > 0 else 0
        if num_heads < 1:
            raise ValueError(f"HGRN2Config: expand_ratio ({expand_ratio}) must be in [1, hidden_size "
                             f"({hidden_size})] when num_heads is None (num_heads = hidden_size // expand_ratio)")
    if num_heads <= 0 or hidden_size % num_heads:
        raise ValueError(f"HGRN2Config: hidden_size ({hidden_size}) must be a multiple of num_heads ({num_heads})"
                         + (f" (derived from expand_ratio {expand_ratio})" if derived_heads else ""))
    if expand_ratio is None:
        return hidden_size // num_heads
    expand_ratio = int(expand_ratio)
    if use_lower_bound and num_heads * expand_ratio != hidden_size:
        raise ValueError(f"HGRN2Config: num_heads ({num_heads}) * expand_ratio ({expand_ratio}) must equal "
                         f"hidden_size ({hidden_size}) with use_lower_bound=True (the lower bounds have "
                         f"hidden_size channels); leave expand_ratio unset to derive it as hidden_size // num_heads")
    return expand_ratio


class HGRN2Config(FlactlConfig):
    model_type = "hgrn2"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(self, attn_mode: str = "chunk", num_heads: Optional[int] = None, expand_ratio: Optional[int] = None,
                 use_short_conv: bool = False, conv_size: int = 4, use_lower_bound: bool = True,
                 elementwise_affine: Optional[bool] = True, **kwargs):
        expand_ratio = resolve_hgrn2_expand_ratio(kwargs.get("hidden_size", 2048), num_heads, expand_ratio,
                                                  use_lower_bound)
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
