"""``flactl eval MODEL --tasks ...``: lm-evaluation-harness with flactl's models, or local perplexity."""
from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Annotated, List, Optional

import typer


def eval_(
    model: Annotated[Optional[str], typer.Argument(help="Model directory or hub id.")] = None,
    tasks: Annotated[Optional[str], typer.Option("--tasks", "-t", help="Comma-separated lm-eval task names, or 'list'.")] = None,
    ppl: Annotated[Optional[Path], typer.Option("--ppl", help="Perplexity mode on a local file: .txt (one document) or .jsonl (a 'text' field per line).")] = None,
    num_fewshot: Annotated[Optional[int], typer.Option("--num-fewshot", "-f", help="Few-shot examples (default: the task's).")] = None,
    batch_size: Annotated[str, typer.Option("--batch-size", "-b", help="Batch size, or 'auto'.")] = "1",
    limit: Annotated[Optional[float], typer.Option(help="Docs per task (< 1: a fraction). For smoke tests only.")] = None,
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16.")] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = "auto",
    max_length: Annotated[Optional[int], typer.Option(help="Context length given to lm-eval (recurrent models have no positional limit: set it).")] = None,
    include_path: Annotated[Optional[List[Path]], typer.Option(help="Folder of local task YAMLs (repeatable). flactl's bundled tasks are always included.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Results JSON file (or a folder: FOLDER/results.json).")] = None,
    num_gpus: Annotated[int, typer.Option(help="Data-parallel over N GPUs via `accelerate launch` (one model copy per GPU).")] = 1,
    offline: Annotated[bool, typer.Option("--offline", help="Set HF_HUB_OFFLINE / HF_DATASETS_OFFLINE / TRANSFORMERS_OFFLINE: only local models and task files.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for lm-eval's samplers and few-shot selection.")] = 1234,
    log_samples: Annotated[bool, typer.Option("--log-samples", help="Keep per-sample outputs in the results JSON.")] = False,
    gen_kwargs: Annotated[Optional[str], typer.Option(help="Generation kwargs for generate_until tasks, e.g. 'temperature=0,max_gen_toks=64'.")] = None,
    model_args: Annotated[Optional[str], typer.Option(help="Extra lm-eval HF model_args, appended verbatim (e.g. 'trust_remote_code=True').")] = None,
    ppl_mode: Annotated[str, typer.Option(help="--ppl: 'full' (whole-document context, fed in cached chunks) or 'sliding'.")] = "full",
    window: Annotated[int, typer.Option(help="--ppl sliding: window length in tokens.")] = 2048,
    stride: Annotated[Optional[int], typer.Option(help="--ppl sliding: window step (default window/2).")] = None,
    chunk: Annotated[int, typer.Option(help="--ppl full: tokens per forward (the cache carries the context across chunks).")] = 2048,
    bucket: Annotated[int, typer.Option(help="--ppl: report perplexity per position bucket of this many tokens.")] = 2048,
    max_tokens: Annotated[Optional[int], typer.Option(help="--ppl: score at most this many tokens per document.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the command/settings that would run, then exit.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Evaluate with lm-evaluation-harness, or measure perplexity on a local file (--ppl).

    lm-eval runs with its stock `hf` model after flactl's model types are registered.

    Results JSON (--output) holds lm-eval's results plus a "flactl" block with flactl, lm-eval, torch, transformers and triton versions, task versions and every setting. Local tasks: put YAMLs (dataset_path: json, dataset_kwargs.data_files relative to the YAML) in a folder and pass --include-path; --offline keeps everything off the network.

    Examples:

      flactl eval --tasks list

      flactl eval tiny-gla --tasks flactl_tiny_mc,flactl_tiny_ppl --offline -o results.json

      flactl eval fla-hub/gla-1.3B-100B --tasks piqa,hellaswag --dtype bfloat16 -b 64 --max-length 2048

      flactl eval my-gla --tasks lambada_openai --num-gpus 8

      flactl eval my-gla --ppl book.txt --ppl-mode full --chunk 4096 --bucket 4096
    """
    from flactl.eval import harness

    if offline:
        harness.set_offline()
    extra_paths = [str(p) for p in (include_path or [])]
    for p in extra_paths:
        if not Path(p).is_dir():
            raise typer.BadParameter(f"{p} is not a directory", param_hint="--include-path")

    if tasks == "list":
        listing = harness.list_tasks(extra_paths, local_only=offline)
        if json_out:
            typer.echo(json.dumps(listing, indent=2))
        else:
            typer.echo("local tasks (bundled + --include-path):")
            for t in listing["local"]:
                typer.echo(f"  {t}")
            if "lm_eval" in listing:
                typer.echo(f"lm-eval tasks ({len(listing['lm_eval'])}; most download their data from the hub):")
                typer.echo("  " + ", ".join(listing["lm_eval"]))
        return

    if model is None:
        raise typer.BadParameter("give a MODEL directory or hub id", param_hint="MODEL")
    if (tasks is None) == (ppl is None):
        raise typer.BadParameter("give exactly one of --tasks and --ppl", param_hint="--tasks")
    if num_gpus < 1:
        raise typer.BadParameter("must be >= 1", param_hint="--num-gpus")
    from flactl.convert.modeldir import DTYPES, is_model_dir

    if dtype != "auto" and dtype.lower() not in DTYPES:
        raise typer.BadParameter(f"must be auto, float32, bfloat16 or float16, got {dtype!r}", param_hint="--dtype")
    if Path(model).exists() and not is_model_dir(model):
        raise typer.BadParameter(f"{model} is not a model directory (no config.json)", param_hint="MODEL")
    if batch_size != "auto" and not (batch_size.isdigit() and int(batch_size) > 0):
        raise typer.BadParameter(f"must be a positive integer or 'auto', got {batch_size!r}", param_hint="--batch-size")

    if ppl is not None:
        _run_ppl(model, ppl, dtype, device, ppl_mode, window, stride, chunk, bucket, max_tokens, output, json_out)
        return

    from flactl.convert.modeldir import resolve_device

    dev = "cuda" if num_gpus > 1 else resolve_device(device)
    settings = harness.EvalSettings(
        model=str(Path(model).resolve()) if Path(model).exists() else model,
        tasks=[t.strip() for t in tasks.split(",") if t.strip()], num_fewshot=num_fewshot,
        batch_size=batch_size, limit=limit, dtype=_lm_eval_dtype(dtype), device=dev, max_length=max_length,
        include_path=extra_paths, output=str(output) if output else None, seed=seed, log_samples=log_samples,
        offline=offline, gen_kwargs=gen_kwargs, model_args=model_args,
    )
    if not settings.tasks:
        raise typer.BadParameter("no task names given", param_hint="--tasks")

    if num_gpus > 1:
        _launch_data_parallel(settings, num_gpus, dry_run, json_out)
        return
    if dry_run:
        typer.echo(json.dumps(harness.asdict(settings), indent=2))
        return
    try:
        out = harness.run(settings)
    except KeyError as e:
        raise typer.BadParameter(str(e).strip("'\""), param_hint="--tasks") from None
    except Exception as e:  # noqa: BLE001
        typer.echo(f"error: evaluation failed: {type(e).__name__}: {e}", err=True)
        raise typer.Exit(1)
    _report(harness.summary_rows(out), output, json_out)


def _lm_eval_dtype(dtype: str) -> str:
    from flactl.convert.modeldir import DTYPES

    return "auto" if dtype == "auto" else DTYPES[dtype.lower()]


def _launch_data_parallel(settings, num_gpus: int, dry_run: bool, json_out: bool) -> None:
    from flactl.eval import harness

    if settings.output is None:
        # rank 0 writes results; we read them back to print the table
        settings.output = str(Path(tempfile.mkdtemp(prefix="flactl-eval-")) / "results.json")
    fd, spec = tempfile.mkstemp(prefix="flactl-eval-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(harness.asdict(settings), f)
    cmd = harness.accelerate_command(spec, num_gpus)
    if dry_run:
        typer.echo(" ".join(cmd))
        return
    typer.echo(f"launching: {' '.join(cmd)}", err=True)
    rc = subprocess.call(cmd)
    if rc != 0:
        typer.echo(f"error: accelerate launch exited with {rc}", err=True)
        raise typer.Exit(1)
    out = json.loads(Path(settings.output).read_text())
    _report(harness.summary_rows(out), Path(settings.output), json_out)


def _report(rows: list[dict], output: Optional[Path], json_out: bool) -> None:
    rows = [r for r in rows if r["metric"] != "sample_len"]
    bad = [r for r in rows if not math.isfinite(r["value"])]
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
    else:
        typer.echo(f"{'task':<28} {'ver':>5} {'shot':>4}  {'metric':<18} {'value':>12} {'± stderr':>10}")
        for r in rows:
            err = f"{r['stderr']:.4f}" if r["stderr"] is not None and math.isfinite(r["stderr"]) else ""
            typer.echo(f"{r['task']:<28} {str(r['version']):>5} {str(r['n_shot']):>4}  {r['metric']:<18} {r['value']:>12.4f} {err:>10}")
        if output:
            typer.echo(f"results written to {output}")
    if bad:
        typer.echo(f"warning: non-finite metrics: {', '.join(r['task'] + '/' + r['metric'] for r in bad)}", err=True)


def _run_ppl(model, path: Path, dtype, device, mode, window, stride, chunk, bucket, max_tokens, output, json_out) -> None:
    if not path.is_file():
        raise typer.BadParameter(f"{path} not found", param_hint="--ppl")
    if mode not in ("full", "sliding"):
        raise typer.BadParameter(f"must be 'full' or 'sliding', got {mode!r}", param_hint="--ppl-mode")
    from flactl.eval.ppl import perplexity, read_documents

    try:
        docs = read_documents(path)
    except (ValueError, UnicodeDecodeError) as e:
        raise typer.BadParameter(str(e), param_hint="--ppl") from None
    from rich.progress import Progress

    from flactl.convert.modeldir import load_model, load_tokenizer, parse_dtype, resolve_device

    dev = resolve_device(device)
    try:
        lm = load_model(model, dtype=parse_dtype(dtype), device=dev)
        tok = load_tokenizer(model)
    except Exception as e:  # noqa: BLE001
        typer.echo(f"error: cannot load {model}: {e}", err=True)
        raise typer.Exit(1)
    try:
        with Progress(transient=True, disable=json_out) as prog:
            task = prog.add_task(f"perplexity ({mode})", total=len(docs))
            res = perplexity(lm, tok, docs, mode=mode, window=window, stride=stride, chunk=chunk, bucket=bucket,
                             max_tokens=max_tokens, progress=lambda n: prog.advance(task, n))
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--window") from None
    except Exception as e:  # noqa: BLE001
        typer.echo(f"error: perplexity failed: {type(e).__name__}: {e}", err=True)
        raise typer.Exit(1)
    out = res.to_dict()
    out.update(model=model, file=str(path), window=window if mode == "sliding" else None,
               stride=(stride or window // 2) if mode == "sliding" else None, chunk=chunk if mode == "full" else None)
    if output:
        from flactl.eval.harness import EvalSettings, provenance

        out["flactl"] = provenance(EvalSettings(model=model, tasks=[f"ppl:{path}"], device=dev, dtype=dtype), 0.0)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(out, indent=2))
    if json_out:
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo(f"{path}: {out['documents']} documents, {out['tokens']} tokens, mode={mode}")
    typer.echo(f"  perplexity {out['perplexity']:.4f}   nll/token {out['nll_per_token']:.4f}   bits/byte {out['bits_per_byte']:.4f}")
    if len(out["buckets"]) > 1:
        typer.echo("  by position: " + "  ".join(f"[{b['start']},{b['end']}) {b['perplexity']:.3f}" for b in out["buckets"]))
    if output:
        typer.echo(f"results written to {output}")


def register(app: typer.Typer) -> None:
    app.command(name="eval")(eval_)
