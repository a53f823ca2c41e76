"""Metrics: a progress display, ``log.jsonl`` in the run directory, optional TensorBoard / W&B.

Only the main process prints and writes. Every logged record holds: step, loss (mean over the
micro-batches and processes of that step), lr, grad_norm, tokens (seen so far), tokens_per_s,
mem_GiB (peak allocated on this GPU since the last record), skipped (non-finite steps so far),
and mfu when the architecture's FLOPs can be counted (see flops.py).
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Dict, List, Optional


class Metrics:
    def __init__(self, accelerator, run_dir: str, total_steps: int, start_step: int, progress: str,
                 trackers: List[str], flops_per_token: Optional[float], peak_flops: Optional[float]):
        self.acc, self.main = accelerator, accelerator.is_main_process
        self.path = os.path.join(run_dir, "log.jsonl")
        self.total, self.flops_per_token, self.peak = total_steps, flops_per_token, peak_flops
        self.trackers = trackers
        self.last_t, self.last_tokens = time.perf_counter(), None
        self.bar = None
        if not self.main:
            return
        if progress == "auto":
            progress = "rich" if sys.stdout.isatty() else "none"
        self.mode = progress
        if progress == "rich":
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                TextColumn("{task.fields[info]}"), transient=False)
            self.task = self.bar.add_task("train", total=total_steps, completed=start_step, info="")
            self.bar.start()
        elif progress == "tqdm":
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc="train", dynamic_ncols=True)

    def truncate_after(self, step: int) -> None:
        """On resume, drop records of steps the resumed run will redo (a killed run may have logged them)."""
        if not self.main or not os.path.exists(self.path):
            return
        with open(self.path) as fh:
            keep = [line for line in fh if line.strip() and json.loads(line).get("step", 0) <= step]
        with open(self.path, "w") as fh:
            fh.writelines(keep)

    def advance(self, step: int) -> None:
        if self.bar is not None and self.mode == "rich":
            self.bar.update(self.task, completed=step)
        elif self.bar is not None:
            self.bar.update(1)

    def exclude(self, seconds: float) -> None:
        """Leave ``seconds`` (a checkpoint save) out of the next tokens/s figure."""
        self.last_t += seconds

    def log(self, rec: Dict[str, Any]) -> None:
        """``rec`` has step, loss, lr, grad_norm, tokens, skipped; rates and memory are added here."""
        import torch

        now = time.perf_counter()
        if self.last_tokens is not None and now > self.last_t:
            rec["tokens_per_s"] = (rec["tokens"] - self.last_tokens) / (now - self.last_t)
            if self.flops_per_token and self.peak:
                rec["mfu"] = rec["tokens_per_s"] * self.flops_per_token / (self.peak * self.acc.num_processes)
        self.last_t, self.last_tokens = now, rec["tokens"]
        if torch.cuda.is_available():
            rec["mem_GiB"] = torch.cuda.max_memory_allocated() / 2**30
            torch.cuda.reset_peak_memory_stats()
        if not self.main:
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        if self.trackers:
            self.acc.log({k: v for k, v in rec.items() if k != "step"}, step=rec["step"])
        info = self._fmt(rec)
        if self.mode == "rich":
            self.bar.update(self.task, info=info)
        elif self.mode == "tqdm":
            self.bar.set_postfix_str(info)
        else:
            print(f"step {rec['step']}/{self.total} {info}", flush=True)

    @staticmethod
    def _fmt(r: Dict[str, Any]) -> str:
        parts = [f"loss {r['loss']:.4f}", f"lr {r['lr']:.2e}", f"gnorm {r['grad_norm']:.3f}"]
        if "tokens_per_s" in r:
            parts.append(f"{r['tokens_per_s'] / 1e3:.1f}k tok/s")
        if "mem_GiB" in r:
            parts.append(f"{r['mem_GiB']:.1f} GiB")
        if "mfu" in r:
            parts.append(f"MFU {100 * r['mfu']:.1f}%")
        if r.get("skipped"):
            parts.append(f"skipped {r['skipped']}")
        return "  ".join(parts)

    def message(self, text: str) -> None:
        if not self.main:
            return
        if self.mode == "rich":
            self.bar.console.print(text)
        elif self.mode == "tqdm":
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop() if self.mode == "rich" else self.bar.close()
        if self.trackers:
            self.acc.end_training()


def requested_trackers(tensorboard: bool, wandb: bool) -> List[str]:
    """Trackers asked for and installed; asking for a missing one is an error, not a silent no-op."""
    import importlib.util

    out = []
    for name, asked, module in (("tensorboard", tensorboard, "tensorboard"), ("wandb", wandb, "wandb")):
        if not asked:
            continue
        if importlib.util.find_spec(module) is None and not (name == "tensorboard" and importlib.util.find_spec("tensorboardX")):
            from flactl.train.recipe import RecipeError

            raise RecipeError(f"metrics.{name}: asked for, but the '{module}' package is not installed "
                              f"(pip install {module})")
        out.append(name)
    return out
