"""Fused building blocks (fla-compatible names, arguments and parameter names).

GPU tensors run Triton kernels; CPU tensors run a torch path (or the real kernels under
``TRITON_INTERPRET=1``). See ``API.md`` in this folder for every signature.
"""
from .activations import swiglu, swiglu_linear
from .convolution import ShortConvolution, causal_conv1d, causal_conv1d_update
from .cross_entropy import FusedCrossEntropyLoss, cross_entropy_loss
from .fused_linear import (FusedKLDivLoss, FusedLinearCrossEntropyLoss, FusedLinearKLDivLoss,
                           fused_linear_cross_entropy, fused_linear_kl_div)
from .l2norm import L2Norm, l2_norm, l2norm
from .layernorm import (FusedLayerNormGated, FusedLayerNormGatedLinear, FusedLayerNormSwishGate, FusedRMSNormGated,
                        FusedRMSNormGatedLinear, FusedRMSNormSwishGate, GroupNorm, LayerNorm, LayerNormLinear, RMSNorm,
                        RMSNormLinear, group_norm, layer_norm, layer_norm_fn, layer_norm_linear, norm_fn,
                        norm_linear_fn, group_norm_fn, rms_norm, rms_norm_fn, rms_norm_linear)
from .mlp import GatedMLP
from .rotary import RotaryEmbedding, rotary_embedding
from .token_shift import token_shift

__all__ = [
    "RMSNorm", "LayerNorm", "GroupNorm", "RMSNormLinear", "LayerNormLinear",
    "FusedRMSNormGated", "FusedLayerNormGated", "FusedRMSNormSwishGate", "FusedLayerNormSwishGate",
    "FusedRMSNormGatedLinear", "FusedLayerNormGatedLinear",
    "rms_norm", "layer_norm", "group_norm", "rms_norm_fn", "layer_norm_fn", "group_norm_fn", "norm_fn",
    "norm_linear_fn", "rms_norm_linear", "layer_norm_linear",
    "RotaryEmbedding", "rotary_embedding",
    "ShortConvolution", "causal_conv1d", "causal_conv1d_update",
    "L2Norm", "l2_norm", "l2norm", "token_shift",
    "swiglu", "swiglu_linear", "GatedMLP",
    "FusedCrossEntropyLoss", "cross_entropy_loss",
    "FusedLinearCrossEntropyLoss", "fused_linear_cross_entropy",
    "FusedLinearKLDivLoss", "FusedKLDivLoss", "fused_linear_kl_div",
]
