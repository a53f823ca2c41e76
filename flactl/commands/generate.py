"""``flactl generate MODEL``: text generation with transformers' ``generate`` and flactl's cache."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer


def generate(
    model: Annotated[str, typer.Argument(help="Model directory (from `flactl init`/`train`/`convert`) or a hub id.")],
    prompt: Annotated[Optional[str], typer.Option("--prompt", "-p", help="Prompt text. Without --prompt/--prompt-file/--prompts, the prompt is read from stdin.")] = None,
    prompt_file: Annotated[Optional[Path], typer.Option(help="Read one prompt (the whole file).")] = None,
    prompts: Annotated[Optional[Path], typer.Option(help="Batch: a file with one prompt per line (.txt) or {\"prompt\": ...} per line (.jsonl).")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate per prompt.")] = 64,
    temperature: Annotated[float, typer.Option(help="0 = greedy decoding; > 0 samples.")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling threshold (sampling only).")] = 1.0,
    top_k: Annotated[int, typer.Option(help="Top-k sampling (0 = off; sampling only).")] = 0,
    repetition_penalty: Annotated[float, typer.Option(help="> 1 discourages repeats.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Random seed for sampling.")] = 0,
    dtype: Annotated[str, typer.Option(help="auto (as saved), float32, bfloat16 or float16.")] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = "auto",
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Recompute the whole prefix every step (slow; for debugging).")] = False,
    no_stream: Annotated[bool, typer.Option("--no-stream", help="Print the completion at the end instead of streaming it.")] = False,
    no_special_tokens: Annotated[bool, typer.Option("--no-special-tokens", help="Tokenize the prompt without the tokenizer's special tokens (e.g. no BOS).")] = False,
    check: Annotated[bool, typer.Option("--check", help="Compare the cached step-by-step logits with one full forward pass; exit 1 if they differ by more than --check-tol.")] = False,
    check_tol: Annotated[Optional[float], typer.Option(help="Max |logit diff| for --check (default 1e-3 in float32, 5e-2 in 16-bit).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print prompts, completions and timings as JSON (no streaming).")] = False,
) -> None:
    """Generate text from a model directory or hub id, with prompt and decode tokens/s.

    Greedy by default; --temperature > 0 samples (with --top-p/--top-k). A single prompt is streamed as it is generated; --prompts FILE runs a left-padded batch.

    Examples:

      flactl generate tiny-gla -p "The capital of France is" --max-new-tokens 32

      echo "Once upon a time" | flactl generate tiny-gla --temperature 0.8 --top-p 0.9 --seed 1

      flactl generate fla-hub/gla-1.3B-100B --prompts prompts.txt --dtype bfloat16 --json

      flactl generate tiny-gla -p "hello" --check
    """
    if max_new_tokens < 1:
        raise typer.BadParameter("must be >= 1", param_hint="--max-new-tokens")
    if temperature < 0:
        raise typer.BadParameter("must be >= 0", param_hint="--temperature")
    if not 0 < top_p <= 1:
        raise typer.BadParameter("must be in (0, 1]", param_hint="--top-p")
    if sum(x is not None for x in (prompt, prompt_file, prompts)) > 1:
        raise typer.BadParameter("give only one of --prompt, --prompt-file, --prompts", param_hint="--prompt")
    texts = _read_prompts(prompt, prompt_file, prompts)

    from flactl.convert.modeldir import is_model_dir, load_model, load_tokenizer, parse_dtype, resolve_device

    try:
        torch_dtype = parse_dtype(dtype)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--dtype") from None
    if Path(model).exists() and not is_model_dir(model):
        raise typer.BadParameter(f"{model} is not a model directory (no config.json)", param_hint="MODEL")

    import torch

    from flactl.eval.generation import generate as run_generate

    dev = resolve_device(device)
    try:
        torch.device(dev)
    except RuntimeError as e:
        raise typer.BadParameter(str(e), param_hint="--device") from None
    torch.manual_seed(seed)
    try:
        lm = load_model(model, dtype=torch_dtype, device=dev)
        tok = load_tokenizer(model)
    except Exception as e:  # noqa: BLE001
        typer.echo(f"error: cannot load {model}: {e}", err=True)
        raise typer.Exit(1)
    stream = not (no_stream or json_out)
    try:
        res = run_generate(
            lm, tok, texts, max_new_tokens=max_new_tokens, do_sample=temperature > 0, temperature=temperature,
            top_p=top_p, top_k=top_k, repetition_penalty=repetition_penalty, use_cache=not no_cache,
            stream=stream, check=check, add_special_tokens=not no_special_tokens,
        )
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--prompt") from None
    except Exception as e:  # noqa: BLE001
        typer.echo(f"error: generation failed: {type(e).__name__}: {e}", err=True)
        raise typer.Exit(1)

    wdtype = next(lm.parameters()).dtype
    tol = check_tol if check_tol is not None else (1e-3 if wdtype == torch.float32 else 5e-2)
    ok = res.check is None or (res.check["max_abs_diff"] <= tol * max(1.0, res.check["logit_scale"]))
    if json_out:
        typer.echo(json.dumps({
            "model": model, "device": dev, "dtype": str(wdtype).replace("torch.", ""),
            "results": [{"prompt": p, "completion": c} for p, c in zip(res.prompts, res.completions)],
            "prompt_tokens": res.prompt_tokens, "new_tokens": res.new_tokens,
            "prefill_s": res.prefill_s, "decode_s": res.decode_s,
            "prefill_tok_s": res.prefill_tok_s, "decode_tok_s": res.decode_tok_s,
            "check": None if res.check is None else {**res.check, "tol": tol, "ok": ok},
        }, indent=2))
    else:
        if not stream or len(texts) > 1:
            for p, c in zip(res.prompts, res.completions):
                typer.echo(p + c)
                if len(texts) > 1:
                    typer.echo("-" * 40)
        typer.echo(
            f"[{res.prompt_tokens} prompt tokens: {res.prefill_tok_s:,.1f} tok/s prefill | "
            f"{res.new_tokens} decode tokens: {res.decode_tok_s:,.1f} tok/s | {dev}, {str(wdtype).replace('torch.', '')}]",
            err=True,
        )
        if res.check is not None:
            c = res.check
            typer.echo(
                f"check: cached vs full forward over {c['steps']} steps: max |logit diff| {c['max_abs_diff']:.3e} "
                f"(logit scale {c['logit_scale']:.2f}, tol {tol:g}), argmax agreement {c['argmax_agree']:.3f} -> "
                f"{'OK' if ok else 'MISMATCH'}",
            )
    if not ok:
        raise typer.Exit(1)


def _read_prompts(prompt: Optional[str], prompt_file: Optional[Path], prompts: Optional[Path]) -> list[str]:
    if prompt is not None:
        texts = [prompt]
    elif prompt_file is not None:
        if not prompt_file.is_file():
            raise typer.BadParameter(f"{prompt_file} not found", param_hint="--prompt-file")
        texts = [prompt_file.read_text().rstrip("\n")]
    elif prompts is not None:
        if not prompts.is_file():
            raise typer.BadParameter(f"{prompts} not found", param_hint="--prompts")
        lines = [ln for ln in prompts.read_text().splitlines() if ln.strip()]
        if prompts.suffix == ".jsonl":
            try:
                texts = [json.loads(ln)["prompt"] for ln in lines]
            except (ValueError, KeyError, TypeError) as e:
                raise typer.BadParameter(f"each line must be a JSON object with a 'prompt' ({e})", param_hint="--prompts") from None
        else:
            texts = lines
    else:
        if sys.stdin is None or sys.stdin.isatty():
            raise typer.BadParameter("no prompt: give --prompt, --prompt-file, --prompts or pipe text on stdin", param_hint="--prompt")
        texts = [sys.stdin.read().rstrip("\n")]
    if not texts or any(t == "" for t in texts):
        raise typer.BadParameter("empty prompt", param_hint="--prompt")
    return texts


def register(app: typer.Typer) -> None:
    app.command(name="generate")(generate)
