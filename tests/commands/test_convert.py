"""`flactl convert`: round trips on tiny synthetic checkpoints, strict key checks, shard checks."""
from __future__ import annotations

import json

import pytest
import torch

from _cli import make_tiny, run_cli

LLAMA = ["--hidden-size", "32", "--num-hidden-layers", "2", "--num-heads", "4", "--set", "num_key_value_heads=2",
         "--vocab-size", "260", "--intermediate-size", "64"]


def _weights(d):
    from safetensors.torch import load_file

    sd = {}
    for f in sorted(d.glob("*.safetensors")):
        sd.update(load_file(str(f)))
    return sd


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "llama"
    r = run_cli("init", "llama", *LLAMA, "-o", out)
    assert r.exit_code == 0, r.output
    return out


def test_hf_to_flactl_transformer_is_exact(llama, tmp_path):
    out = tmp_path / "t"
    r = run_cli("convert", "hf-to-flactl", llama, "--family", "transformer", "-o", out, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["new"] == [] and rep["unexpected"] == [] and len(rep["copied"]) == len(_weights(llama))
    assert rep["parity"]["max_abs_diff"] < 1e-4 and rep["parity"]["argmax_agree"] == 1.0
    src, dst = _weights(llama), _weights(out)
    assert torch.equal(src["model.embed_tokens.weight"], dst["model.embeddings.weight"])
    assert torch.equal(src["model.layers.1.self_attn.k_proj.weight"], dst["model.layers.1.attn.k_proj.weight"])


def test_hf_to_flactl_linear_family_reports_new_keys(llama, tmp_path):
    r = run_cli("convert", "hf-to-flactl", llama, "--family", "gla", "-o", tmp_path / "g", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert "model.layers.0.attn.gk_proj.0.weight" in rep["new"]
    assert any("q_proj" in m for m in rep["shape_mismatch"])  # expand_k=0.5 halves q/k
    assert "model.layers.0.mlp.down_proj.weight" in rep["copied"]
    r = run_cli("convert", "hf-to-flactl", llama, "--family", "gla", "--set", "expand_k=1.0", "--set", "num_kv_heads=2",
                "-o", tmp_path / "g1", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert "model.layers.0.attn.q_proj.weight" in rep["copied"] and "model.layers.0.attn.k_proj.weight" in rep["copied"]


def test_hf_to_flactl_strict_about_unknown_keys(llama, tmp_path):
    from safetensors.torch import save_file

    src = tmp_path / "src"
    src.mkdir()
    for f in llama.iterdir():
        if not f.name.endswith(".safetensors"):
            (src / f.name).write_bytes(f.read_bytes())
    sd = _weights(llama)
    sd["model.layers.0.self_attn.mystery.weight"] = torch.randn(3, 3)
    save_file(sd, str(src / "model.safetensors"), metadata={"format": "pt"})
    r = run_cli("convert", "hf-to-flactl", src, "--family", "transformer", "-o", tmp_path / "x")
    assert r.exit_code == 1 and "mystery" in r.output and "--allow-partial" in r.output
    assert not (tmp_path / "x").exists()
    r = run_cli("convert", "hf-to-flactl", src, "--family", "transformer", "-o", tmp_path / "y", "--allow-partial", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["unexpected"] == ["model.layers.0.self_attn.mystery.weight"]


def test_checkpoint_dcp_round_trip_and_missing_shard(tmp_path):
    import torch.distributed.checkpoint as dcp

    model_dir = make_tiny(tmp_path, "gla")
    ref = _weights(tmp_path / "tiny-gla")
    ckpt = tmp_path / "run" / "checkpoints" / "step-00000001" / "pytorch_model_fsdp_0"
    # wrapper prefixes and a {'model': ...} nesting, as FSDP/compile/accelerate produce them
    dcp.save({"model": {f"_orig_mod.{k}": v.clone() for k, v in ref.items()}}, storage_writer=dcp.FileSystemWriter(str(ckpt)))
    out = tmp_path / "hf"
    r = run_cli("convert", "checkpoint", ckpt.parent, "--config", model_dir, "-o", out, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["missing"] == [] and rep["unexpected"] == [] and rep["parity"]["max_abs_diff"] == 0.0
    got = _weights(out)
    assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)
    shard = next(ckpt.glob("*.distcp"))
    shard.unlink()
    r = run_cli("convert", "checkpoint", ckpt.parent, "--config", model_dir, "-o", tmp_path / "never")
    assert r.exit_code == 1 and shard.name in r.output and "missing" in r.output
    assert not (tmp_path / "never").exists()


def test_checkpoint_accelerate_layout_finds_config_and_is_strict(tmp_path):
    from safetensors.torch import save_file

    run = tmp_path / "run"
    make_tiny(run, "retnet")
    (run / "tiny-retnet").rename(run / "final")  # a run dir: final/ holds config + tokenizer
    ref = _weights(run / "final")
    step = run / "checkpoints" / "step-00000002"
    step.mkdir(parents=True)
    save_file({f"module.{k}": v for k, v in ref.items()}, str(step / "model.safetensors"))
    r = run_cli("convert", "checkpoint", step, "-o", tmp_path / "out", "--json")
    assert r.exit_code == 0, r.output
    got = _weights(tmp_path / "out")
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    dropped = sorted(ref)[0]
    save_file({k: v for k, v in ref.items() if k != dropped}, str(step / "model.safetensors"))
    r = run_cli("convert", "checkpoint", step, "-o", tmp_path / "out2")
    assert r.exit_code == 1 and dropped in r.output
    r = run_cli("convert", "checkpoint", step, "-o", tmp_path / "out3", "--allow-partial", "--no-parity", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["missing"] == [dropped]


def test_safetensors_dtype_and_reshard_round_trip(tmp_path):
    src = tmp_path / "tiny-gla"
    make_tiny(tmp_path, "gla")
    bf = tmp_path / "bf16"
    r = run_cli("convert", "safetensors", src, "-o", bf, "--dtype", "bfloat16", "--max-shard-size", "20KB", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["parity"]["argmax_agree"] > 0.9
    shards = sorted(bf.glob("*.safetensors"))
    assert len(shards) > 1 and (bf / "model.safetensors.index.json").is_file()
    ref, got = _weights(src), _weights(bf)
    assert got.keys() == ref.keys()
    assert all(got[k].dtype == torch.bfloat16 and torch.equal(got[k], ref[k].to(torch.bfloat16)) for k in ref)
    back = tmp_path / "fp32"
    assert run_cli("convert", "safetensors", bf, "-o", back, "--dtype", "float32", "--no-parity").exit_code == 0
    assert len(list(back.glob("*.safetensors"))) == 1
    assert all(torch.equal(v, got[k].float()) for k, v in _weights(back).items())
    shards[0].unlink()
    r = run_cli("convert", "safetensors", bf, "-o", tmp_path / "never", "--dtype", "float32")
    assert r.exit_code == 1 and shards[0].name in r.output


def test_convert_bad_usage(llama, tmp_path):
    gla = make_tiny(tmp_path, "gla")
    for args, hint in (
        (["hf-to-flactl", llama, "-o", tmp_path / "a"], "--family"),
        (["hf-to-flactl", gla, "--family", "gla", "-o", tmp_path / "b"], "Llama"),
        (["hf-to-flactl", llama, "--family", "gla", "-o", llama], "--output"),
        (["sideways", llama, "-o", tmp_path / "c"], "sideways"),
        (["safetensors", tmp_path / "nothing", "-o", tmp_path / "d"], "SOURCE"),
        (["checkpoint", tmp_path, "-o", tmp_path / "e"], "--config"),
    ):
        r = run_cli("convert", *args)
        assert r.exit_code == 2, (args, r.output)
        assert hint in r.output, (args, r.output)
