"""Trainer checkpoints → loadable HF model directories, and safetensors dtype conversion / resharding.

Recognised checkpoint layouts (what ``accelerate.save_state`` writes, which is what ``flactl train``
uses):

* ``model.safetensors`` / ``model_<i>.safetensors`` / ``pytorch_model.bin`` in the folder;
* a torch distributed checkpoint (DCP: a ``.metadata`` file plus ``*.distcp`` shards), either the
  folder itself or a ``pytorch_model_fsdp_0`` / ``model`` sub-folder (FSDP ``SHARDED_STATE_DICT``).

Before anything is converted, every shard file the checkpoint refers to must exist (a multi-node run
without a shared filesystem leaves some on other machines: fail early and say which are missing).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from .report import ConversionError

# Prefixes wrappers add to parameter names: DDP, torch.compile, FSDP1, accelerate's unwrap of a
# model dict, checkpoint-wrapper.
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")


def find_dcp_dir(path: Path) -> Optional[Path]:
    for cand in (path, path / "pytorch_model_fsdp_0", path / "model"):
        if (cand / ".metadata").is_file():
            return cand
    return None


def check_dcp_shards(dcp: Path) -> list[str]:
    """Names of the shard files the DCP metadata refers to; raises if any is missing."""
    from torch.distributed.checkpoint import FileSystemReader

    meta = FileSystemReader(str(dcp)).read_metadata()
    files = sorted({getattr(info, "relative_path", None) for info in (meta.storage_data or {}).values()} - {None})
    missing = [f for f in files if not (dcp / f).is_file()]
    if missing:
        raise ConversionError(
            f"{len(missing)} of {len(files)} checkpoint shard(s) missing in {dcp}: {', '.join(missing[:8])} "
            "(on a multi-node run, copy every node's shards into one folder first)"
        )
    return files


def load_checkpoint_state(path: Path) -> tuple[dict, str]:
    """``(state_dict, description)`` from any supported checkpoint layout (tensors on CPU)."""
    import torch

    dcp = find_dcp_dir(path)
    if dcp is not None:
        files = check_dcp_shards(dcp)
        import tempfile

        from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

        with tempfile.TemporaryDirectory() as tmp:
            dcp_to_torch_save(str(dcp), os.path.join(tmp, "full.pt"))
            sd = torch.load(os.path.join(tmp, "full.pt"), map_location="cpu", weights_only=False)
        sd = _flatten(sd)
        return sd, f"torch DCP ({len(files)} shard file(s))"
    st = sorted(path.glob("model*.safetensors"))
    if st:
        from safetensors.torch import load_file

        sd = {}
        for f in st:
            sd.update(load_file(str(f)))
        return sd, f"safetensors ({len(st)} file(s))"
    bins = sorted(path.glob("pytorch_model*.bin"))
    if bins:
        sd = {}
        for f in bins:
            sd.update(torch.load(str(f), map_location="cpu", weights_only=True))
        return sd, f"torch .bin ({len(bins)} file(s))"
    raise ConversionError(f"{path}: no model weights found (expected model*.safetensors, pytorch_model*.bin or a DCP .metadata)")


def _flatten(sd: dict, prefix: str = "") -> dict:
    """DCP state dicts may nest ``{'model': {...}}``; flatten to dotted keys of tensors."""
    import torch

    out = {}
    for k, v in sd.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, torch.Tensor):
            out[key] = v
    return out


def normalise_keys(sd: dict, expected: set[str]) -> dict:
    """Strip wrapper prefixes and a leading ``model.`` nesting level so keys match ``expected``."""
    out = {}
    for k, v in sd.items():
        key = k
        for p in WRAPPER_PREFIXES:
            key = key.replace(p, "")
        if key not in expected and key.startswith("model.") and key[len("model."):] in expected:
            key = key[len("model."):]  # {'model': state_dict} nesting (flame PR #48 class of bug)
        out[key] = v
    return out


def find_config(ckpt: Path, explicit: Optional[str]) -> Path:
    """The model config for a checkpoint: ``--config`` (a file or model dir), else the nearest
    ``config.json`` / ``final/config.json`` in the checkpoint folder or its parents (a run dir)."""
    if explicit:
        p = Path(explicit)
        p = p / "config.json" if p.is_dir() else p
        if not p.is_file():
            raise FileNotFoundError(f"--config {explicit}: no config.json there")
        return p
    for d in [ckpt, *ckpt.parents][:4]:
        for cand in (d / "config.json", d / "final" / "config.json"):
            if cand.is_file():
                return cand
    raise FileNotFoundError(f"no config.json found next to {ckpt} or in its run directory: pass --config")


def find_tokenizer_dir(config_path: Path) -> Optional[Path]:
    d = config_path.parent
    return d if any((d / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json")) else None


def convert_safetensors(src: Path, out: Path, dtype, max_shard_size: str) -> list[str]:
    """Rewrite a model directory's weights in ``dtype`` and/or new shard sizes (config, tokenizer and
    other files are copied). Only floating tensors change dtype."""
    import json
    import shutil

    from huggingface_hub import save_torch_state_dict
    from safetensors.torch import load_file

    files = sorted(src.glob("*.safetensors"))
    if not files:
        raise ConversionError(f"{src}: no *.safetensors files")
    index = src / "model.safetensors.index.json"
    if index.is_file():
        listed = set(json.loads(index.read_text())["weight_map"].values())
        missing = [f for f in listed if not (src / f).is_file()]
        if missing:
            raise ConversionError(f"{src}: shard(s) listed in the index are missing: {', '.join(sorted(missing))}")
    sd = {}
    for f in files:
        sd.update(load_file(str(f)))
    if dtype is not None:
        sd = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}
    out.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and not f.name.endswith(".safetensors") and f.name != "model.safetensors.index.json":
            shutil.copy2(f, out / f.name)
    save_torch_state_dict(sd, str(out), max_shard_size=max_shard_size, metadata={"format": "pt"})
    if dtype is not None and (out / "config.json").is_file():
        cfg = json.loads((out / "config.json").read_text())
        name = str(dtype).replace("torch.", "")
        cfg["torch_dtype" if "torch_dtype" in cfg else "dtype"] = name
        (out / "config.json").write_text(json.dumps(cfg, indent=2))
    return sorted(os.listdir(out))
