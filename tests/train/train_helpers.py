"""Shared tiny recipes for the trainer tests (CPU, float32, seconds per run).

Models: flactl's GLA (the default; its ops run on the vectorised torch path via
``force_backend("torch")`` so whole-model training stays fast) and a tiny HF Llama (a model whose
forward has no ``cu_seqlens``, to cover the non-varlen path).
"""
from __future__ import annotations

import copy
import json
import os
from typing import Any, Dict, List

MODELS: Dict[str, Dict[str, Any]] = {
    "gla": {"family": "gla", "config": dict(hidden_size=32, num_hidden_layers=2, num_heads=2, hidden_ratio=2,
                                            vocab_size=320, fuse_cross_entropy=False)},
    "llama": {"family": "llama", "config": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                num_attention_heads=4, num_key_value_heads=4, vocab_size=320,
                                                max_position_embeddings=512)},
}


def tiny_recipe(run_dir: str, model: str = "gla", **sections: Dict[str, Any]) -> Dict[str, Any]:
    """A recipe table; keyword arguments update whole sections, e.g. ``run={"steps": 4}``."""
    table = {
        "run": {"dir": str(run_dir), "seed": 0, "steps": 6},
        "model": copy.deepcopy(MODELS[model]),
        "tokenizer": {"path": "byte"},
        "data": {"seq_len": 32, "varlen": True, "num_workers": 0,
                 "sources": [{"type": "generated", "task": "grammar"}]},
        "batch": {"micro_batch": 2, "global_batch": 4},
        "optim": {"lr": 3e-3, "weight_decay": 0.01},
        "schedule": {"type": "cosine", "warmup_steps": 2},
        "train": {"precision": "fp32", "device": "cpu", "watchdog_s": 0},
        "checkpoint": {"every": 2, "keep_last": 2, "export": False},
        "metrics": {"log_every": 1, "progress": "none"},
    }
    for name, values in sections.items():
        table.setdefault(name, {}).update(values)
    return table


def read_log(run_dir: str) -> List[Dict[str, Any]]:
    with open(os.path.join(run_dir, "log.jsonl")) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_jsonl(path: str, docs: List[str]) -> str:
    with open(path, "w") as fh:
        for d in docs:
            fh.write(json.dumps({"text": d}) + "\n")
    return path
