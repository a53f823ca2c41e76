"""Token-mixing layers (explicit keyword arguments, never a config object).

Each returns ``(o, None, past_key_values)`` like fla's layers, runs ``chunk`` kernels for training and
prefill and ``fused_recurrent`` for short inputs outside training (decoding), and accepts either a
``[B, T]`` 0/1 ``attention_mask`` (unpadded internally; padding never enters a state) or
``cu_seqlens`` for packed input.
"""
from .attn import Attention
from .comba import Comba
from .delta_net import DeltaNet
from .forgetting_attn import ForgettingAttention
from .gated_deltanet import GatedDeltaNet
from .gated_deltaproduct import GatedDeltaProduct
from .gla import GatedLinearAttention
from .hgrn import HGRNAttention
from .hgrn2 import HGRN2Attention
from .lightnet import LightNetAttention
from .linear_attn import LinearAttention
from .mamba2 import Mamba2
from .mla import MultiheadLatentAttention
from .multiscale_retention import MultiScaleRetention
from .rwkv6 import RWKV6Attention

__all__ = ["Attention", "Comba", "DeltaNet", "ForgettingAttention", "GatedDeltaNet", "GatedDeltaProduct", "GatedLinearAttention", "HGRNAttention", "HGRN2Attention", "LightNetAttention", "LinearAttention",
           "Mamba2", "MultiheadLatentAttention", "MultiScaleRetention", "RWKV6Attention"]
