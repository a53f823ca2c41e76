"""Model directories: the one on-disk format every flactl command reads and writes.

A model directory is what ``AutoModelForCausalLM.from_pretrained`` loads (after ``import flactl``):
``config.json`` (with a registered ``model_type``), ``model*.safetensors`` (``format: pt`` metadata so
hub loaders accept it), ``generation_config.json`` and tokenizer files. Shared by ``init``,
``convert``, ``generate``, ``eval`` and ``bench`` so they agree on dtypes, tokenizers and loading.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

DTYPES = {
    "float32": "float32", "fp32": "float32", "f32": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
}


def parse_dtype(name: Optional[str], arg: str = "--dtype"):
    """``'bf16'`` → ``torch.bfloat16``; ``None``/``'auto'`` → ``None``. ValueError names ``arg``."""
    if name is None or name == "auto":
        return None
    import torch

    key = DTYPES.get(str(name).lower())
    if key is None:
        raise ValueError(f"{arg} must be one of float32, bfloat16, float16 (or auto), got {name!r}")
    return getattr(torch, key)


def resolve_device(device: Optional[str]) -> str:
    """``None``/``'auto'`` → ``'cuda'`` when a GPU is visible, else ``'cpu'``."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def is_model_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / "config.json").is_file()


def builtin_tokenizer():
    """The download-free byte-level tokenizer (``flactl.train.tokenizer``; 259 ids, pad 0, bos 1, eos 2),
    shared with the trainer so init, train, generate and eval agree on one vocabulary."""
    from flactl.train.tokenizer import byte_tokenizer

    return byte_tokenizer()


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def count_params(model) -> int:
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) not in seen:  # tied embeddings count once
            seen.add(id(p))
            n += p.numel()
    return n


def human(n: float) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


def save_model_dir(model, out_dir: str | os.PathLike, tokenizer=None, max_shard_size: str = "5GB") -> list[str]:
    """Write config, safetensors weights, generation config and tokenizer; return file names."""
    from transformers import GenerationConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True, max_shard_size=max_shard_size)
    cfg = model.config
    gen = GenerationConfig(
        bos_token_id=getattr(cfg, "bos_token_id", None),
        eos_token_id=getattr(cfg, "eos_token_id", None),
        pad_token_id=getattr(cfg, "pad_token_id", None),
    )
    gen.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return sorted(p.name for p in out.iterdir())


def load_model(path: str, dtype=None, device: str = "cpu"):
    """Load a model directory (or hub id) with flactl's models registered."""
    import flactl.models  # noqa: F401  (registers Auto classes)
    from transformers import AutoModelForCausalLM

    kw: dict[str, Any] = {}
    if dtype is not None:
        kw["dtype"] = dtype
    model = AutoModelForCausalLM.from_pretrained(path, **kw)
    return model.to(device).eval()


def read_config(path: str | os.PathLike) -> dict:
    with open(Path(path) / "config.json") as f:
        return json.load(f)
