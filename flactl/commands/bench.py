"""``flactl bench OP|MODEL``: time ops against torch, SDPA and (when installed) fla; or whole models."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, List, Optional

import typer


def bench(
    target: Annotated[Optional[str], typer.Argument(help="An op (gla, delta_rule, gated_delta_rule, retention, simple_gla, linear_attn), layer:NAME (layer:gla, layer:gated_deltanet, ...), a model directory, or model:FAMILY.")] = None,
    mode: Annotated[str, typer.Option(help="Ops: fwd (no grad), fwd_train (forward with grad: what a training step's forward costs), fwdbwd or decode (one token against a state / a kv cache of length T). Layers: fwd, fwd_train or fwdbwd. Models: train, generate or all.")] = "fwd",
    provider: Annotated[Optional[List[str]], typer.Option("--provider", "-p", help="Providers to run (repeatable): flactl, torch, sdpa, fla. Default: all available.")] = None,
    lengths: Annotated[str, typer.Option("--lengths", "-T", help="Comma-separated sequence lengths to sweep (decode: context lengths).")] = "1024,2048,4096,8192",
    batch: Annotated[int, typer.Option("--batch", "-B", help="Batch size.")] = 4,
    heads: Annotated[int, typer.Option("--heads", "-H", help="Heads (ops).")] = 16,
    head_dim: Annotated[int, typer.Option("--head-dim", "-D", help="Key head dim K (ops).")] = 128,
    value_dim: Annotated[Optional[int], typer.Option(help="Value head dim V (default K).")] = None,
    hidden_size: Annotated[int, typer.Option(help="Layers: model width of the input [B, T, hidden_size].")] = 1024,
    dtype: Annotated[str, typer.Option(help="auto (bfloat16 on a GPU, float32 on a CPU), bfloat16, float16 or float32.")] = "auto",
    device: Annotated[str, typer.Option(help="auto, cuda, cpu.")] = "auto",
    warmup_ms: Annotated[float, typer.Option(help="do_bench warm-up per point (GPU).")] = 25.0,
    rep_ms: Annotated[float, typer.Option(help="do_bench measuring time per point (GPU); CPU: time budget per point.")] = 100.0,
    set_: Annotated[Optional[List[str]], typer.Option("--set", help="Models: override a config field, key=value (repeatable).")] = None,
    preset: Annotated[Optional[str], typer.Option(help="Models: config from a recipe preset (with model:FAMILY).")] = None,
    steps: Annotated[int, typer.Option(help="Models: timed training steps per length.")] = 5,
    gen_tokens: Annotated[int, typer.Option(help="Models: tokens to decode per length.")] = 32,
    json_out: Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")] = False,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Also write the JSON result to this file.")] = None,
    plot: Annotated[Optional[Path], typer.Option(help="Write a PNG plot (ms vs T per provider).")] = None,
    list_: Annotated[bool, typer.Option("--list", help="List benchmarkable ops and model families, then exit.")] = False,
) -> None:
    """Benchmark an op or a model.

    Ops: sweep sequence lengths for each provider and print ms, TFLOP/s and GB/s (from a stated FLOP/byte model), each provider's speed ratio to the others, and the crossover length from which the linear-attention op beats SDPA. fla is used only if it is importable.

    Layers (layer:NAME): a whole token-mixing layer, flactl vs fla's same-named layer vs flactl's softmax Attention layer (sdpa), with tokens/s.

    Models: training tokens/s (fwd+bwd+AdamW) and generation tokens/s (prefill, decode).

    On a CPU everything runs on the torch path (slow, but it runs: that is what CI checks).

    Examples:

      flactl bench --list

      flactl bench gla --mode fwdbwd -T 1024,2048,4096,8192 -B 4 -H 16 -D 128 --plot gla.png

      flactl bench gated_delta_rule --mode decode -T 2048,8192,32768 --json -o gdn_decode.json

      flactl bench layer:gated_deltanet --mode fwdbwd --hidden-size 1024 -H 4 -T 2048,8192

      flactl bench model:gla --preset 340m --mode all -T 2048 -B 8

      flactl bench delta_rule --device cpu --dtype float32 -T 64,128 -B 1 -H 2 -D 16
    """
    from flactl.bench import registry

    if list_:
        _print_list(json_out)
        return
    if not target:
        raise typer.BadParameter("give an op, a model directory or model:FAMILY (see --list)", param_hint="TARGET")
    try:
        lens = tuple(int(x) for x in lengths.split(",") if x.strip())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {lengths!r}", param_hint="--lengths") from None
    if not lens or min(lens) < 1:
        raise typer.BadParameter("lengths must be positive", param_hint="--lengths")
    for name, val in (("--batch", batch), ("--heads", heads), ("--head-dim", head_dim), ("--steps", steps), ("--gen-tokens", gen_tokens)):
        if val < 1:
            raise typer.BadParameter("must be >= 1", param_hint=name)

    from flactl.convert.modeldir import DTYPES, is_model_dir, resolve_device

    if dtype != "auto" and dtype.lower() not in DTYPES:
        raise typer.BadParameter(f"must be bfloat16, float16 or float32, got {dtype!r}", param_hint="--dtype")
    dev = resolve_device(device)
    if dev.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise typer.BadParameter("no CUDA device visible", param_hint="--device")
    if dtype == "auto":  # CPU: bf16 matmuls are slow and Triton's interpreter mis-computes bf16 dots
        dtype = "bfloat16" if dev.startswith("cuda") else "float32"

    spec = registry.get_op(target)
    is_model = target.startswith("model:") or is_model_dir(target)
    from flactl.bench.layers import get_layer

    if target.startswith("layer:"):
        if get_layer(target) is None:
            from flactl.bench.layers import LAYERS

            raise typer.BadParameter(f"unknown layer {target!r}; layers: {', '.join('layer:' + n for n in LAYERS)}", param_hint="TARGET")
        _bench_layer(target, mode, provider, lens, batch, heads, hidden_size, dtype, dev, warmup_ms, rep_ms, set_, json_out, output, plot)
        return
    if spec is None and not is_model:
        known = ", ".join(registry.OPS)
        raise typer.BadParameter(f"unknown op or model {target!r}; ops: {known}; models: a directory or model:FAMILY", param_hint="TARGET")

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    if is_model:
        if mode not in ("train", "generate", "all"):
            if mode != "fwd":  # fwd is the op default: take it as "all" for models
                raise typer.BadParameter(f"models take train, generate or all, got {mode!r}", param_hint="--mode")
            mode = "all"
        from flactl.bench.model import format_table, load_config, run_model
        from flactl.convert import build

        try:
            cfg = load_config(target, build.parse_sets(set_ or []), preset)
        except build.ConfigError as e:
            raise typer.BadParameter(str(e), param_hint="--set") from None
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True, disable=json_out) as prog:
            task = prog.add_task("building model", total=None)
            try:
                result = run_model(target, cfg, mode=mode, lengths=lens, batch=batch, dtype=dtype, device=dev,
                                   steps=steps, gen_tokens=gen_tokens, progress=lambda d: prog.update(task, description=d))
            except Exception as e:  # noqa: BLE001
                typer.echo(f"error: model benchmark failed: {type(e).__name__}: {e}", err=True)
                raise typer.Exit(1)
        _emit(result, format_table(result), json_out, output, None)
        return

    if mode not in registry.MODES:
        raise typer.BadParameter(f"ops take {', '.join(registry.MODES)}, got {mode!r}", param_hint="--mode")
    from flactl.bench.providers import PROVIDERS
    from flactl.bench.runner import BenchConfig, format_table, run_op

    provs = _providers(provider, PROVIDERS, dev)
    cfg = BenchConfig(op=spec.name, mode=mode, providers=provs, lengths=lens, batch=batch, heads=heads,
                      head_dim=head_dim, value_dim=value_dim, dtype=dtype, device=dev, warmup_ms=warmup_ms, rep_ms=rep_ms)
    total = len(lens) * len(provs)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True, disable=json_out) as prog:
        task = prog.add_task("bench", total=total)

        def step(desc: str) -> None:
            prog.update(task, description=desc, advance=1)
        try:
            result = run_op(spec, cfg, progress=step)
        except Exception as e:  # noqa: BLE001
            typer.echo(f"error: benchmark failed: {type(e).__name__}: {e}", err=True)
            raise typer.Exit(1)
    if all(r["ms"] is None for r in result["rows"]):
        _emit(result, format_table(result), json_out, output, None)
        typer.echo("error: no provider produced a timing", err=True)
        raise typer.Exit(1)
    _emit(result, format_table(result), json_out, output, plot)


def _providers(provider, available, dev: str) -> tuple:
    """The providers asked for (all available by default), checked; by default fla only on a GPU."""
    provs = tuple(provider) if provider else tuple(available)
    bad = [p for p in provs if p not in available]
    if bad:
        raise typer.BadParameter(f"unknown provider(s) {bad}; choose from {', '.join(available)}", param_hint="--provider")
    if not dev.startswith("cuda") and not provider:
        provs = tuple(p for p in provs if p != "fla")  # fla's kernels need a GPU
    return provs


def _bench_layer(target, mode, provider, lens, batch, heads, hidden_size, dtype, dev, warmup_ms, rep_ms, set_, json_out, output, plot) -> None:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from flactl.bench.layers import PROVIDERS, run_layer
    from flactl.bench.runner import BenchConfig, format_table
    from flactl.convert import build

    if mode not in ("fwd", "fwd_train", "fwdbwd"):
        raise typer.BadParameter(f"layers take fwd, fwd_train or fwdbwd, got {mode!r}", param_hint="--mode")
    provs = _providers(provider, PROVIDERS, dev)
    try:
        sets = build.parse_sets(set_ or [])
    except build.ConfigError as e:
        raise typer.BadParameter(str(e), param_hint="--set") from None
    cfg = BenchConfig(op=target, mode=mode, providers=provs, lengths=lens, batch=batch, heads=heads, head_dim=hidden_size // heads,
                      dtype=dtype, device=dev, warmup_ms=warmup_ms, rep_ms=rep_ms)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True, disable=json_out) as prog:
        task = prog.add_task("bench", total=len(lens) * len(provs))
        try:
            result = run_layer(target, cfg, hidden_size, sets, progress=lambda d: prog.update(task, description=d, advance=1))
        except Exception as e:  # noqa: BLE001
            typer.echo(f"error: layer benchmark failed: {type(e).__name__}: {e}", err=True)
            raise typer.Exit(1)
    _emit(result, format_table(result), json_out, output, plot)
    if all(r["ms"] is None for r in result["rows"]):
        typer.echo("error: no provider produced a timing", err=True)
        raise typer.Exit(1)


def _emit(result: dict, table: str, json_out: bool, output: Optional[Path], plot: Optional[Path]) -> None:
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2))
    if plot:
        from flactl.bench.runner import plot as make_plot

        make_plot(result, str(plot))
    if json_out:
        typer.echo(json.dumps(result, indent=2))
        return
    env = result["env"]
    typer.echo(f"{env.get('gpu') or env.get('cpu')} | torch {env['torch']} | triton {env['triton']} | "
               f"flactl {env['flactl']} ({env.get('commit')}) | fla {env.get('fla') or '-'}")
    if result["kind"] in ("op", "layer"):
        c = result["config"]
        typer.echo(f"{result['op']} {c['mode']}: B={c['batch']} H={c['heads']} K={c['head_dim']} V={c['value_dim'] or c['head_dim']} {c['dtype']}")
    typer.echo(table)
    for what, path in (("JSON", output), ("plot", plot)):
        if path:
            typer.echo(f"{what} written to {path}")


def _print_list(json_out: bool) -> None:
    from flactl.bench import registry

    ops = registry.describe()
    try:
        from flactl.convert.build import flactl_families

        fams = flactl_families()
    except Exception:  # noqa: BLE001
        fams = []
    if json_out:
        typer.echo(json.dumps({"ops": ops, "models": [f"model:{f}" for f in fams], "modes": list(registry.MODES)}, indent=2))
        return
    typer.echo(f"ops (modes: {', '.join(registry.MODES)}; providers: flactl, torch, sdpa, fla):")
    for o in ops:
        typer.echo(f"  {o['name']:<18} {o['doc']}")
    typer.echo("models (modes: train, generate, all): a model directory, or " + ", ".join(f"model:{f}" for f in fams))


def register(app: typer.Typer) -> None:
    app.command(name="bench")(bench)
