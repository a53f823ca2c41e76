"""The training loop on HF accelerate: one code path for one CPU, one GPU and N GPUs (DDP or FSDP2).

``train(recipe)`` runs (or resumes) a recipe and returns a ``TrainResult``. Order of work:
validate everything (batch plan, tokenizer, model config, trackers) → build model and optimizer →
resume from the newest checkpoint if the run directory has one → loop → final checkpoint → HF export.

Per optimizer step: ``grad_accum`` micro-batches (gradient sync only on the last one), loss averaged
over micro-batches, global grad-norm clipping, then a non-finite guard: a step whose loss or grad
norm is NaN/inf is skipped (no optimizer update, counted in ``skipped``); after
``train.max_bad_steps`` consecutive bad steps the offending batch is written to the run directory
and training stops with an error. A watchdog thread prints every thread's stack on each process
when no step finished for ``train.watchdog_s`` seconds (a hang in a collective or a compile).
"""
from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import logging
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

from flactl.train.recipe import Recipe, RecipeError, plan_batch

log = logging.getLogger("flactl.train")


@dataclass
class TrainResult:
    run_dir: str
    steps: int
    losses: Dict[int, float] = field(default_factory=dict)   # step → loss, for the steps run by this call
    skipped: int = 0
    resumed_from: Optional[int] = None
    export_dir: Optional[str] = None


class StopTraining(Exception):
    """Raised by ``stop_after`` (tests): simulates a kill after a step, without any final save."""


def lr_lambda(kind: str, steps: int, warmup: int, min_ratio: float, decay_ratio: float, decay_type: str):
    """Multiplier of the base lr at optimizer step ``s`` (0-based).

    Linear warmup over ``warmup`` steps, then: ``cosine``/``linear`` decay to ``min_ratio`` at the
    last step; ``wsd`` (warmup-stable-decay) holds 1 until the last ``decay_ratio`` of the steps and
    decays there with ``decay_type`` (linear|cosine|sqrt); ``constant`` holds 1.
    """
    if kind in ("cosine", "linear"):
        decay_type = kind

    def shape(frac: float) -> float:  # 1 → 0 as frac goes 0 → 1
        frac = min(max(frac, 0.0), 1.0)
        if decay_type == "cosine":
            return 0.5 * (1 + math.cos(math.pi * frac))
        if decay_type == "sqrt":
            return 1 - math.sqrt(frac)
        return 1 - frac

    def f(s: int) -> float:
        if warmup and s < warmup:
            return (s + 1) / warmup
        if kind == "constant":
            return 1.0
        if kind == "wsd":
            decay_steps = max(1, int(round(decay_ratio * steps)))
            start = max(warmup, steps - decay_steps)
            if s < start:
                return 1.0
            return min_ratio + (1 - min_ratio) * shape((s - start + 1) / max(1, steps - start))
        return min_ratio + (1 - min_ratio) * shape((s - warmup + 1) / max(1, steps - warmup))

    return f


class Watchdog:
    """Prints all thread stacks (this process) when ``beat`` was not called for ``timeout`` seconds."""

    def __init__(self, timeout: float, rank: int):
        self.timeout, self.rank, self.last, self.fired = timeout, rank, time.monotonic(), False
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="flactl-watchdog")
        if timeout > 0:
            self.thread.start()

    def beat(self) -> None:
        self.last, self.fired = time.monotonic(), False

    def _run(self) -> None:
        while not self._stop.wait(min(10.0, self.timeout / 4)):
            idle = time.monotonic() - self.last
            if idle > self.timeout and not self.fired:
                self.fired = True
                print(f"\n[flactl watchdog] rank {self.rank}: no training step finished for {idle:.0f}s; "
                      "stacks of every thread follow", file=sys.stderr, flush=True)
                faulthandler.dump_traceback(file=sys.stderr, all_threads=True)

    def stop(self) -> None:
        self._stop.set()


def _make_accelerator(recipe: Recipe):
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

    t = recipe.train
    want_cuda = t.device == "cuda" or (t.device == "auto" and torch.cuda.is_available())
    if t.device == "cuda" and not torch.cuda.is_available():
        raise RecipeError("train.device: 'cuda' asked for but no CUDA device is visible")
    precision = t.precision
    if precision == "auto":
        precision = "bf16" if want_cuda else "fp32"
    kwargs = dict(mixed_precision="bf16" if precision == "bf16" else "no", cpu=not want_cuda,
                  project_dir=recipe.run.dir)
    handlers = [InitProcessGroupKwargs(timeout=__import__("datetime").timedelta(seconds=max(1800, t.watchdog_s * 2)))]
    if t.distributed == "fsdp2":
        from accelerate import FullyShardedDataParallelPlugin

        kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin(
            fsdp_version=2, auto_wrap_policy="transformer_based_wrap", state_dict_type="SHARDED_STATE_DICT",
            reshard_after_forward=True, activation_checkpointing=t.activation_checkpointing)
    else:
        handlers.append(DistributedDataParallelKwargs(find_unused_parameters=False))
    from flactl.train.metrics import requested_trackers

    trackers = requested_trackers(recipe.metrics.tensorboard, recipe.metrics.wandb)
    if trackers:
        kwargs["log_with"] = trackers
    return Accelerator(kwargs_handlers=handlers, **kwargs), precision, trackers


def _optimizer(model, recipe: Recipe, on_cuda: bool):
    import torch

    o = recipe.optim
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = {"auto": on_cuda, "true": True, "false": False}[o.fused]
    return torch.optim.AdamW(groups, lr=o.lr, betas=o.betas, eps=o.eps, fused=fused or None)


def train(recipe: Recipe, stop_after: Optional[int] = None, echo: Callable[[str], None] = print,
          on_model: Optional[Callable] = None) -> TrainResult:
    """Run or resume ``recipe``.

    ``stop_after=k`` stops after step k as if the process were killed (no final save; tests).
    ``on_model(model)`` is called once the model is built, before it is wrapped (hooks, probes).
    """
    import torch
    from accelerate.utils import set_seed

    from flactl.train import checkpoint as ckpt
    from flactl.train.data import ResumableLoader
    from flactl.train.flops import peak_flops, train_flops_per_token
    from flactl.train.metrics import Metrics
    from flactl.train.model import block_list, build_config, build_model, count_params, forward_keys
    from flactl.train.tokenizer import load_tokenizer

    # ---- everything that can fail on user input, before any compute
    accelerator, precision, trackers = _make_accelerator(recipe)
    main = accelerator.is_main_process
    say = echo if main else (lambda s: None)
    plan = plan_batch(recipe, accelerator.num_processes)
    tokenizer = load_tokenizer(recipe.tokenizer.path)
    config = build_config(recipe.model, tokenizer)
    run_dir = recipe.run.dir
    if main:
        os.makedirs(run_dir, exist_ok=True)
    say(f"[flactl train] {plan.describe()}")
    if recipe.schedule.warmup_steps >= plan.steps:
        say(f"[flactl train] WARNING: schedule.warmup_steps {recipe.schedule.warmup_steps} ≥ {plan.steps} steps: "
            "the lr never reaches optim.lr")

    # ---- model, optimizer, schedule
    set_seed(recipe.run.seed)
    if recipe.train.deterministic:
        torch.use_deterministic_algorithms(True)
    model = build_model(recipe.model, config)
    if on_model is not None:
        on_model(model)
    accepts_cu, accepts_pos = forward_keys(model)
    varlen = recipe.data.varlen and accepts_cu
    if recipe.data.varlen and not accepts_cu:
        say(f"[flactl train] WARNING: data.varlen is on but {type(model).__name__}.forward has no cu_seqlens "
            "parameter: rows are fed as [B, T] and documents in a row can attend to each other")
    if recipe.train.activation_checkpointing and recipe.train.distributed != "fsdp2":
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise RecipeError(f"train.activation_checkpointing: {type(model).__name__} does not support it")
        if hasattr(model, "activation_checkpointing_enable"):  # transformers ≥ 5.2x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    n_all, n_body = count_params(model)
    say(f"[flactl train] model {config.model_type}: {n_all / 1e6:.1f}M parameters ({n_body / 1e6:.1f}M "
        f"without embeddings); precision {precision}; {'varlen (cu_seqlens)' if varlen else 'packed rows'}; "
        f"{accelerator.num_processes} process(es) on {accelerator.device} ({recipe.train.distributed})")
    flops_tok = train_flops_per_token(model, recipe.data.seq_len)
    peak = peak_flops(torch.cuda.get_device_name(accelerator.device)) if accelerator.device.type == "cuda" else None
    if recipe.train.compile:
        blocks = block_list(model)
        if blocks is None:
            model.compile()
        else:
            for b in blocks:
                b.compile()

    on_cuda = accelerator.device.type == "cuda"
    optimizer = _optimizer(model, recipe, on_cuda)
    s = recipe.schedule
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(s.type, plan.steps, s.warmup_steps, s.min_lr_ratio, s.decay_ratio, s.decay_type))
    model, optimizer = accelerator.prepare(model, optimizer)
    loader = ResumableLoader(recipe.data, tokenizer, plan.micro_batch, accelerator.process_index,
                             accelerator.num_processes, recipe.run.seed)

    # ---- resume
    state = {"step": 0, "tokens": 0, "skipped": 0}
    resumed_from = None
    latest = ckpt.latest_checkpoint(run_dir)
    if latest:
        state.update(ckpt.load_checkpoint(accelerator, latest, scheduler, loader))
        resumed_from = state["step"]
        say(f"[flactl train] resumed from {latest} (step {resumed_from}, {state['tokens']:,} tokens)")
    if main:
        _write_recipe(recipe, run_dir)
    if trackers:
        accelerator.init_trackers(os.path.basename(os.path.abspath(run_dir)), config=_flat(recipe.to_dict()),
                                  init_kwargs={"wandb": {"project": recipe.metrics.wandb_project}})
    metrics = Metrics(accelerator, run_dir, plan.steps, state["step"], recipe.metrics.progress, trackers,
                      flops_tok, peak)
    metrics.truncate_after(state["step"])
    result = TrainResult(run_dir=run_dir, steps=state["step"], skipped=state["skipped"], resumed_from=resumed_from)

    watchdog = Watchdog(recipe.train.watchdog_s, accelerator.process_index)
    t_start = time.perf_counter()
    consecutive_bad = 0
    max_norm = recipe.optim.max_grad_norm if recipe.optim.max_grad_norm > 0 else float("inf")
    tokens_per_step = plan.tokens_per_step
    first_step = state["step"] + 1
    try:
        model.train()
        for step in range(state["step"] + 1, plan.steps + 1):
            loss_sum = torch.zeros((), device=accelerator.device, dtype=torch.float32)
            batch = None
            for micro in range(plan.grad_accum):
                batch = next(loader)
                inputs = _model_inputs(batch, varlen, accepts_pos, accelerator.device)
                sync = micro == plan.grad_accum - 1
                with contextlib.nullcontext() if sync else accelerator.no_sync(model):
                    loss = model(**inputs).loss
                    accelerator.backward(loss / plan.grad_accum)
                loss_sum += loss.detach().float()
            gnorm = accelerator.clip_grad_norm_(model.parameters(), max_norm)
            if hasattr(gnorm, "full_tensor"):  # FSDP2 may hand back a DTensor
                gnorm = gnorm.full_tensor()
            gnorm = float(gnorm) if gnorm is not None else float("nan")
            loss_mean = float(accelerator.reduce(loss_sum / plan.grad_accum, reduction="mean"))
            bad = not (math.isfinite(loss_mean) and math.isfinite(gnorm))
            if bad:
                optimizer.zero_grad(set_to_none=True)
                state["skipped"] += 1
                consecutive_bad += 1
                if not recipe.train.skip_nonfinite or consecutive_bad >= recipe.train.max_bad_steps:
                    path = os.path.join(run_dir, f"bad_batch_step{step}_rank{accelerator.process_index}.pt")
                    torch.save(batch, path)
                    raise RuntimeError(f"step {step}: loss {loss_mean} / grad norm {gnorm} not finite "
                                       f"({consecutive_bad} consecutive); last batch saved to {path}")
                metrics.message(f"step {step}: non-finite loss/grad norm, update skipped ({state['skipped']} total)")
            else:
                consecutive_bad = 0
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            state["step"], state["tokens"] = step, state["tokens"] + tokens_per_step
            result.losses[step], result.steps, result.skipped = loss_mean, step, state["skipped"]
            watchdog.beat()
            metrics.advance(step)
            if step % recipe.metrics.log_every == 0 or step in (plan.steps, first_step):
                metrics.log({"step": step, "loss": loss_mean, "lr": lr, "grad_norm": gnorm,
                             "tokens": state["tokens"], "skipped": state["skipped"],
                             "elapsed_s": round(time.perf_counter() - t_start, 3)})
            if step % recipe.checkpoint.every == 0 or step == plan.steps:
                t_save = time.perf_counter()
                ckpt.save_checkpoint(accelerator, run_dir, step, dict(state), scheduler, loader,
                                     recipe.checkpoint.keep_last)
                metrics.exclude(time.perf_counter() - t_save)  # tokens/s measures training, not saving
                watchdog.beat()
            if stop_after is not None and step >= stop_after:
                raise StopTraining(step)
        if recipe.checkpoint.export:
            result.export_dir = os.path.join(run_dir, "final")
            ckpt.export_hf(accelerator, model, tokenizer, result.export_dir, recipe.to_dict())
            say(f"[flactl train] done: {state['step']} steps, "
                f"{state['tokens']:,} tokens, {state['skipped']} skipped; model exported to {result.export_dir}")
    finally:
        watchdog.stop()
        metrics.close()
    return result


def _model_inputs(batch, varlen: bool, accepts_pos: bool, device):
    """Varlen: one packed row ``[1, B·T]`` with cu_seqlens; otherwise ``[B, T]`` rows."""
    if varlen:
        out = {"input_ids": batch["input_ids"].view(1, -1), "labels": batch["labels"].view(1, -1),
               "cu_seqlens": batch["cu_seqlens"]}
        if accepts_pos:
            out["position_ids"] = batch["position_ids"].view(1, -1)
    else:
        out = {"input_ids": batch["input_ids"], "labels": batch["labels"]}
    return {k: v.to(device, non_blocking=True) for k, v in out.items()}


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        elif isinstance(v, (int, float, str, bool)):
            out[key] = v
        else:
            out[key] = str(v)
    return out


def _write_recipe(recipe: Recipe, run_dir: str) -> None:
    import json

    with open(os.path.join(run_dir, "recipe.json"), "w") as fh:
        json.dump(dataclasses.asdict(recipe), fh, indent=2, default=str)
