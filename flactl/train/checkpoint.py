"""Checkpoints: periodic, atomic, keep-last-k, and an HF export at the end.

Layout of a run directory::

    <run.dir>/
      recipe.json                  the validated recipe as run (for the record)
      log.jsonl                    one JSON record per logged step
      checkpoints/step-00000100/   accelerate state (model, optimizer, RNG per process; FSDP2:
                                   sharded via torch.distributed.checkpoint) + trainer.pt
                                   (scheduler, step, token and skip counters) + data_rank<R>.pt
      final/                       HF model directory (config.json, model.safetensors, tokenizer)

A checkpoint is written to ``checkpoints/.tmp-step-…`` and renamed when every process finished, so
a directory named ``step-…`` is always complete; a crash mid-save leaves only a ``.tmp`` folder,
which the next save removes. Resuming = rerunning the same command: the newest ``step-…`` is loaded.
"""
from __future__ import annotations

import os
import re
import shutil
from typing import Any, Dict, Optional

_STEP_RE = re.compile(r"^step-(\d+)$")


def checkpoint_dir(run_dir: str) -> str:
    return os.path.join(run_dir, "checkpoints")


def latest_checkpoint(run_dir: str) -> Optional[str]:
    """The newest complete checkpoint folder, or None."""
    root = checkpoint_dir(run_dir)
    if not os.path.isdir(root):
        return None
    steps = [(int(m.group(1)), n) for n in os.listdir(root) if (m := _STEP_RE.match(n))]
    if not steps:
        return None
    return os.path.join(root, max(steps)[1])


def save_checkpoint(accelerator, run_dir: str, step: int, trainer_state: Dict[str, Any], scheduler,
                    loader, keep_last: int) -> str:
    """Save everything needed to continue at ``step`` (collective: every process must call it)."""
    import torch

    root = checkpoint_dir(run_dir)
    name = f"step-{step:08d}"
    tmp, final = os.path.join(root, f".tmp-{name}"), os.path.join(root, name)
    if accelerator.is_main_process:
        os.makedirs(root, exist_ok=True)
        for n in os.listdir(root):  # leftovers of an interrupted save
            if n.startswith(".tmp-"):
                shutil.rmtree(os.path.join(root, n), ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp)
    torch.save(loader.state_dict(), os.path.join(tmp, f"data_rank{accelerator.process_index}.pt"))
    if accelerator.is_main_process:
        torch.save({"scheduler": scheduler.state_dict(), **trainer_state}, os.path.join(tmp, "trainer.pt"))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if os.path.exists(final):  # same step saved before (e.g. final save after a periodic one)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _prune(root, keep_last)
    accelerator.wait_for_everyone()
    return final


def _prune(root: str, keep_last: int) -> None:
    steps = sorted((int(m.group(1)), n) for n in os.listdir(root) if (m := _STEP_RE.match(n)))
    for _, n in steps[:-keep_last]:
        shutil.rmtree(os.path.join(root, n), ignore_errors=True)


def load_checkpoint(accelerator, path: str, scheduler, loader) -> Dict[str, Any]:
    """Restore model, optimizer, RNG, scheduler and data position; returns the trainer state."""
    import torch

    data_file = os.path.join(path, f"data_rank{accelerator.process_index}.pt")
    if not os.path.exists(data_file):
        raise RuntimeError(f"{path}: no data position for process {accelerator.process_index} "
                           "(was it written with a different number of processes?)")
    accelerator.load_state(path)
    loader.load_state_dict(torch.load(data_file, weights_only=False))
    state = torch.load(os.path.join(path, "trainer.pt"), weights_only=False)
    scheduler.load_state_dict(state.pop("scheduler"))
    return state


def export_hf(accelerator, model, tokenizer, out_dir: str, recipe_dict: Optional[Dict[str, Any]] = None) -> None:
    """Write an HF model directory (full weights gathered from every process) that from_pretrained loads."""
    state_dict = accelerator.get_state_dict(model)  # collective under FSDP: every process calls it
    if accelerator.is_main_process:
        tmp = out_dir + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if recipe_dict is not None:
            import json

            with open(os.path.join(tmp, "flactl_recipe.json"), "w") as fh:
                json.dump(recipe_dict, fh, indent=2, default=str)
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(tmp, out_dir)
    accelerator.wait_for_everyone()
