"""Build model configs for ``flactl init`` (and ``convert hf-to-flactl``) from a family name,
common options, ``key=value`` overrides and recipe presets; validate them before anything is written.

Families are the ``model_type`` values flactl registers with transformers' ``AutoConfig`` (importing
``flactl.models`` registers them). Other ``model_type`` values known to transformers (``llama``, …)
are accepted too, which is how tests build tiny source checkpoints for conversion.
"""
from __future__ import annotations

import ast
import json
import os
from pathlib import Path
from typing import Any, Iterable, Optional

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    tomllib = None  # type: ignore

# Common CLI option → candidate config field names (first one the config has wins).
FIELD_ALIASES = {
    "num_heads": ("num_heads", "num_attention_heads"),
    "num_kv_heads": ("num_kv_heads", "num_key_value_heads"),
}


class ConfigError(ValueError):
    """Bad user input for a model config (maps to CLI exit code 2)."""


def flactl_families() -> list[str]:
    """``model_type`` names registered by ``flactl.models`` (sorted)."""
    import flactl.models  # noqa: F401
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    out = []
    for key in list(CONFIG_MAPPING.keys()):
        try:
            cls = CONFIG_MAPPING[key]
        except Exception:  # a lazily-imported transformers config that fails to import
            continue
        if cls.__module__.startswith("flactl."):
            out.append(key)
    return sorted(set(out))


def config_class(family: str):
    import flactl.models  # noqa: F401
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    try:
        return CONFIG_MAPPING[family]
    except KeyError:
        known = ", ".join(flactl_families()) or "(none registered yet)"
        raise ConfigError(f"unknown family {family!r}; flactl families: {known}") from None


def parse_value(text: str) -> Any:
    """``'64'`` → 64, ``'0.5'`` → 0.5, ``'true'`` → True, ``'[1,3]'`` → [1, 3], ``'none'`` → None,
    anything else stays a string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_sets(items: Iterable[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, val = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key] = parse_value(val)
    return out


def recipes_dirs() -> list[Path]:
    here = Path(__file__).resolve().parents[2] / "recipes"
    return [p for p in (Path.cwd() / "recipes", here) if p.is_dir()]


def _named_presets() -> dict:
    """The trainer's named configs (``flactl.train.presets.PRESETS``: name → (model_type, fields))."""
    try:
        from flactl.train.presets import PRESETS
    except ImportError:
        return {}
    return dict(PRESETS)


def list_presets() -> dict[str, Path | str]:
    """Preset name → recipe file, or the name itself for the trainer's built-in named configs."""
    out: dict[str, Path | str] = {name: name for name in _named_presets()}
    for d in recipes_dirs():
        for p in sorted(d.glob("*.toml")) + sorted(d.glob("*.json")):
            out.setdefault(p.stem, p)
    return out


def load_preset(preset: str, family: Optional[str]) -> tuple[Optional[str], dict[str, Any]]:
    """Find a preset (``340m`` → ``recipes/<family>-340m.toml`` or ``recipes/340m.toml``, or a path) and
    return ``(family or None, model fields)``. Recipe TOMLs keep the model under ``[model]``; a
    ``config = "x.json"`` entry there points at an HF config file (relative to the recipe)."""
    named = _named_presets()
    fam_names = [f"{family}-{preset}", f"{family.replace('_', '-')}-{preset}", f"{family}_{preset}"] if family else []
    for name in fam_names + [preset]:
        if name in named:
            fam, fields = named[name]
            return fam, dict(fields)
    cands: list[Path] = []
    if os.path.exists(preset):
        cands.append(Path(preset))
    presets = list_presets()
    for name in fam_names + [preset]:
        if isinstance(presets.get(name), Path):
            cands.append(presets[name])
    if not cands:
        raise ConfigError(
            f"unknown preset {preset!r}; available: {', '.join(presets) or '(no recipes/ directory found)'}"
        )
    path = cands[0]
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        model = data
    else:
        if tomllib is None:
            raise ConfigError("reading TOML presets needs Python 3.11+ (tomllib)")
        data = tomllib.loads(path.read_text())
        model = dict(data.get("model", data))
    if isinstance(model.get("config"), str):
        cfg_path = (path.parent / model.pop("config")).resolve()
        if not cfg_path.exists():
            raise ConfigError(f"preset {preset!r}: config file {cfg_path} not found")
        model = {**json.loads(cfg_path.read_text()), **model}
    fam = model.pop("model_type", None) or model.pop("family", None)
    if isinstance(model.get("config"), dict):  # recipes: [model] family = ..., [model.config] fields
        model = dict(model.pop("config"))
    # Trainer-only keys that may sit under [model] are not config fields.
    for k in ("tokenizer", "dtype", "name", "path", "init_from"):
        model.pop(k, None)
    return fam, model


def build_config(
    family: str,
    common: dict[str, Any],
    sets: dict[str, Any],
    preset_fields: Optional[dict[str, Any]] = None,
    attn_layers: Optional[list[int]] = None,
    attn_window: Optional[int] = None,
    attn_heads: Optional[int] = None,
):
    """Config for ``family`` with preset < common options < ``--set`` precedence.

    Unknown fields raise :class:`ConfigError` naming the field and the closest valid names.
    """
    cls = config_class(family)
    defaults = cls().to_dict()
    known = set(defaults) | set(getattr(cls, "attribute_map", {}) or {})
    fields: dict[str, Any] = dict(preset_fields or {})
    for name, value in common.items():
        if value is None:
            continue
        for cand in FIELD_ALIASES.get(name, (name,)):
            if cand in known:
                fields[cand] = value
                break
        else:
            raise ConfigError(f"family {family!r} has no field for --{name.replace('_', '-')}")
    for key, value in sets.items():
        if key not in known:
            import difflib

            near = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise ConfigError(f"{family!r} config has no field {key!r}{hint}")
        fields[key] = value
    if preset_fields:
        for key in preset_fields:
            if key not in known:
                raise ConfigError(f"preset field {key!r} is not a {family!r} config field")
    if attn_layers is not None:
        n_layers = fields.get("num_hidden_layers", defaults.get("num_hidden_layers"))
        bad = [i for i in attn_layers if not (0 <= i < n_layers)]
        if bad:
            raise ConfigError(f"--attn-layers {bad} out of range for num_hidden_layers={n_layers}")
        if "attn" not in known:
            raise ConfigError(f"family {family!r} has no hybrid attention (no 'attn' field)")
        heads = attn_heads or fields.get("num_heads", defaults.get("num_heads"))
        fields["attn"] = {
            "layers": sorted(set(attn_layers)), "num_heads": heads, "num_kv_heads": heads,
            "window_size": attn_window, "rope_theta": 10000.0, "qkv_bias": False,
        }
    elif attn_window is not None:
        raise ConfigError("--attn-window needs --attn-layers")
    try:
        config = cls(**fields)
    except Exception as e:  # noqa: BLE001  (config validators raise many types)
        cause = getattr(e, "__cause__", None) or e
        raise ConfigError(f"invalid {family} config: {cause}") from None
    _check_heads(config)
    return config


def _check_heads(config) -> None:
    """Catch the most common invalid combination early, with the field names in the message."""
    hidden = getattr(config, "hidden_size", None)
    for name in ("num_heads", "num_attention_heads"):
        heads = getattr(config, name, None)
        if isinstance(hidden, int) and isinstance(heads, int) and heads > 0 and getattr(config, "head_dim", None) is None:
            expand_k = getattr(config, "expand_k", 1) or 1
            key_dim = int(hidden * expand_k)
            if key_dim % heads:
                raise ConfigError(
                    f"num_heads={heads} must divide the key dimension hidden_size*expand_k={key_dim}"
                )
            break
    kv = getattr(config, "num_kv_heads", None) or getattr(config, "num_key_value_heads", None)
    heads = getattr(config, "num_heads", None) or getattr(config, "num_attention_heads", None)
    if isinstance(kv, int) and isinstance(heads, int) and kv > 0 and heads % kv:
        raise ConfigError(f"num_kv_heads={kv} must divide num_heads={heads}")


def build_model(config, dtype=None, seed: int = 0, meta: bool = False):
    """Instantiate ``AutoModelForCausalLM.from_config`` (on the meta device when ``meta``)."""
    import torch
    from transformers import AutoModelForCausalLM

    import flactl.models  # noqa: F401

    if meta:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    if dtype is not None:
        model = model.to(dtype)
        config.dtype = str(dtype).replace("torch.", "")
    return model
