"""`flactl bench` on the CPU (torch path): every mode runs, JSON/plot are written, errors are clear."""
from __future__ import annotations

import json

import pytest

from _cli import make_tiny, run_cli

SMALL = ["-B", "1", "-H", "2", "-D", "16", "--rep-ms", "5"]


@pytest.mark.parametrize("op, mode", [("gla", "fwd"), ("delta_rule", "fwdbwd"), ("gated_delta_rule", "decode"),
                                      ("retention", "fwd"), ("delta_rule", "fwd_train")])
def test_bench_op_modes(op, mode):
    r = run_cli("bench", op, "--mode", mode, "-T", "32,64", *SMALL, "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["op"] == op and res["config"]["mode"] == mode and res["config"]["dtype"] == "float32"
    timed = {(x["T"], x["provider"]): x for x in res["rows"] if x["ms"] is not None}
    assert {(t, p) for t in (32, 64) for p in ("flactl", "torch", "sdpa")} <= set(timed)
    for x in timed.values():
        assert x["ms"] > 0 and x["tflops"] > 0 and x["gbps"] > 0
        assert set(x["speedup"]) == {"flactl", "torch", "sdpa"} - {x["provider"]}
    assert "torch" in res["env"] and "fla" not in {x["provider"] for x in res["rows"]}  # fla: GPU-only default


def test_bench_table_plot_and_output(tmp_path):
    png, js = tmp_path / "b.png", tmp_path / "b.json"
    r = run_cli("bench", "simple_gla", "-T", "16,32", *SMALL, "--plot", png, "-o", js)
    assert r.exit_code == 0, r.output
    assert "vs sdpa" in r.stdout and "crossover flactl vs sdpa" in r.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(js.read_text())["op"] == "simple_gla"


def test_bench_fla_provider_reports_unavailable():
    r = run_cli("bench", "gla", "-T", "16", *SMALL, "-p", "flactl", "-p", "fla", "--json")
    assert r.exit_code == 0, r.output
    fla = [x for x in json.loads(r.stdout)["rows"] if x["provider"] == "fla"]
    assert fla and (fla[0]["ms"] is not None or "fla" in fla[0]["note"])


def test_crossover():
    from flactl.bench.runner import Row, crossover

    rows = [Row(T, "sdpa", ms) for T, ms in ((1024, 1.0), (2048, 4.0), (4096, 16.0))]
    rows += [Row(T, "flactl", ms) for T, ms in ((1024, 2.0), (2048, 3.0), (4096, 6.0))]
    rows += [Row(T, "torch", ms) for T, ms in ((1024, 9.0), (2048, 9.0), (4096, 90.0))]
    c = crossover(rows, (1024, 2048, 4096))
    assert c["flactl"]["length"] == 2048 and 1024 < c["flactl"]["estimate"] < 2048
    assert c["torch"]["length"] is None


def test_bench_model_train_and_generate(tmp_path):
    model = make_tiny(tmp_path, "gla")
    r = run_cli("bench", model, "--mode", "all", "-T", "16", "-B", "2", "--steps", "2", "--gen-tokens", "4", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    train = [x for x in res["rows"] if x["what"] == "train"][0]
    gen = [x for x in res["rows"] if x["what"] == "generate"][0]
    assert train["tokens_per_s"] > 0 and train["loss"] == train["loss"]
    assert gen["decode_tokens_per_s"] > 0 and gen["prefill_tokens_per_s"] > 0 and gen["new_tokens"] == 4


def test_bench_list_and_errors():
    r = run_cli("bench", "--list", "--json")
    assert r.exit_code == 0
    listing = json.loads(r.stdout)
    assert {"gla", "delta_rule", "gated_delta_rule"} <= {o["name"] for o in listing["ops"]}
    assert "model:gla" in listing["models"]
    for args, hint in ((["nope"], "TARGET"), (["gla", "-p", "cuda_magic"], "--provider"),
                       (["gla", "--mode", "sideways"], "--mode"), (["gla", "-T", "a,b"], "--lengths"),
                       (["model:gla", "--set", "nofield=1"], "nofield")):
        r = run_cli("bench", *args)
        assert r.exit_code == 2, (args, r.output)
        assert hint in r.output


def test_bench_layer_fwdbwd():
    r = run_cli("bench", "layer:gla", "--mode", "fwdbwd", "-T", "16,32", "-B", "1", "-H", "2", "--hidden-size", "32",
                "--rep-ms", "5", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["kind"] == "layer" and res["op"] == "layer:GatedLinearAttention"
    timed = {(x["T"], x["provider"]) for x in res["rows"] if x["ms"] is not None and x["ms"] > 0}
    assert timed == {(t, p) for t in (16, 32) for p in ("flactl", "sdpa")}
    r = run_cli("bench", "layer:nope")
    assert r.exit_code == 2 and "layer:gla" in r.output


def test_every_bench_layer_exists():
    """Each `flactl bench layer:<name>` maps to a class flactl.layers exports."""
    import flactl.layers
    from flactl.bench.layers import LAYERS
    missing = {name: cls for name, cls in LAYERS.items() if not hasattr(flactl.layers, cls)}
    assert not missing, missing
