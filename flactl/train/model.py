"""Build the model of a recipe through transformers' Auto classes (model-agnostic).

``[model]`` takes exactly one of:

* ``family = "<model_type>"`` with ``[model.config]`` fields → ``AutoConfig.for_model``;
* ``preset = "gla-340m"`` (flactl.train.presets) with optional ``[model.config]`` overrides;
* ``path = "<dir>"``: an existing HF model directory; training continues from its weights.

flactl's families register with the Auto classes on ``import flactl.models``. Config keys are
checked against the config class, so a typo fails before any compute with ``model.config.<key>``.
"""
from __future__ import annotations

import inspect
import logging
from typing import Any, Dict, Tuple

from flactl.train.recipe import ModelSection, RecipeError

log = logging.getLogger("flactl.train")


def _config_class(family: str):
    import flactl.models  # noqa: F401  (registers flactl families)
    from transformers import CONFIG_MAPPING

    if family not in CONFIG_MAPPING:
        import difflib

        known = sorted(CONFIG_MAPPING.keys())
        near = difflib.get_close_matches(family, known, n=3)
        raise RecipeError(f"model.family: {family!r} is not a registered model_type"
                          + (f" (did you mean {', '.join(near)}?)" if near else ""))
    return CONFIG_MAPPING[family]


def _known_fields(cls) -> set:
    fields = set(cls().to_dict())
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            fields |= set(inspect.signature(init).parameters) - {"self", "kwargs", "args"}
    return fields


def build_config(m: ModelSection, tokenizer):
    """The model config, validated, with vocab and special-token ids fitted to the tokenizer."""
    if m.path:
        import flactl.models  # noqa: F401
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(m.path)
    else:
        if m.preset:
            from flactl.train.presets import PRESETS

            family, base = PRESETS[m.preset]
        else:
            family, base = m.family, {}
        cls = _config_class(family)
        known = _known_fields(cls)
        fields: Dict[str, Any] = {}
        for k, v in base.items():  # preset fields a family does not define: legacy, dropped with a note
            if k in known:
                fields[k] = v
            else:
                log.info("preset %s: %s has no field %r; ignored", m.preset, cls.__name__, k)
        for k, v in m.config.items():
            if k not in known:
                import difflib

                near = difflib.get_close_matches(k, sorted(known), n=1)
                raise RecipeError(f"model.config.{k}: {cls.__name__} has no such field"
                                  + (f" (did you mean {near[0]}?)" if near else ""))
            fields[k] = v
        try:
            config = cls(**fields)
        except (TypeError, ValueError) as e:
            raise RecipeError(f"model.config: {cls.__name__} rejected the fields: {e}") from None
    n_tok = len(tokenizer)
    if getattr(config, "vocab_size", n_tok) < n_tok:
        log.info("raising vocab_size %d to the tokenizer's %d", config.vocab_size, n_tok)
        config.vocab_size = n_tok
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id"):
        tid = getattr(tokenizer, attr, None)
        if tid is not None:
            setattr(config, attr, tid)
    return config


def build_model(m: ModelSection, config):
    """Instantiate (fresh init under the current seed) or load the model."""
    from transformers import AutoModelForCausalLM

    if m.path:
        return AutoModelForCausalLM.from_pretrained(m.path, config=config, dtype="float32")
    return AutoModelForCausalLM.from_config(config, dtype="float32")


def forward_keys(model) -> Tuple[bool, bool]:
    """(accepts ``cu_seqlens``, accepts ``position_ids``) as *named* forward parameters.

    Only an explicit ``cu_seqlens`` parameter counts: a ``**kwargs`` catch-all (HF Llama) would
    silently ignore it and let documents attend to each other.
    """
    params = inspect.signature(model.forward).parameters
    return "cu_seqlens" in params, "position_ids" in params


def count_params(model) -> Tuple[int, int]:
    """(all parameters, parameters outside the input embedding)."""
    total = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings()
    n_emb = emb.weight.numel() if emb is not None else 0
    return total, total - n_emb


def block_list(model):
    """The ModuleList of transformer blocks (for per-block torch.compile), or None."""
    import torch.nn as nn

    n = getattr(model.config, "num_hidden_layers", None)
    for _, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) == n:
            return mod
    return None
