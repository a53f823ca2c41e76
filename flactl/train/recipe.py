"""Training recipes: a TOML file, validated completely before any model or data is touched.

A recipe has these tables (every key optional except the model and at least one data source)::

    [run]        dir, seed, steps | tokens
    [model]      family + [model.config] | preset | path
    [tokenizer]  path ("byte" = built-in byte tokenizer, or a local tokenizer directory)
    [data]       seq_len, varlen, context_len, num_workers, streams, shuffle, [[data.sources]] (type, path, ...)
    [batch]      micro_batch (rows per device per micro-step), global_batch | tokens_per_step
    [optim]      lr, betas, eps, weight_decay, fused, max_grad_norm
    [schedule]   type (cosine|linear|wsd|constant), warmup_steps, min_lr_ratio, decay_ratio
    [train]      precision, distributed (ddp|fsdp2), activation_checkpointing, compile, ...
    [checkpoint] every, keep_last, export
    [metrics]    log_every, progress, tensorboard, wandb, wandb_project

Every error is a ``RecipeError`` (a ``ValueError``) whose message starts with the dotted key, e.g.
``batch.global_batch: 30 is not divisible by micro_batch × devices = 8``. Unknown keys are errors
with a "did you mean" hint; ``--set key=value`` overrides use the same dotted names.
See docs/training.md for every key with its meaning.
"""
from __future__ import annotations

import dataclasses
import difflib
import glob
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class RecipeError(ValueError):
    """A recipe problem; the message names the offending key."""


# ----------------------------------------------------------------------------------------- schema
# Each section is a dataclass; the field type drives validation. ``choices`` metadata restricts strings.

def _choice(default, *choices):
    return field(default=default, metadata={"choices": choices})


@dataclass
class RunSection:
    dir: str = "runs/default"
    seed: int = 42
    steps: int = 0            # optimizer steps; 0 → derived from ``tokens``
    tokens: float = 0.0       # token budget; used when steps == 0


@dataclass
class ModelSection:
    family: str = ""          # a model_type registered with transformers (gla, gated_deltanet, llama, …)
    preset: str = ""          # a named config from flactl.train.presets (e.g. "gla-340m")
    path: str = ""            # an existing HF model directory: train from its weights
    config: Dict[str, Any] = field(default_factory=dict)   # config fields (with family or preset)


@dataclass
class TokenizerSection:
    path: str = "byte"


@dataclass
class SourceSection:
    type: str = _choice("text", "text", "json", "parquet", "hub", "generated")
    path: str = ""            # files/glob (text/json/parquet), dataset name (hub)
    name: str = ""            # hub config name
    split: str = "train"
    streaming: bool = False
    prob: float = 1.0         # mixing weight (normalised over sources)
    text_column: str = ""     # default: "text", else "content"
    task: str = _choice("grammar", "grammar", "recall")   # generated corpora
    num_docs: int = 0         # generated: 0 = endless


@dataclass
class DataSection:
    seq_len: int = 2048
    varlen: bool = True       # pass cu_seqlens so no token sees another document
    context_len: int = 0      # split documents longer than this inside a row (0 = no split)
    num_workers: int = 0
    streams: int = 0          # data streams over all processes (0: processes × workers); fix it to make
    #                           the global batch independent of the GPU count
    shuffle: bool = True
    tokenize_batch: int = 64  # documents tokenised per call
    sources: List[SourceSection] = field(default_factory=list)


@dataclass
class BatchSection:
    micro_batch: int = 8      # rows per device per forward/backward
    global_batch: int = 0     # rows per optimizer step over all devices (0 → from tokens_per_step)
    tokens_per_step: int = 0


@dataclass
class OptimSection:
    lr: float = 3e-4
    betas: Tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    fused: str = _choice("auto", "auto", "true", "false")
    max_grad_norm: float = 1.0


@dataclass
class ScheduleSection:
    type: str = _choice("cosine", "cosine", "linear", "wsd", "constant")
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    decay_ratio: float = 0.1      # wsd: fraction of steps spent decaying
    decay_type: str = _choice("linear", "linear", "cosine", "sqrt")   # wsd decay shape


@dataclass
class TrainSection:
    precision: str = _choice("auto", "auto", "bf16", "fp32")   # auto: bf16 on GPU, fp32 on CPU
    device: str = _choice("auto", "auto", "cpu", "cuda")
    distributed: str = _choice("ddp", "ddp", "fsdp2")
    activation_checkpointing: bool = False
    compile: bool = False
    skip_nonfinite: bool = True
    max_bad_steps: int = 10        # consecutive non-finite steps → dump the batch and stop
    watchdog_s: float = 900.0      # no step finished for this long → print every thread's stack
    deterministic: bool = False


@dataclass
class CheckpointSection:
    every: int = 500
    keep_last: int = 2
    export: bool = True


@dataclass
class MetricsSection:
    log_every: int = 10
    progress: str = _choice("auto", "auto", "rich", "tqdm", "none")
    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "flactl"


@dataclass
class Recipe:
    run: RunSection = field(default_factory=RunSection)
    model: ModelSection = field(default_factory=ModelSection)
    tokenizer: TokenizerSection = field(default_factory=TokenizerSection)
    data: DataSection = field(default_factory=DataSection)
    batch: BatchSection = field(default_factory=BatchSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    train: TrainSection = field(default_factory=TrainSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    source_file: str = ""

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source_file")
        return d


@dataclass
class BatchPlan:
    """Derived batch numbers for a given number of processes."""
    world_size: int
    micro_batch: int
    grad_accum: int
    global_batch: int
    seq_len: int
    steps: int

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.seq_len

    @property
    def total_tokens(self) -> int:
        return self.tokens_per_step * self.steps

    def describe(self) -> str:
        return (
            f"global batch {self.global_batch} rows = micro_batch {self.micro_batch} × grad_accum "
            f"{self.grad_accum} × {self.world_size} process(es); seq_len {self.seq_len}; "
            f"tokens/step {self.tokens_per_step:,}; steps {self.steps:,}; total tokens {self.total_tokens:,}"
        )


# ------------------------------------------------------------------------------------- validation

def _convert(key: str, value: Any, ftype: Any, f: dataclasses.Field) -> Any:
    origin = getattr(ftype, "__origin__", None)
    if dataclasses.is_dataclass(ftype):
        return _build(ftype, value, key)
    if origin in (list, List):
        (item,) = ftype.__args__
        if not isinstance(value, list):
            raise RecipeError(f"{key}: expected a list (an array of tables [[{key}]]), got {value!r}")
        return [_convert(f"{key}[{i}]", v, item, f) for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise RecipeError(f"{key}: expected a table, got {value!r}")
        return dict(value)
    if origin in (tuple, Tuple):
        if not isinstance(value, (list, tuple)) or len(value) != len(ftype.__args__):
            raise RecipeError(f"{key}: expected a list of {len(ftype.__args__)} numbers, got {value!r}")
        return tuple(_convert(f"{key}[{i}]", v, t, f) for i, (v, t) in enumerate(zip(value, ftype.__args__)))
    if ftype is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{key}: expected true or false, got {value!r}")
        return value
    if ftype is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise RecipeError(f"{key}: expected an integer, got {value!r}")
        if value < 0:
            raise RecipeError(f"{key}: must be ≥ 0, got {value!r}")
        return int(value)
    if ftype is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if ftype is str:
        if isinstance(value, bool):  # TOML true/false for a string knob such as optim.fused
            value = "true" if value else "false"
        if not isinstance(value, str):
            raise RecipeError(f"{key}: expected a string, got {value!r}")
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise RecipeError(f"{key}: {value!r} is not one of {', '.join(choices)}")
        return value
    raise AssertionError(f"unsupported schema type {ftype} for {key}")  # schema bug, not user input


def _build(cls, table: Any, prefix: str):
    if not isinstance(table, dict):
        raise RecipeError(f"{prefix}: expected a table, got {table!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source_file"}
    hints = _type_hints(cls)
    kwargs = {}
    for key, value in table.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in fields:
            near = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {prefix + '.' if prefix else ''}{near[0]}?)" if near else ""
            raise RecipeError(f"{dotted}: unknown key{hint}; known keys: {', '.join(fields)}")
        kwargs[key] = _convert(dotted, value, hints[key], fields[key])
    return cls(**kwargs)


_HINTS: Dict[type, Dict[str, Any]] = {}


def _type_hints(cls) -> Dict[str, Any]:
    if cls not in _HINTS:
        import typing

        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def parse_override(item: str) -> Tuple[List[str], Any]:
    """``"optim.lr=1e-3"`` → (["optim", "lr"], 0.001). Values are TOML literals, else plain strings."""
    if "=" not in item:
        raise RecipeError(f"--set {item!r}: expected key=value, e.g. --set optim.lr=1e-3")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise RecipeError(f"--set {item!r}: bad key {key!r}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # bare words: --set run.dir=runs/x
    return key.split("."), value


def _apply_override(table: Dict[str, Any], parts: List[str], value: Any) -> None:
    node = table
    for i, p in enumerate(parts[:-1]):
        if p.isdigit() and isinstance(node, list):  # data.sources.0.prob
            idx = int(p)
            if idx >= len(node):
                raise RecipeError(f"{'.'.join(parts[:i + 1])}: index {idx} out of range ({len(node)} entries)")
            node = node[idx]
            continue
        node = node.setdefault(p, {})
        if not isinstance(node, (dict, list)):
            raise RecipeError(f"{'.'.join(parts[:i + 1])}: is a value, not a table")
    node[parts[-1]] = value


def load_recipe(path: str, overrides: Optional[List[str]] = None) -> Recipe:
    """Read, override and validate a recipe. Raises ``RecipeError`` naming the key on any problem."""
    if not os.path.isfile(path):
        raise RecipeError(f"recipe: file not found: {path}")
    with open(path, "rb") as fh:
        try:
            table = tomllib.load(fh)
        except tomllib.TOMLDecodeError as e:
            raise RecipeError(f"recipe: {path} is not valid TOML: {e}") from None
    return recipe_from_dict(table, overrides, source_file=path)


def recipe_from_dict(table: Dict[str, Any], overrides: Optional[List[str]] = None, source_file: str = "") -> Recipe:
    import copy

    table = copy.deepcopy(table)
    for item in overrides or []:
        parts, value = parse_override(item)
        _apply_override(table, parts, value)
    recipe = _build(Recipe, table, "")
    recipe.source_file = source_file
    _check(recipe)
    return recipe


def _check(r: Recipe) -> None:
    """Cross-field checks that need no torch: everything except world-size-dependent batch math."""
    m = r.model
    given = [k for k in ("family", "preset", "path") if getattr(m, k)]
    if len(given) != 1:
        raise RecipeError("model: give exactly one of model.family, model.preset or model.path"
                          + (f" (got {', '.join('model.' + g for g in given)})" if given else ""))
    if m.path:
        if not os.path.isdir(m.path):
            raise RecipeError(f"model.path: {m.path!r} is not a directory")
        if m.config:
            raise RecipeError("model.config: not allowed with model.path (the directory's config.json is used)")
    if m.preset:
        from flactl.train.presets import PRESETS

        if m.preset not in PRESETS:
            raise RecipeError(f"model.preset: unknown preset {m.preset!r}; known: {', '.join(sorted(PRESETS))}")

    if r.tokenizer.path not in ("", "byte") and not os.path.isdir(r.tokenizer.path):
        raise RecipeError(f"tokenizer.path: {r.tokenizer.path!r} is not a local directory (or use \"byte\")")

    d = r.data
    if d.seq_len < 2:
        raise RecipeError(f"data.seq_len: must be ≥ 2, got {d.seq_len}")
    if d.context_len and d.context_len > d.seq_len:
        raise RecipeError(f"data.context_len: {d.context_len} exceeds data.seq_len {d.seq_len}")
    if d.num_workers < 0 or d.streams < 0:
        raise RecipeError("data.num_workers / data.streams: must be ≥ 0")
    if d.tokenize_batch < 1:
        raise RecipeError("data.tokenize_batch: must be ≥ 1")
    if not d.sources:
        raise RecipeError("data.sources: no data source; add a [[data.sources]] table")
    for i, s in enumerate(d.sources):
        key = f"data.sources[{i}]"
        if s.prob <= 0:
            raise RecipeError(f"{key}.prob: must be > 0, got {s.prob}")
        if s.type in ("text", "json", "parquet"):
            if not s.path:
                raise RecipeError(f"{key}.path: required for type {s.type!r}")
            if not resolve_files(s.path):
                raise RecipeError(f"{key}.path: no file matches {s.path!r} (cwd {os.getcwd()})")
        elif s.type == "hub" and not s.path:
            raise RecipeError(f"{key}.path: required for type 'hub' (the dataset name or a local dataset folder)")

    b = r.batch
    if b.micro_batch < 1:
        raise RecipeError("batch.micro_batch: must be ≥ 1")
    if bool(b.global_batch) == bool(b.tokens_per_step):
        raise RecipeError("batch: give exactly one of batch.global_batch or batch.tokens_per_step")
    if b.tokens_per_step and b.tokens_per_step % d.seq_len:
        raise RecipeError(f"batch.tokens_per_step: {b.tokens_per_step} is not divisible by data.seq_len {d.seq_len}")
    if bool(r.run.steps) == bool(r.run.tokens):
        raise RecipeError("run: give exactly one of run.steps or run.tokens")
    if r.optim.lr <= 0:
        raise RecipeError(f"optim.lr: must be > 0, got {r.optim.lr}")
    if not 0 <= r.schedule.min_lr_ratio <= 1:
        raise RecipeError(f"schedule.min_lr_ratio: must be in [0, 1], got {r.schedule.min_lr_ratio}")
    if not 0 < r.schedule.decay_ratio <= 1:
        raise RecipeError(f"schedule.decay_ratio: must be in (0, 1], got {r.schedule.decay_ratio}")
    if r.checkpoint.every < 1:
        raise RecipeError("checkpoint.every: must be ≥ 1")
    if r.checkpoint.keep_last < 1:
        raise RecipeError("checkpoint.keep_last: must be ≥ 1")
    if r.metrics.log_every < 1:
        raise RecipeError("metrics.log_every: must be ≥ 1")
    if r.train.max_bad_steps < 1:
        raise RecipeError("train.max_bad_steps: must be ≥ 1")


def plan_batch(r: Recipe, world_size: int) -> BatchPlan:
    """Derive grad accumulation and steps for ``world_size`` processes; errors name the batch key."""
    b, seq = r.batch, r.data.seq_len
    if b.global_batch:
        gb, key = b.global_batch, "batch.global_batch"
    else:
        gb, key = b.tokens_per_step // seq, "batch.tokens_per_step"
    per_step = b.micro_batch * world_size
    if gb % per_step:
        what = f"{gb} rows" if key == "batch.global_batch" else f"{b.tokens_per_step} tokens = {gb} rows of {seq}"
        raise RecipeError(
            f"{key}: {what} is not divisible by batch.micro_batch × processes = "
            f"{b.micro_batch} × {world_size} = {per_step}"
        )
    steps = r.run.steps
    if not steps:
        steps = max(1, int(r.run.tokens // (gb * seq)))
    stream_layout(r.data, 0, world_size)  # data.streams / data.num_workers fit this process count
    return BatchPlan(world_size, b.micro_batch, gb // per_step, gb, seq, steps)


def stream_layout(cfg: DataSection, rank: int, world: int):
    """(total streams L, this rank's stream ids in visiting order).

    Global micro-batch n (counted over steps, accumulation micro-steps and ranks, rank fastest) comes
    from stream ``n % L``. Rank r handles n = k·world + r, so its k-th micro-batch comes from stream
    ``world·(k mod L/world) + r``: its streams are r, r + world, r + 2·world, … visited in turn. With a
    fixed ``data.streams`` the global batch of every step is therefore the same for any number of
    processes that divides it (1 GPU with 4 accumulation steps == 2 GPUs with 2 == 4 GPUs with 1).
    ``data.streams = 0`` (default) uses processes × workers streams: fewest streams, but the data
    order then depends on the process count.
    """
    L = cfg.streams or world * max(1, cfg.num_workers)
    if L % world:
        raise RecipeError(f"data.streams: {L} streams cannot be split over {world} processes "
                          f"(use a multiple of {world})")
    n_local = L // world
    if cfg.num_workers > 0 and n_local % cfg.num_workers:
        raise RecipeError(f"data.num_workers: {cfg.num_workers} workers cannot share this process's "
                          f"{n_local} data streams evenly (data.streams={L} over {world} processes); "
                          f"use a divisor of {n_local}")
    return L, [rank + world * j for j in range(n_local)]


def resolve_files(pattern: str) -> List[str]:
    """Files named by a path, a glob, or a directory (all files inside, sorted)."""
    if os.path.isdir(pattern):
        return sorted(p for p in glob.glob(os.path.join(pattern, "**", "*"), recursive=True) if os.path.isfile(p))
    return sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
