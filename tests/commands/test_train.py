"""`flactl train` end to end through the CLI: the shipped tiny-cpu recipe, resume, bad recipes,
the --num-gpus launch line, --dry-run."""
from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from flactl.commands import app
from flactl.ops.utils.backend import force_backend

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "recipes", "tiny-cpu.toml")
SMALL = ["--set", "data.seq_len=32", "--set", "batch.micro_batch=2", "--set", "batch.global_batch=4",
         "--set", "schedule.warmup_steps=1", "--set", "metrics.log_every=1", "--set", "metrics.progress=none",
         "--set", "model.config.hidden_size=32"]


@pytest.fixture(autouse=True)
def _torch_ops():
    with force_backend("torch"):  # whole-model CPU runs use the vectorised torch ops
        yield


def _invoke(*args):
    return CliRunner().invoke(app, ["train", *args])


def test_train_resume_and_export(tmp_path):
    run = str(tmp_path / "run")
    res = _invoke(TINY, *SMALL, "--set", f"run.dir={run}", "--set", "run.steps=3", "--set", "checkpoint.every=2")
    assert res.exit_code == 0, res.output
    assert "global batch 4 rows" in res.output and "tokens/step 128" in res.output and "total tokens 384" in res.output
    assert os.path.isfile(os.path.join(run, "final", "config.json"))
    assert os.path.isfile(os.path.join(run, "final", "tokenizer.json"))
    with open(os.path.join(run, "log.jsonl")) as fh:
        assert [json.loads(line)["step"] for line in fh] == [1, 2, 3]
    # More steps, same run directory: resumes from step 3's checkpoint.
    res = _invoke(TINY, *SMALL, "--set", f"run.dir={run}", "--set", "run.steps=4", "--set", "checkpoint.every=2")
    assert res.exit_code == 0, res.output
    assert "resumed from" in res.output and "(step 3," in res.output
    with open(os.path.join(run, "log.jsonl")) as fh:
        assert [json.loads(line)["step"] for line in fh] == [1, 2, 3, 4]


def test_bad_recipe_exits_2_naming_the_key(tmp_path):
    res = _invoke(TINY, "--set", "optim.lrr=1e-3", "--set", f"run.dir={tmp_path}")
    assert res.exit_code == 2 and "optim.lrr: unknown key" in res.output and "did you mean optim.lr" in res.output
    res = _invoke(TINY, "--set", "batch.global_batch=12", "--num-gpus", "8", "--set", f"run.dir={tmp_path}")
    assert res.exit_code == 2 and "batch.global_batch: 12 rows is not divisible" in res.output
    res = _invoke(TINY, "--set", "model.config.num_head=3", "--dry-run")
    assert res.exit_code == 2 and "model.config.num_head" in res.output
    res = _invoke(str(tmp_path / "missing.toml"))
    assert res.exit_code == 2 and "recipe: file not found" in res.output
    assert not os.listdir(tmp_path), "nothing may be written before the recipe is valid"


def test_dry_run_prints_plan_and_config():
    res = _invoke(TINY, "--dry-run")
    assert res.exit_code == 0, res.output
    assert "grad_accum 2" in res.output and '"model_type": "gla"' in res.output
    res = _invoke(TINY, "--dry-run", "--num-gpus", "2")  # plans for 2 processes, launches nothing
    assert res.exit_code == 0 and "grad_accum 1 × 2 process(es)" in res.output, res.output
    assert "data: 2 streams, 1 per process" in res.output, res.output
    res = _invoke(TINY, "--dry-run", "--num-gpus", "2", "--set", "data.streams=3")
    assert res.exit_code == 2 and "data.streams" in res.output, res.output


def test_num_gpus_launch_line():
    from flactl.commands.train import launch_command

    cmd = launch_command("r.toml", ["optim.lr=1e-3"], 2, port=29999)
    i = cmd.index("-m")
    assert cmd[i + 1] == "accelerate.commands.launch"
    assert cmd[cmd.index("--num_processes") + 1] == "2" and "--multi_gpu" in cmd
    assert "--cpu" in launch_command("r.toml", [], 2, port=29999, cpu=True)
    assert cmd[cmd.index("--module"):] == ["--module", "flactl", "train", "r.toml", "--set", "optim.lr=1e-3"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_process_ddp_kill_and_resume(tmp_path):
    """Two CPU processes (gloo) under torchrun: killed after step 3 and resumed, the losses equal an
    uninterrupted two-process run; every rank's data position is restored."""
    import subprocess
    import sys

    from flactl.commands.train import _free_port

    def run(run_dir, stop=None):
        env = dict(os.environ, OMP_NUM_THREADS="1", FLACTL_OPS_BACKEND="torch")
        env.pop("FLACTL_STOP_AFTER_STEP", None)
        if stop:
            env["FLACTL_STOP_AFTER_STEP"] = str(stop)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(_free_port()), "-m", "flactl", "train", TINY, *SMALL, "--set", f"run.dir={run_dir}",
               "--set", "run.steps=4", "--set", "checkpoint.every=2", "--set", "batch.global_batch=8",
               "--set", "data.num_workers=1", "--set", "checkpoint.export=false"]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)

    def losses(run_dir):
        with open(os.path.join(run_dir, "log.jsonl")) as fh:
            return [(r["step"], r["loss"]) for r in map(json.loads, fh)]

    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    p = run(full)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "× 2 process(es)" in p.stdout
    p = run(part, stop=3)
    assert p.returncode != 0 and "stopped after step 3" in p.stderr
    assert sorted(os.listdir(os.path.join(part, "checkpoints"))) == ["step-00000002"]
    assert {"data_rank0.pt", "data_rank1.pt"} <= set(os.listdir(os.path.join(part, "checkpoints", "step-00000002")))
    p = run(part)
    assert p.returncode == 0 and "resumed from" in p.stdout, p.stdout + p.stderr
    assert losses(part) == losses(full)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_num_gpus_two_processes_match_one_process(tmp_path):
    """`flactl train --num-gpus 2` (here two CPU processes under accelerate launch) with a fixed
    data.streams sees the same global batches as one process with twice the accumulation, so the
    losses agree to float32 reduction-order noise."""
    import subprocess
    import sys

    def run(run_dir, *extra):
        env = dict(os.environ, OMP_NUM_THREADS="1", FLACTL_OPS_BACKEND="torch")
        cmd = [sys.executable, "-m", "flactl", "train", TINY, *SMALL, "--set", f"run.dir={run_dir}",
               "--set", "run.steps=4", "--set", "data.streams=2", "--set", "checkpoint.export=false", *extra]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stdout + p.stderr
        with open(os.path.join(run_dir, "log.jsonl")) as fh:
            return [r["loss"] for r in map(json.loads, fh)]

    one = run(str(tmp_path / "one"))
    two = run(str(tmp_path / "two"), "--num-gpus", "2")
    assert len(one) == len(two) == 4
    assert max(abs(a - b) for a, b in zip(one, two)) < 1e-5, (one, two)
