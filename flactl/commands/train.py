"""`flactl train`: train a model from a TOML recipe on one CPU, one GPU or N GPUs (HF accelerate)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer


def _in_distributed_launch() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or "LOCAL_RANK" in os.environ


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(recipe: Path, overrides: List[str], num_gpus: int, port: Optional[int] = None,
                   cpu: bool = False) -> List[str]:
    """The ``accelerate launch`` command line that ``--num-gpus N`` re-executes (one process per GPU;
    with ``cpu``, N CPU processes over gloo: the same distributed code path, testable without a GPU)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_gpus),
           "--num_machines", "1", "--cpu" if cpu else "--multi_gpu", "--main_process_port", str(port or _free_port()),
           # precision and FSDP/DDP come from the recipe (the Accelerator's arguments win over these)
           "--mixed_precision", "no", "--dynamo_backend", "no",
           "--module", "flactl", "train", str(recipe)]
    for item in overrides:
        cmd += ["--set", item]
    return cmd


def train(
    recipe: Path = typer.Argument(..., help="Recipe TOML file (see recipes/ and docs/training.md)."),
    set_: List[str] = typer.Option([], "--set", help="Override a recipe key: --set optim.lr=1e-3 (repeatable)."),
    num_gpus: int = typer.Option(0, "--num-gpus", min=0, help="Re-launch on N GPUs under `accelerate launch` (0/1 = this process)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate the recipe, print the batch plan and model config, exit."),
) -> None:
    """Train (or resume) a model from a recipe; rerunning the same command resumes from the last checkpoint.

    The recipe names the model (family + config, a preset, or a model directory), tokenizer, data,
    optimiser, schedule, batch and run directory. At start the derived global batch, tokens per step
    and total tokens are printed. Checkpoints go to RUN_DIR/checkpoints (atomic, keep-last-k), the
    log to RUN_DIR/log.jsonl, the final HF model to RUN_DIR/final.

    Exit code: 0 done, 1 training failed, 2 bad recipe or usage.

    Examples:

        flactl train recipes/tiny-cpu.toml

        flactl train recipes/gla-340m.toml --set run.steps=200 --set data.sources.0.path='data/*.jsonl'

        flactl train recipes/gla-340m.toml --num-gpus 8
    """
    from flactl.train.recipe import RecipeError, load_recipe, plan_batch

    try:
        r = load_recipe(str(recipe), set_)
        if num_gpus > 1 and not _in_distributed_launch():
            plan_batch(r, num_gpus)  # fail on batch divisibility before spawning anything
    except RecipeError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)

    if dry_run:
        _dry_run(r, world=num_gpus if num_gpus > 1 and not _in_distributed_launch() else None)
        return

    if num_gpus > 1 and not _in_distributed_launch():
        import subprocess

        import torch

        cmd = launch_command(recipe, set_, num_gpus, cpu=r.train.device == "cpu" or not torch.cuda.is_available())
        typer.echo("[flactl train] launching: " + " ".join(cmd[1:]), err=True)
        raise typer.Exit(subprocess.call(cmd))

    from flactl.train.loop import StopTraining
    from flactl.train.loop import train as run_training

    # Testing knob: stop after step K as if killed (no final save), to check resume end to end.
    stop_after = int(os.environ["FLACTL_STOP_AFTER_STEP"]) if os.environ.get("FLACTL_STOP_AFTER_STEP") else None
    try:
        run_training(r, stop_after=stop_after)
    except StopTraining as e:
        typer.echo(f"[flactl train] stopped after step {e} (FLACTL_STOP_AFTER_STEP)", err=True)
        raise typer.Exit(3)
    except RecipeError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    except KeyboardInterrupt:
        typer.echo("[flactl train] interrupted; rerun the same command to resume from the last checkpoint", err=True)
        raise typer.Exit(130)


def _dry_run(r, world: Optional[int] = None) -> None:
    import json

    from flactl.train.model import build_config
    from flactl.train.recipe import RecipeError, plan_batch, stream_layout
    from flactl.train.tokenizer import load_tokenizer

    world = world or int(os.environ.get("WORLD_SIZE", "1"))
    try:
        plan = plan_batch(r, world)
        config = build_config(r.model, load_tokenizer(r.tokenizer.path))
    except RecipeError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    typer.echo(f"[flactl train] {plan.describe()}")
    streams, mine = stream_layout(r.data, 0, world)
    fixed = "fixed: the same global batches for any process count dividing it" if r.data.streams else \
        "processes × workers: the data order depends on the process count (set data.streams to fix it)"
    typer.echo(f"[flactl train] data: {streams} streams, {len(mine)} per process, "
               f"{r.data.num_workers} worker(s) per process ({fixed})")
    typer.echo(json.dumps(config.to_diff_dict(), indent=2, default=str))


def register(app: typer.Typer) -> None:
    app.command(name="train")(train)
