"""`flactl check-env` end to end on this machine (real facts, real process)."""
import json
import os
import subprocess
import sys

import pytest

FLACTL = [sys.executable, "-m", "flactl"]


def _run(*args, env=None):
    return subprocess.run(FLACTL + list(args), capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_check_env_table():
    r = _run("check-env", "--no-probe")
    assert r.returncode in (0, 1), r.stderr
    for word in ("Python", "torch", "Triton", "transformers", "Triton cache"):
        assert word in r.stdout


def test_check_env_json():
    r = _run("check-env", "--json", "--no-probe")
    doc = json.loads(r.stdout)
    assert set(doc) == {"healthy", "facts", "findings", "probe"}
    assert doc["facts"]["python"].count(".") == 2
    assert doc["probe"]["status"] == "skipped"
    assert r.returncode == (0 if doc["healthy"] else 1)


def test_check_env_cpu_probe_runs_registered_probes():
    import flactl.ops  # noqa: F401
    from flactl.ops.probes import PROBES

    r = _run("check-env", "--json", "--probe-device", "cpu", env={"FLACTL_OPS_BACKEND": "torch"})
    doc = json.loads(r.stdout)
    assert doc["probe"]["status"] == "ran", doc["probe"]
    names = [x["name"] for x in doc["probe"]["results"]]
    assert names == sorted(PROBES)
    for x in doc["probe"]["results"]:
        assert x["ok"], x


def test_unknown_flag_is_usage_error():
    r = _run("check-env", "--definitely-not-a-flag")
    assert r.returncode == 2
    assert "No such option" in r.stderr


def test_help_is_fast_and_has_examples():
    r = _run("check-env", "--help")
    assert r.returncode == 0 and "flactl check-env --json" in r.stdout


@pytest.mark.parametrize("args", [["--help"], ["--version"]])
def test_root(args):
    r = _run(*args)
    assert r.returncode == 0


def test_broken_torch_is_reported_not_crashed(tmp_path):
    """--help must work and check-env must report (exit 1), when `import torch` itself fails."""
    fake = tmp_path / "torch"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise OSError('libtorch_cuda.so: cannot open shared object file')\n")
    env = {"PYTHONPATH": str(tmp_path)}
    r = _run("--help", env=env)
    assert r.returncode == 0, r.stderr
    r = _run("check-env", "--json", env=env)
    doc = json.loads(r.stdout)
    assert r.returncode == 1
    assert "torch-import-error" in [f["id"] for f in doc["findings"]]
    assert "libtorch_cuda" in doc["facts"]["torch"]["import_error"]
