"""`flactl init`: model directories that load, config options that take effect, errors that write nothing."""
from __future__ import annotations

import json
import os

import pytest

from _cli import TINY, make_tiny, run_cli


def test_init_writes_loadable_model(tmp_path):
    out = tmp_path / "m"
    r = run_cli("init", "gla", *TINY, "--set", "expand_k=1.0", "--json", "-o", out)
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert {"config.json", "generation_config.json", "tokenizer.json"} <= set(os.listdir(out))
    assert any(f.endswith(".safetensors") for f in os.listdir(out))

    import flactl.models  # noqa: F401
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.model_type == "gla"
    assert model.config.hidden_size == 32 and model.config.expand_k == 1.0
    assert summary["params"] == sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    tok = AutoTokenizer.from_pretrained(out)
    assert len(tok) <= model.config.vocab_size
    ids = tok("hello", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits
    assert torch.isfinite(logits).all() and logits.std() > 0  # random init, not zeros


def test_init_seed_is_reproducible(tmp_path):
    from safetensors.torch import load_file

    a, b = tmp_path / "a", tmp_path / "b"
    for d, seed in ((a, 1), (b, 1)):
        assert run_cli("init", "retnet", *TINY, "--seed", seed, "-o", d).exit_code == 0
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)


def test_init_dtype_and_hybrid_attention(tmp_path):
    out = tmp_path / "h"
    r = run_cli("init", "gla", *TINY, "--num-hidden-layers", "3", "--attn-layers", "1", "--attn-window", "16",
                "--dtype", "bfloat16", "-o", out)
    assert r.exit_code == 0, r.output
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["attn"]["layers"] == [1] and cfg["attn"]["window_size"] == 16
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert all(f.get_tensor(k).dtype.is_floating_point and str(f.get_tensor(k).dtype) == "torch.bfloat16" for k in f.keys())


@pytest.mark.parametrize("args, hint", [
    (["nosuchfamily"], "family"),
    (["gla", *TINY, "--set", "hiden_size=64"], "hidden_size"),             # typo → suggestion
    (["gla", "--hidden-size", "30", "--num-heads", "4"], "num_heads"),      # heads do not divide
    (["gla", *TINY, "--vocab-size", "100"], "vocab"),                       # smaller than the tokenizer
    (["gla", *TINY, "--attn-layers", "5"], "attn"),                         # layer out of range
    (["gla", *TINY, "--dtype", "float8"], "dtype"),
    (["gla", *TINY, "--set", "novalue"], "key=value"),
    (["hgrn2", *TINY, "--set", "expand_ratio=8"], "expand_ratio"),  # num_heads * expand_ratio != hidden_size
])
def test_init_bad_input_exits_2_and_writes_nothing(tmp_path, args, hint):
    out = tmp_path / "never"
    r = run_cli("init", *args, "-o", out)
    assert r.exit_code == 2, r.output
    assert hint in r.output
    assert not out.exists()


def test_init_refuses_non_empty_dir_without_force(tmp_path):
    out = make_tiny(tmp_path)
    r = run_cli("init", "gla", *TINY, "-o", out)
    assert r.exit_code == 2 and "--force" in r.output
    assert run_cli("init", "gla", *TINY, "--force", "-o", out).exit_code == 0


def test_init_list_and_preset(tmp_path):
    r = run_cli("init", "--list", "--json")
    assert r.exit_code == 0, r.output
    listing = json.loads(r.stdout)
    fams = {f["family"]: f["default_params"] for f in listing["families"]}
    assert {"gla", "retnet", "delta_net", "gated_deltanet"} <= set(fams)
    assert all(isinstance(n, int) and n > 1e8 for n in fams.values())  # fla-sized defaults
    assert any(p["preset"] == "tiny-cpu" for p in listing["presets"])
    out = tmp_path / "p"
    r = run_cli("init", "--preset", "tiny-cpu", "--hidden-size", "32", "-o", out)  # options override the preset
    assert r.exit_code == 0, r.output
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["hidden_size"] == 32 and cfg["num_hidden_layers"] == 2
