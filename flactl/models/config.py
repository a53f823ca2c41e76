"""Config base shared by every flactl model: fla's common fields and defaults (fla-facts §2), the
hybrid-attention spec, and tolerant handling of legacy / unknown fields.
"""
from __future__ import annotations

import inspect
import warnings
from typing import Any, Dict, List, Optional, Union

from transformers import PretrainedConfig

# Fields transformers itself writes into config.json or passes through from_pretrained.
_HF_KEYS = set(inspect.signature(PretrainedConfig.__init__).parameters) | {
    "model_type", "architectures", "transformers_version", "torch_dtype", "dtype", "auto_map", "name_or_path",
    "_name_or_path", "id2label", "label2id", "num_labels", "problem_type", "return_dict", "output_hidden_states",
    "output_attentions", "is_encoder_decoder", "chunk_size_feed_forward", "tie_encoder_decoder", "use_return_dict",
    "torchscript", "pruned_heads", "finetuning_task", "task_specific_params", "tokenizer_class", "prefix",
    "sep_token_id", "decoder_start_token_id", "is_decoder", "add_cross_attention", "cross_attention_hidden_size",
    "quantization_config", "rope_scaling", "rope_parameters", "layer_types", "base_model_tp_plan",
    "base_model_pp_plan", "num_logits_to_keep", "use_l2warp", "attnres_block_size",
    "prenorm_residual_strategy", "initializer_range", "use_bfloat16",
}

_ATTN_DEFAULTS = {"num_kv_heads": None, "qkv_bias": False, "window_size": None, "rope_theta": 10000.0}


def normalize_attn(attn: Union[None, Dict, List[Dict]], num_hidden_layers: int) -> Optional[List[Dict]]:
    """Validate ``config.attn`` (a dict or list of dicts) → list of complete dicts, or None."""
    if attn is None:
        return None
    specs = [attn] if isinstance(attn, dict) else list(attn)
    out = []
    for spec in specs:
        if not isinstance(spec, dict):
            raise ValueError(f"config.attn must be a dict or a list of dicts, got {type(spec).__name__}")
        if "layers" not in spec or "num_heads" not in spec:
            raise ValueError("config.attn must name 'layers' (list of layer indices) and 'num_heads', "
                             f"got keys {sorted(spec)}")
        layers = [int(i) for i in spec["layers"]]
        bad = [i for i in layers if not 0 <= i < num_hidden_layers]
        if bad:
            raise ValueError(f"config.attn['layers'] has indices {bad} outside [0, {num_hidden_layers})")
        full = dict(_ATTN_DEFAULTS, **spec)
        full["layers"] = layers
        if full["num_kv_heads"] is None:
            full["num_kv_heads"] = full["num_heads"]
        out.append(full)
    return out


class FlactlConfig(PretrainedConfig):
    """Common fields of fla's linear-attention configs. Subclasses set ``model_type``, declare their
    own fields in ``__init__`` and pass the rest here. ``legacy_fields`` (class attr): names fla once
    wrote that this family ignores; ``valid_attn_modes``: accepted ``attn_mode`` values."""

    legacy_fields: tuple = ()
    valid_attn_modes: tuple = ("chunk", "fused_recurrent")

    def __init__(
        self,
        hidden_size: int = 2048,
        num_hidden_layers: int = 24,
        hidden_ratio: Optional[float] = 4,
        intermediate_size: Optional[int] = None,
        hidden_act: str = "swish",
        max_position_embeddings: int = 2048,
        norm_eps: float = 1e-6,
        attn: Optional[Union[Dict, List[Dict]]] = None,
        use_cache: bool = True,
        pad_token_id: Optional[int] = None,
        bos_token_id: int = 1,
        eos_token_id: int = 2,
        tie_word_embeddings: bool = False,
        initializer_range: float = 0.02,
        fuse_norm: bool = True,
        fuse_swiglu: bool = True,
        fuse_cross_entropy: bool = True,
        fuse_linear_cross_entropy: bool = False,
        use_l2warp: bool = False,
        vocab_size: int = 32000,
        **kwargs,
    ):
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.hidden_ratio = hidden_ratio
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.norm_eps = norm_eps
        normalize_attn(attn, num_hidden_layers)  # validate early; store as given (fla's format)
        self.attn = attn
        self.use_cache = use_cache
        self.initializer_range = initializer_range
        self.fuse_norm = fuse_norm
        self.fuse_swiglu = fuse_swiglu
        if fuse_cross_entropy and fuse_linear_cross_entropy:
            raise ValueError("fuse_cross_entropy and fuse_linear_cross_entropy cannot both be True")
        self.fuse_cross_entropy = fuse_cross_entropy
        self.fuse_linear_cross_entropy = fuse_linear_cross_entropy
        self.use_l2warp = use_l2warp
        self.vocab_size = vocab_size
        if hasattr(self, "attn_mode") and self.attn_mode not in self.valid_attn_modes:
            warnings.warn(f"{type(self).__name__}: attn_mode={self.attn_mode!r} is a legacy mode; using "
                          f"'chunk' for training/prefill and 'fused_recurrent' for decoding", stacklevel=2)
            self.attn_mode = "chunk"
        own = set()
        for klass in type(self).__mro__:
            if klass is PretrainedConfig:
                break
            if "__init__" in vars(klass):
                own |= set(inspect.signature(klass.__init__).parameters)
        unknown = sorted(k for k in kwargs if not k.startswith("_") and k not in _HF_KEYS and k not in own)
        if unknown:
            legacy = [k for k in unknown if k in self.legacy_fields]
            other = [k for k in unknown if k not in self.legacy_fields]
            msg = f"{type(self).__name__}: ignoring "
            parts = []
            if legacy:
                parts.append(f"legacy field(s) {legacy}")
            if other:
                parts.append(f"unknown field(s) {other}")
            warnings.warn(msg + " and ".join(parts), stacklevel=2)
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                         tie_word_embeddings=tie_word_embeddings, **kwargs)

    def attn_spec(self, layer_idx: int) -> Optional[Dict[str, Any]]:
        """The hybrid softmax-attention spec covering ``layer_idx``, or None."""
        for spec in normalize_attn(self.attn, self.num_hidden_layers) or ():
            if layer_idx in spec["layers"]:
                return spec
        return None
