"""``flactl init FAMILY``: create a new, randomly initialised model directory."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer


def init(
    family: Annotated[Optional[str], typer.Argument(help="Model family (model_type), e.g. gla, delta_net, gated_deltanet, retnet, transformer.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Directory to write (default: ./<family>-<params>).")] = None,
    hidden_size: Annotated[Optional[int], typer.Option(help="Model width.")] = None,
    num_hidden_layers: Annotated[Optional[int], typer.Option(help="Number of blocks.")] = None,
    num_heads: Annotated[Optional[int], typer.Option(help="Heads of the token mixer.")] = None,
    num_kv_heads: Annotated[Optional[int], typer.Option(help="Key/value heads (GQA), where the family has them.")] = None,
    vocab_size: Annotated[Optional[int], typer.Option(help="Vocabulary size (must cover the tokenizer).")] = None,
    intermediate_size: Annotated[Optional[int], typer.Option(help="MLP width.")] = None,
    max_position_embeddings: Annotated[Optional[int], typer.Option(help="Context length recorded in the config.")] = None,
    set_: Annotated[Optional[List[str]], typer.Option("--set", help="Any config field, key=value (repeatable), e.g. --set expand_k=0.5.")] = None,
    preset: Annotated[Optional[str], typer.Option(help="Start from a recipe in recipes/ (e.g. 340m, 1.3b, or a path); options override it.")] = None,
    attn_layers: Annotated[Optional[str], typer.Option(help="Hybrid model: comma-separated layer indices that use softmax attention, e.g. 1,3.")] = None,
    attn_window: Annotated[Optional[int], typer.Option(help="Sliding window for the hybrid attention layers.")] = None,
    attn_heads: Annotated[Optional[int], typer.Option(help="Heads of the hybrid attention layers (default: --num-heads).")] = None,
    tokenizer: Annotated[Optional[str], typer.Option(help="Tokenizer to copy (local dir or hub id). Default: the built-in byte-level tokenizer (no download).")] = None,
    dtype: Annotated[str, typer.Option(help="Weight dtype: float32, bfloat16 or float16.")] = "float32",
    seed: Annotated[int, typer.Option(help="Random seed for the initialisation.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Write into a non-empty directory.")] = False,
    list_: Annotated[bool, typer.Option("--list", help="List families and presets with parameter counts, then exit.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Create a new model directory (config, initialised safetensors weights, tokenizer).

    Writes config.json, model.safetensors from the family's initialisation, generation_config.json and a tokenizer (the built-in byte-level one by default).

    The directory loads with transformers after `import flactl` (AutoModelForCausalLM.from_pretrained(DIR)) and with every flactl command. Bad input (unknown family or field, heads not dividing the width, ...) exits with code 2 and writes nothing.

    Examples:

      flactl init --list

      flactl init gla --hidden-size 256 --num-hidden-layers 4 --num-heads 4 --vocab-size 260 -o tiny-gla

      flactl init gated_deltanet --preset 340m --dtype bfloat16 -o gdn-340m

      flactl init gla --hidden-size 512 --attn-layers 1,3 --attn-window 2048 --set expand_k=0.5 -o hybrid
    """
    from flactl.convert import build
    from flactl.convert.modeldir import builtin_tokenizer, count_params, human, load_tokenizer, parse_dtype, save_model_dir

    if list_:
        _print_list(json_out)
        return
    if not family and not preset:
        raise typer.BadParameter("give a FAMILY (see `flactl init --list`)", param_hint="FAMILY")
    try:
        torch_dtype = parse_dtype(dtype)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--dtype") from None
    layers = None
    if attn_layers:
        try:
            layers = [int(x) for x in attn_layers.split(",") if x.strip()]
        except ValueError:
            raise typer.BadParameter(f"expected comma-separated integers, got {attn_layers!r}", param_hint="--attn-layers") from None
    try:
        preset_fields, preset_family = None, None
        if preset:
            preset_family, preset_fields = build.load_preset(preset, family)
        fam = family or preset_family
        if not fam:
            raise build.ConfigError(f"preset {preset!r} names no model_type: give FAMILY")
        if family and preset_family and family != preset_family:
            raise build.ConfigError(f"preset {preset!r} is for {preset_family!r}, not {family!r}")
        common = dict(
            hidden_size=hidden_size, num_hidden_layers=num_hidden_layers, num_heads=num_heads,
            num_kv_heads=num_kv_heads, vocab_size=vocab_size, intermediate_size=intermediate_size,
            max_position_embeddings=max_position_embeddings,
        )
        config = build.build_config(
            fam, common, build.parse_sets(set_ or []), preset_fields, layers, attn_window, attn_heads,
        )
    except build.ConfigError as e:
        raise typer.BadParameter(str(e), param_hint=_hint(str(e))) from None

    # Tokenizer first: its size must fit the vocabulary, and a bad --tokenizer is a usage error.
    try:
        tok = load_tokenizer(tokenizer) if tokenizer else builtin_tokenizer()
    except Exception as e:  # noqa: BLE001  (any load failure is the user's path/id)
        raise typer.BadParameter(f"cannot load tokenizer {tokenizer!r}: {e}", param_hint="--tokenizer") from None
    if len(tok) > config.vocab_size:
        raise typer.BadParameter(
            f"vocab_size={config.vocab_size} is smaller than the tokenizer ({len(tok)} tokens)", param_hint="--vocab-size"
        )
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id"):
        tid = getattr(tok, attr, None)
        if tid is not None and hasattr(config, attr):
            setattr(config, attr, tid)

    # Validate the whole model on the meta device (no memory, no time) before touching the disk.
    try:
        n_params = count_params(build.build_model(config, meta=True))
    except (ValueError, TypeError, AssertionError, KeyError) as e:
        raise typer.BadParameter(f"invalid {fam} config: {e}", param_hint="--set") from None

    out = output or Path(f"{fam}-{human(n_params).lower()}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise typer.BadParameter(f"{out} exists and is not empty (use --force to write into it)", param_hint="--output")

    try:
        model = build.build_model(config, dtype=torch_dtype, seed=seed)
    except Exception as e:  # noqa: BLE001
        typer.echo(f"error: building the model failed: {e}", err=True)
        raise typer.Exit(1)
    # A 4-token forward on the CPU torch path catches configs that construct but cannot run
    # (e.g. inconsistent head/expand fields) before anything is written.
    err = _smoke_forward(model, min(len(tok), config.vocab_size))
    if err:
        raise typer.BadParameter(f"the {fam} model built from these options fails a forward pass: {err}", param_hint="--set")
    try:
        files = save_model_dir(model, out, tok)
    except Exception as e:  # noqa: BLE001
        typer.echo(f"error: writing {out} failed: {e}", err=True)
        raise typer.Exit(1)

    summary = {
        "family": fam, "output": str(out), "params": n_params, "params_human": human(n_params),
        "dtype": str(torch_dtype or "float32").replace("torch.", ""), "files": files,
        "config": {k: v for k, v in config.to_dict().items() if k in _SUMMARY_FIELDS and v is not None},
    }
    if json_out:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(f"{fam}: {human(n_params)} parameters ({n_params:,}) written to {out}/")
        typer.echo("  " + ", ".join(f"{k}={v}" for k, v in summary["config"].items()))
        typer.echo(f"  files: {', '.join(files)}")


def _smoke_forward(model, vocab: int) -> str:
    import torch

    from flactl.ops.utils import force_backend

    ids = torch.arange(4).remainder(max(vocab, 1))[None] + 3 if vocab > 7 else torch.zeros(1, 4, dtype=torch.long)
    try:
        with torch.no_grad(), force_backend("torch"):
            logits = model(input_ids=ids.clamp_max(vocab - 1)).logits
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    if not torch.isfinite(logits.float()).all():
        return "non-finite logits at initialisation"
    return ""


_SUMMARY_FIELDS = (
    "model_type", "hidden_size", "num_hidden_layers", "num_heads", "num_attention_heads", "num_kv_heads",
    "num_key_value_heads", "head_dim", "expand_k", "expand_v", "intermediate_size", "vocab_size", "attn",
    "max_position_embeddings",
)


def _hint(msg: str) -> str:
    if msg.startswith("--"):
        return msg.split()[0].rstrip(":")
    if "family" in msg:
        return "FAMILY"
    if "preset" in msg:
        return "--preset"
    if "head" in msg:
        return "--num-heads"
    return "--set"


def _print_list(json_out: bool) -> None:
    from flactl.convert import build
    from flactl.convert.modeldir import count_params, human

    fams = []
    for fam in build.flactl_families():
        try:
            n = count_params(build.build_model(build.config_class(fam)(), meta=True))
        except Exception as e:  # noqa: BLE001  (a broken family must not hide the others)
            n = f"error: {e}"
        fams.append({"family": fam, "default_params": n})
    presets = []
    for name, path in build.list_presets().items():
        try:
            fam, fields = build.load_preset(str(path), None)
            fields = {k: v for k, v in fields.items() if v is not None}
            n = count_params(build.build_model(build.build_config(fam, {}, {}, fields), meta=True)) if fam else None
        except Exception as e:  # noqa: BLE001
            fam, n = None, f"error: {e}"
        presets.append({"preset": name, "family": fam, "params": n, "path": str(path)})
    if json_out:
        typer.echo(json.dumps({"families": fams, "presets": presets}, indent=2))
        return
    typer.echo("families (default config):")
    for f in fams:
        n = f["default_params"]
        typer.echo(f"  {f['family']:<20} {human(n) if isinstance(n, int) else n}")
    if not fams:
        typer.echo("  (none registered: flactl.models has no families yet)")
    typer.echo("presets (flactl.train.presets and recipes/):")
    for p in presets:
        n = p["params"]
        typer.echo(f"  {p['preset']:<20} {str(p['family'] or '-'):<16} {human(n) if isinstance(n, int) else (n or '-')}")
    if not presets:
        typer.echo("  (none found)")
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    app.command(name="init")(init)
