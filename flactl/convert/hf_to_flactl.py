"""Initialise a flactl model from a Llama / Mistral / Qwen-style checkpoint.

The target config takes the source's width, depth, heads, vocabulary, MLP size and norm epsilon;
``--set`` overrides anything. Weights are copied through a key-mapping table wherever the shapes
match (embeddings, norms, MLP, and q/k/v/o projections when the family's projections have the same
shape); everything else keeps the family's initialisation and is reported as *new*. Source keys the
table does not know are *unexpected*: an error unless ``allow_partial``.
"""
from __future__ import annotations

import re
from typing import Any

from .report import ConversionError, Report

# source key regex → target key template (\1 = layer index)
KEY_MAP = [
    (r"^model\.embed_tokens\.weight$", "model.embeddings.weight"),
    (r"^model\.layers\.(\d+)\.input_layernorm\.weight$", r"model.layers.\1.attn_norm.weight"),
    (r"^model\.layers\.(\d+)\.post_attention_layernorm\.weight$", r"model.layers.\1.mlp_norm.weight"),
    (r"^model\.layers\.(\d+)\.self_attn\.(q|k|v|o)_proj\.(weight|bias)$", r"model.layers.\1.attn.\2_proj.\3"),
    (r"^model\.layers\.(\d+)\.self_attn\.(q|k)_norm\.weight$", r"model.layers.\1.attn.\2_norm.weight"),
    (r"^model\.layers\.(\d+)\.mlp\.(gate|up|down)_proj\.weight$", r"model.layers.\1.mlp.\2_proj.weight"),
    (r"^model\.norm\.weight$", "model.norm.weight"),
    (r"^lm_head\.weight$", "lm_head.weight"),
]
# Source keys that carry no weights worth copying (buffers).
IGNORED = [r"rotary_emb\.inv_freq$"]
SUPPORTED_SOURCES = ("llama", "mistral", "qwen2", "qwen3")


def target_fields(src_cfg) -> dict[str, Any]:
    """Config fields of a flactl family derived from an HF Llama-style config."""
    g = src_cfg.get_text_config() if hasattr(src_cfg, "get_text_config") else src_cfg
    fields = {
        "hidden_size": g.hidden_size, "num_hidden_layers": g.num_hidden_layers,
        "num_heads": g.num_attention_heads, "vocab_size": g.vocab_size,
        "intermediate_size": g.intermediate_size, "max_position_embeddings": g.max_position_embeddings,
        "norm_eps": getattr(g, "rms_norm_eps", 1e-6), "tie_word_embeddings": bool(getattr(g, "tie_word_embeddings", False)),
        "bos_token_id": g.bos_token_id, "eos_token_id": g.eos_token_id,
    }
    if getattr(g, "num_key_value_heads", None):
        fields["num_kv_heads"] = g.num_key_value_heads
    if getattr(g, "rope_theta", None) is not None:
        fields["rope_theta"] = g.rope_theta
    return fields


def map_key(key: str) -> str | None:
    for pat, repl in KEY_MAP:
        if re.match(pat, key):
            return re.sub(pat, repl, key)
    return None


def transfer(src_state: dict, dst_model, allow_partial: bool, report: Report) -> None:
    """Copy matching tensors from ``src_state`` into ``dst_model`` in place; fill ``report``."""
    import torch

    dst_state = dst_model.state_dict()
    filled = set()
    for key, tensor in src_state.items():
        if any(re.search(p, key) for p in IGNORED):
            continue
        tgt = map_key(key)
        if tgt is None:
            report.unexpected.append(key)
            continue
        if tgt not in dst_state:
            report.notes.append(f"{key}: target has no {tgt} (kept out)")
            continue
        if tuple(dst_state[tgt].shape) != tuple(tensor.shape):
            report.shape_mismatch.append(f"{key} {tuple(tensor.shape)} -> {tgt} {tuple(dst_state[tgt].shape)}")
            continue
        with torch.no_grad():
            dst_state[tgt].copy_(tensor.to(dst_state[tgt].dtype))
        filled.add(tgt)
        report.copied.append(tgt)
    tied = getattr(dst_model.config, "tie_word_embeddings", False)
    report.new = [k for k in dst_state if k not in filled and not (tied and k == "lm_head.weight")]
    if report.unexpected and not allow_partial:
        raise ConversionError(
            f"{len(report.unexpected)} source key(s) have no mapping (e.g. {report.unexpected[0]}); "
            "pass --allow-partial to drop them"
        )
