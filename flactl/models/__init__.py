"""flactl's Hugging Face models. Importing this module registers every config / model with
transformers' AutoConfig, AutoModel and AutoModelForCausalLM under fla's ``model_type`` names, so
``AutoModelForCausalLM.from_pretrained(<fla checkpoint>)`` works after ``import flactl``."""
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .cache import Cache
from .comba import CombaConfig, CombaForCausalLM, CombaModel
from .config import FlactlConfig
from .forgetting_transformer import (ForgettingTransformerConfig, ForgettingTransformerForCausalLM,
                                     ForgettingTransformerModel)
from .gla import GLAConfig, GLAForCausalLM, GLAModel
from .hgrn import HGRN2Config, HGRN2ForCausalLM, HGRN2Model, HGRNConfig, HGRNForCausalLM, HGRNModel
from .lightnet import LightNetConfig, LightNetForCausalLM, LightNetModel
from .linear_attn import LinearAttentionConfig, LinearAttentionForCausalLM, LinearAttentionModel
from .mamba2 import Mamba2Config, Mamba2ForCausalLM, Mamba2Model
from .mla import MLAConfig, MLAForCausalLM, MLAModel
from .modeling import Block, FlactlForCausalLM, FlactlModel, FlactlPreTrainedModel
from .delta_net import DeltaNetConfig, DeltaNetForCausalLM, DeltaNetModel
from .gated_deltaproduct import GatedDeltaProductConfig, GatedDeltaProductForCausalLM, GatedDeltaProductModel
from .gated_deltanet import GatedDeltaNetConfig, GatedDeltaNetForCausalLM, GatedDeltaNetModel
from .retnet import RetNetConfig, RetNetForCausalLM, RetNetModel
from .rwkv6 import RWKV6Config, RWKV6ForCausalLM, RWKV6Model
from .transformer import TransformerConfig, TransformerForCausalLM, TransformerModel

FAMILIES = {
    "transformer": (TransformerConfig, TransformerModel, TransformerForCausalLM),
    "gla": (GLAConfig, GLAModel, GLAForCausalLM),
    "gated_deltanet": (GatedDeltaNetConfig, GatedDeltaNetModel, GatedDeltaNetForCausalLM),
    "retnet": (RetNetConfig, RetNetModel, RetNetForCausalLM),
    "delta_net": (DeltaNetConfig, DeltaNetModel, DeltaNetForCausalLM),
    "mamba2": (Mamba2Config, Mamba2Model, Mamba2ForCausalLM),
    "hgrn": (HGRNConfig, HGRNModel, HGRNForCausalLM),
    "hgrn2": (HGRN2Config, HGRN2Model, HGRN2ForCausalLM),
    "gated_deltaproduct": (GatedDeltaProductConfig, GatedDeltaProductModel, GatedDeltaProductForCausalLM),
    "linear_attn": (LinearAttentionConfig, LinearAttentionModel, LinearAttentionForCausalLM),
    "comba": (CombaConfig, CombaModel, CombaForCausalLM),
    "rwkv6": (RWKV6Config, RWKV6Model, RWKV6ForCausalLM),
    "lightnet": (LightNetConfig, LightNetModel, LightNetForCausalLM),
    "mla": (MLAConfig, MLAModel, MLAForCausalLM),
    "forgetting_transformer": (ForgettingTransformerConfig, ForgettingTransformerModel,
                               ForgettingTransformerForCausalLM),
}


def _register():
    for model_type, (config, model, lm) in FAMILIES.items():
        AutoConfig.register(model_type, config, exist_ok=True)
        AutoModel.register(config, model, exist_ok=True)
        AutoModelForCausalLM.register(config, lm, exist_ok=True)


_register()

__all__ = ["Cache", "FlactlConfig", "Block", "FlactlModel", "FlactlForCausalLM", "FlactlPreTrainedModel",
           "FAMILIES"] + [c.__name__ for trio in FAMILIES.values() for c in trio]
