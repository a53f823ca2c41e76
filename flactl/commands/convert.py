"""``flactl convert KIND SRC -o DST``: HF → flactl initialisation, trainer checkpoint → HF, safetensors dtype/resharding."""
from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, List, Optional

import typer


class Kind(str, Enum):
    hf_to_flactl = "hf-to-flactl"
    checkpoint = "checkpoint"
    safetensors = "safetensors"


def convert(
    kind: Annotated[Kind, typer.Argument(help="hf-to-flactl, checkpoint or safetensors.")],
    source: Annotated[Path, typer.Argument(help="hf-to-flactl: an HF Llama/Mistral/Qwen model dir. checkpoint: a trainer checkpoint folder (accelerate state or torch DCP shards). safetensors: a model dir.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model directory to write.")],
    family: Annotated[Optional[str], typer.Option(help="hf-to-flactl: the flactl family to initialise (gla, gated_deltanet, ...).")] = None,
    set_: Annotated[Optional[List[str]], typer.Option("--set", help="hf-to-flactl: override a target config field, key=value (repeatable).")] = None,
    config: Annotated[Optional[str], typer.Option(help="checkpoint: config.json or model dir describing the model (default: found in the run directory).")] = None,
    tokenizer: Annotated[Optional[str], typer.Option(help="Tokenizer dir to include (default: the source's, else the built-in byte tokenizer).")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="Output weight dtype: float32, bfloat16, float16 (default: keep).")] = None,
    max_shard_size: Annotated[str, typer.Option(help="Largest safetensors shard, e.g. 2GB, 500MB.")] = "5GB",
    allow_partial: Annotated[bool, typer.Option("--allow-partial", help="Write even if source keys have no place in the target (or target keys are missing).")] = False,
    no_parity: Annotated[bool, typer.Option("--no-parity", help="Skip the logit parity check.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Write into a non-empty output directory.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Convert: HF Llama-style -> flactl, trainer checkpoint -> model dir, safetensors dtype/shards.

    Every conversion prints a report (copied / new / missing / unexpected keys) and, where a source model exists, a logit parity check on a short built-in text. Strict by default: unmapped or missing keys are an error unless --allow-partial.

    hf-to-flactl initialises a linear-attention model from a Llama/Mistral/Qwen-style model: embeddings, norms, MLP and the q/k/v/o projections whose shapes match are copied; the rest keeps the family's initialisation (listed as "new"). checkpoint turns a `flactl train` checkpoint (accelerate state or torch distributed checkpoint shards; all shards are checked first) into a model directory. safetensors rewrites a model directory's weights in another dtype and/or shard size.

    Examples:

      flactl convert hf-to-flactl ./Mistral-7B-v0.1 --family gla --set expand_k=1 -o gla-from-mistral

      flactl convert checkpoint runs/tiny-cpu/checkpoints/step-00000300 -o tiny-step300

      flactl convert safetensors gla-1.3b -o gla-1.3b-bf16 --dtype bfloat16 --max-shard-size 1GB
    """
    from flactl.convert.modeldir import parse_dtype

    try:
        tdtype = parse_dtype(dtype)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--dtype") from None
    if not source.exists():
        raise typer.BadParameter(f"{source} does not exist", param_hint="SOURCE")
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not force:
        raise typer.BadParameter(f"{output} exists and is not empty (use --force)", param_hint="--output")
    if output.resolve() == source.resolve():
        raise typer.BadParameter("output must differ from the source", param_hint="--output")

    from flactl.convert.report import ConversionError

    try:
        if kind == Kind.hf_to_flactl:
            rep = _hf_to_flactl(source, output, family, set_ or [], tokenizer, tdtype, max_shard_size, allow_partial, no_parity)
        elif kind == Kind.checkpoint:
            rep = _checkpoint(source, output, config, tokenizer, tdtype, max_shard_size, allow_partial, no_parity)
        else:
            rep = _safetensors(source, output, tdtype, max_shard_size, no_parity)
    except ConversionError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    if json_out:
        typer.echo(json.dumps(rep.to_dict(), indent=2))
    else:
        typer.echo(rep.text())
        typer.echo(f"written to {output}/")


def _hf_to_flactl(source, output, family, sets, tokenizer, tdtype, max_shard_size, allow_partial, no_parity):
    from flactl.convert import build, hf_to_flactl as h2f
    from flactl.convert.modeldir import builtin_tokenizer, is_model_dir, load_tokenizer, save_model_dir
    from flactl.convert.report import Report, parity

    if not family:
        raise typer.BadParameter("give the target --family (see `flactl init --list`)", param_hint="--family")
    if not is_model_dir(source):
        raise typer.BadParameter(f"{source} is not a model directory (no config.json)", param_hint="SOURCE")
    import flactl.models  # noqa: F401
    from transformers import AutoConfig, AutoModelForCausalLM

    src_cfg = AutoConfig.from_pretrained(source)
    if src_cfg.model_type not in h2f.SUPPORTED_SOURCES:
        raise typer.BadParameter(
            f"source model_type {src_cfg.model_type!r} is not Llama-style ({', '.join(h2f.SUPPORTED_SOURCES)})", param_hint="SOURCE")
    try:
        cls = build.config_class(family)
        known = set(cls().to_dict())
        fields = {k: v for k, v in h2f.target_fields(src_cfg).items() if k in known}
        if "num_kv_heads" in fields and fields["num_kv_heads"] == fields.get("num_heads"):
            fields.pop("num_kv_heads")
        dst_cfg = build.build_config(family, {}, build.parse_sets(sets), fields)
    except build.ConfigError as e:
        raise typer.BadParameter(str(e), param_hint="--set") from None
    src = AutoModelForCausalLM.from_pretrained(source, dtype="float32")
    dst = build.build_model(dst_cfg, seed=0)
    rep = Report("hf-to-flactl", str(source), str(output))
    from flactl.convert.checkpoint import load_checkpoint_state

    # The files on disk are the truth: from_pretrained silently drops keys it does not know.
    raw, _ = load_checkpoint_state(Path(source))
    h2f.transfer(raw, dst, allow_partial, rep)
    tok = _tokenizer(tokenizer, source, load_tokenizer, builtin_tokenizer)
    if not no_parity:
        rep.parity = parity(src, dst, tok)
        if family != "transformer":
            rep.notes.append("parity of a linear-attention model initialised from softmax attention is informational")
    if tdtype is not None:
        dst = dst.to(tdtype)
    save_model_dir(dst, output, tok, max_shard_size=max_shard_size)
    return rep


def _tokenizer(explicit, source, load_tokenizer, builtin_tokenizer):
    if explicit:
        try:
            return load_tokenizer(explicit)
        except Exception as e:  # noqa: BLE001
            raise typer.BadParameter(f"cannot load tokenizer {explicit!r}: {e}", param_hint="--tokenizer") from None
    if source is not None and any((Path(source) / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json")):
        return load_tokenizer(str(source))
    return builtin_tokenizer()


def _checkpoint(source, output, config, tokenizer, tdtype, max_shard_size, allow_partial, no_parity):
    from flactl.convert import checkpoint as ck
    from flactl.convert.build import build_model
    from flactl.convert.modeldir import builtin_tokenizer, load_tokenizer, save_model_dir
    from flactl.convert.report import ConversionError, Report, parity

    try:
        cfg_path = ck.find_config(source, config)
    except FileNotFoundError as e:
        raise typer.BadParameter(str(e), param_hint="--config") from None
    import flactl.models  # noqa: F401
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(cfg_path.parent if cfg_path.name == "config.json" else cfg_path)
    sd, desc = ck.load_checkpoint_state(source)  # checks every shard first
    model = build_model(cfg, seed=0)
    expected = set(model.state_dict())
    sd = ck.normalise_keys(sd, expected)
    rep = Report("checkpoint", str(source), str(output), notes=[f"source: {desc}", f"config: {cfg_path}"])
    tied = getattr(cfg, "tie_word_embeddings", False)
    rep.unexpected = sorted(k for k in sd if k not in expected)
    rep.missing = sorted(k for k in expected if k not in sd and not (tied and k == "lm_head.weight"))
    for k in sorted(set(sd) & expected):
        if tuple(sd[k].shape) != tuple(model.state_dict()[k].shape):
            rep.shape_mismatch.append(f"{k} {tuple(sd[k].shape)} -> {tuple(model.state_dict()[k].shape)}")
    if rep.shape_mismatch:
        raise ConversionError(f"shape mismatch between checkpoint and config: {rep.shape_mismatch[0]}")
    if (rep.missing or rep.unexpected) and not allow_partial:
        raise ConversionError(
            f"checkpoint does not match the config: {len(rep.missing)} missing (e.g. {(rep.missing or ['-'])[0]}), "
            f"{len(rep.unexpected)} unexpected (e.g. {(rep.unexpected or ['-'])[0]}); --allow-partial writes anyway")
    model.load_state_dict({k: v for k, v in sd.items() if k in expected}, strict=False)
    rep.copied = sorted(k for k in sd if k in expected)
    tok_dir = tokenizer or (str(ck.find_tokenizer_dir(cfg_path)) if ck.find_tokenizer_dir(cfg_path) else None)
    tok = _tokenizer(tok_dir, None, load_tokenizer, builtin_tokenizer)
    if tdtype is not None:
        model = model.to(tdtype)
    save_model_dir(model, output, tok, max_shard_size=max_shard_size)
    if not no_parity:  # the written directory must reproduce the checkpoint's logits
        from flactl.convert.modeldir import load_model

        ref = build_model(cfg, seed=0)
        ref.load_state_dict({k: v for k, v in sd.items() if k in expected}, strict=False)
        rep.parity = parity(ref, load_model(str(output)), tok)
    return rep


def _safetensors(source, output, tdtype, max_shard_size, no_parity):
    from flactl.convert import checkpoint as ck
    from flactl.convert.modeldir import is_model_dir, load_model
    from flactl.convert.report import Report, parity

    files = ck.convert_safetensors(source, output, tdtype, max_shard_size)
    rep = Report("safetensors", str(source), str(output))
    rep.notes.append(f"files: {', '.join(files)}")
    if not no_parity and is_model_dir(source):
        try:
            from flactl.convert.modeldir import load_tokenizer

            tok = load_tokenizer(str(source))
        except Exception:  # noqa: BLE001  (no tokenizer: parity uses byte ids)
            tok = None
        rep.parity = parity(load_model(str(source)), load_model(str(output)), tok)
    return rep


def register(app: typer.Typer) -> None:
    app.command(name="convert")(convert)
