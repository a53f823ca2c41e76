"""lm-evaluation-harness glue for ``flactl eval``.

How flactl models reach lm-eval: ``import flactl.models`` registers every flactl config/model with
transformers' Auto classes, then lm-eval's stock ``hf`` model (HFLM) loads the directory by path.
The model is passed as a *path* (never an object) so lm-eval's own data-parallel setup works under
``accelerate launch``; this module is also the entry point for that launch::

    accelerate launch --num_processes N -m flactl.eval.harness SETTINGS.json

Local task YAMLs: ``dataset_kwargs.data_files`` given as relative paths are resolved against the
YAML's own folder (lm-eval/datasets would resolve them against the current directory), so task
folders can be shipped and used from anywhere. flactl's bundled tasks (``flactl/eval/tasks``) are
always on the include path.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

BUNDLED_TASKS = Path(__file__).parent / "tasks"
OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


@dataclass
class EvalSettings:
    model: str
    tasks: list[str]
    num_fewshot: Optional[int] = None
    batch_size: str = "1"
    limit: Optional[float] = None
    dtype: str = "auto"
    device: str = "cpu"
    max_length: Optional[int] = None
    include_path: list[str] = field(default_factory=list)
    output: Optional[str] = None
    seed: int = 1234
    log_samples: bool = False
    offline: bool = False
    gen_kwargs: Optional[str] = None
    model_args: Optional[str] = None


def set_offline() -> None:
    for var in OFFLINE_VARS:
        os.environ[var] = "1"


def include_paths(extra: list[str]) -> list[str]:
    return [str(BUNDLED_TASKS)] + [str(Path(p).resolve()) for p in extra]


def task_manager(paths: list[str], include_defaults: bool):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=paths, include_defaults=include_defaults)


def list_tasks(extra_paths: list[str], local_only: bool = False) -> dict[str, list[str]]:
    """Task names: local (bundled + --include-path) and, unless ``local_only``, lm-eval's stock tasks."""
    local = task_manager(include_paths(extra_paths), include_defaults=False)
    out = {"local": sorted(local.all_tasks)}
    if not local_only:
        full = task_manager(include_paths(extra_paths), include_defaults=True)
        out["lm_eval"] = sorted(set(full.all_tasks) - set(out["local"]))
    return out


def _resolve_specs(tm, names: list[str], local_dirs: list[str]) -> list[Any]:
    """Task names → lm-eval specs; local YAML tasks become dicts with absolute ``data_files``."""
    from lm_eval.tasks._yaml_loader import load_yaml

    specs: list[Any] = []
    for name in names:
        entry = tm.task_index.get(name)
        yaml_path = getattr(entry, "yaml_path", None) if entry is not None else None
        if yaml_path is None or not any(str(Path(yaml_path).resolve()).startswith(d) for d in local_dirs):
            specs.append(name)
            continue
        if getattr(getattr(entry, "kind", None), "name", "") not in ("TASK", "PY_TASK"):
            specs.append(name)
            continue
        cfg = load_yaml(yaml_path, resolve_func=True)
        base = Path(yaml_path).parent
        kw = dict(cfg.get("dataset_kwargs") or {})
        if "data_files" in kw:
            kw["data_files"] = _absolute(kw["data_files"], base)
            cfg["dataset_kwargs"] = kw
        if cfg.get("dataset_path") and not str(cfg["dataset_path"]).startswith(("json", "csv", "parquet", "arrow", "text")):
            p = base / cfg["dataset_path"]
            if p.exists():
                cfg["dataset_path"] = str(p)
        specs.append(cfg)
    return specs


def _absolute(files, base: Path):
    if isinstance(files, str):
        return files if os.path.isabs(files) or "://" in files else str(base / files)
    if isinstance(files, list):
        return [_absolute(f, base) for f in files]
    if isinstance(files, dict):
        return {k: _absolute(v, base) for k, v in files.items()}
    return files


def model_args(s: EvalSettings) -> str:
    # backend=causal: flactl's model types are registered through AutoModelForCausalLM.register,
    # which lm-eval's name-based causal/seq2seq detection does not see (it would warn, then guess).
    args = [f"pretrained={s.model}", f"dtype={s.dtype}", "backend=causal"]
    if s.max_length:
        args.append(f"max_length={s.max_length}")
    if s.model_args:
        args.append(s.model_args)
    return ",".join(args)


def run(s: EvalSettings, progress: bool = True) -> Optional[dict]:
    """Run lm-eval in this process; return the results dict on rank 0 (``None`` on other ranks)."""
    if s.offline:
        set_offline()
    import flactl.models  # noqa: F401  (registers flactl model types for AutoModelForCausalLM)
    import lm_eval

    paths = include_paths(s.include_path)
    tm = task_manager(paths, include_defaults=False)
    missing = [t for t in s.tasks if t not in tm.task_index]
    if missing:  # only index lm-eval's ~14k stock YAMLs when a stock task is asked for
        tm = task_manager(paths, include_defaults=True)
        missing = [t for t in s.tasks if t not in tm.task_index]
        if missing:
            raise KeyError(f"unknown task(s): {', '.join(missing)} (see `flactl eval --tasks list`)")
    local_dirs = [str(Path(p).resolve()) for p in paths]
    specs = _resolve_specs(tm, s.tasks, local_dirs)
    t0 = time.time()
    out = lm_eval.simple_evaluate(
        model="hf", model_args=model_args(s), tasks=specs, num_fewshot=s.num_fewshot,
        batch_size=s.batch_size, device=s.device, limit=s.limit, task_manager=tm,
        log_samples=s.log_samples, random_seed=s.seed, numpy_random_seed=s.seed,
        torch_random_seed=s.seed, fewshot_random_seed=s.seed, gen_kwargs=s.gen_kwargs,
    )
    if out is None:  # non-zero rank under data parallel
        return None
    out = dict(out)
    out["flactl"] = provenance(s, time.time() - t0)
    if s.output:
        write_results(out, s.output)
    return out


def provenance(s: EvalSettings, seconds: float) -> dict:
    import torch
    import transformers
    from importlib.metadata import version

    import flactl

    def _v(pkg):
        try:
            return version(pkg)
        except Exception:  # noqa: BLE001
            return None

    return {
        "versions": {
            "flactl": flactl.__version__, "lm_eval": _v("lm_eval"), "torch": torch.__version__,
            "transformers": transformers.__version__, "triton": _v("triton"), "python": platform.python_version(),
        },
        "settings": asdict(s),
        "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "seconds": round(seconds, 2),
    }


def write_results(out: dict, path: str) -> None:
    from lm_eval.utils import handle_non_serializable

    p = Path(path)
    if p.suffix != ".json":
        p.mkdir(parents=True, exist_ok=True)
        p = p / "results.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(out, indent=2, default=handle_non_serializable, ensure_ascii=False))


def summary_rows(out: dict) -> list[dict]:
    """Flat ``{task, metric, value, stderr, version, n_shot}`` rows for tables and ``--json``."""
    rows = []
    for task, metrics in (out.get("results") or {}).items():
        for key, val in metrics.items():
            if key == "alias" or "_stderr" in key or not isinstance(val, (int, float)):
                continue
            metric, _, filt = key.partition(",")
            err = metrics.get(f"{metric}_stderr,{filt}")
            rows.append({
                "task": task, "metric": metric, "value": val,
                "stderr": err if isinstance(err, (int, float)) else None,
                "version": (out.get("versions") or {}).get(task), "n_shot": (out.get("n-shot") or {}).get(task),
            })
    return rows


def accelerate_command(settings_file: str, num_gpus: int) -> list[str]:
    """The ``accelerate launch`` argv that runs this module data-parallel on ``num_gpus`` GPUs."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_gpus),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "-m", "flactl.eval.harness", settings_file]


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m flactl.eval.harness SETTINGS.json", file=sys.stderr)
        return 2
    s = EvalSettings(**json.loads(Path(argv[0]).read_text()))
    run(s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
