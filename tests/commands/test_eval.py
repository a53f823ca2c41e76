"""`flactl eval`: a real lm-evaluation-harness run, offline, on a tiny flactl model and local tasks
(tests/data/tasks: a multiple-choice task and a rolling-loglikelihood perplexity task), plus the
`--ppl` perplexity mode."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from _cli import make_tiny, run_cli

TASKS = Path(__file__).resolve().parents[1] / "data" / "tasks"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("eval"), "gla")


def _metrics(results: dict) -> dict:
    return {(t, k): v for t, m in results["results"].items() for k, v in m.items()
            if isinstance(v, float) and "stderr" not in k}


def test_lm_eval_offline_local_tasks_batch_invariant(tiny, tmp_path):
    """Real lm-eval run; batch size 1 and 3 (padded batches) give the same scores."""
    runs = {}
    for bs in ("1", "3"):
        out = tmp_path / f"res{bs}.json"
        r = run_cli("eval", tiny, "--tasks", "test_tiny_mc,test_tiny_ppl", "--include-path", TASKS, "--offline",
                    "--limit", "5", "--max-length", "256", "-b", bs, "-o", out, "--json")
        assert r.exit_code == 0, r.output
        runs[bs] = json.loads(out.read_text())
        rows = json.loads(r.stdout[r.stdout.index("["):])
        assert {(x["task"], x["metric"]) for x in rows} >= {("test_tiny_mc", "acc"), ("test_tiny_ppl", "bits_per_byte")}
    res = runs["1"]
    m1, m3 = _metrics(runs["1"]), _metrics(runs["3"])
    for key in [("test_tiny_mc", "acc,none"), ("test_tiny_mc", "acc_norm,none"),
                ("test_tiny_ppl", "word_perplexity,none"), ("test_tiny_ppl", "bits_per_byte,none")]:
        assert key in m1 and math.isfinite(m1[key]), key
    assert 0.0 <= m1[("test_tiny_mc", "acc,none")] <= 1.0
    assert m1[("test_tiny_ppl", "bits_per_byte,none")] > 0
    for key, v in m1.items():
        assert m3[key] == pytest.approx(v, rel=1e-4, abs=1e-6), key
    # provenance: versions, task versions and the settings that produced the numbers
    prov = res["flactl"]
    assert {"flactl", "lm_eval", "torch", "transformers"} <= set(prov["versions"])
    assert prov["settings"]["max_length"] == 256 and prov["settings"]["limit"] == 5
    assert res["versions"]["test_tiny_mc"] == 1.0 and res["n-shot"]["test_tiny_mc"] == 0


def test_ppl_full_context_is_chunk_invariant_and_matches_sliding(tiny):
    data = TASKS / "tiny_ppl.json"

    def ppl(*args):
        r = run_cli("eval", tiny, "--ppl", data, "--json", *args)
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout)

    whole = ppl("--chunk", "100000", "--bucket", "64")
    chunked = ppl("--chunk", "7", "--bucket", "64")  # state carried across 7-token chunks
    assert whole["tokens"] == chunked["tokens"] > 500
    assert chunked["perplexity"] == pytest.approx(whole["perplexity"], rel=1e-5)
    assert len(whole["buckets"]) > 1 and all(math.isfinite(b["perplexity"]) for b in whole["buckets"])
    wide = ppl("--ppl-mode", "sliding", "--window", "100000")
    assert wide["perplexity"] == pytest.approx(whole["perplexity"], rel=1e-5)
    narrow = ppl("--ppl-mode", "sliding", "--window", "16", "--stride", "5")
    assert narrow["tokens"] == whole["tokens"] and math.isfinite(narrow["perplexity"])
    assert narrow["perplexity"] != pytest.approx(whole["perplexity"], rel=1e-6)  # less context → different


def test_task_listing_and_bad_usage(tiny):
    r = run_cli("eval", "--tasks", "list", "--include-path", TASKS, "--offline", "--json")
    assert r.exit_code == 0, r.output
    local = json.loads(r.stdout)["local"]
    assert {"test_tiny_mc", "test_tiny_ppl", "flactl_tiny_mc", "flactl_tiny_ppl"} <= set(local)
    r = run_cli("eval", tiny, "--tasks", "no_such_task", "--offline")
    assert r.exit_code == 2 and "no_such_task" in r.output
    r = run_cli("eval", tiny, "--tasks", "test_tiny_mc", "--ppl", TASKS / "tiny_ppl.json")
    assert r.exit_code == 2 and "--tasks" in r.output
    r = run_cli("eval", tiny, "--tasks", "test_tiny_mc", "-b", "zero")
    assert r.exit_code == 2 and "--batch-size" in r.output
    r = run_cli("eval", tiny, "--ppl", TASKS / "tiny_ppl.json", "--ppl-mode", "sliding", "--window", "8", "--stride", "8")
    assert r.exit_code == 2 and "stride" in r.output


def test_num_gpus_builds_accelerate_launch(tiny):
    r = run_cli("eval", tiny, "--tasks", "flactl_tiny_mc", "--num-gpus", "2", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "accelerate.commands.launch --num_processes 2" in r.stdout and "-m flactl.eval.harness" in r.stdout
    spec = json.loads(Path(r.stdout.split()[-1]).read_text())
    assert spec["tasks"] == ["flactl_tiny_mc"] and spec["device"] == "cuda"
