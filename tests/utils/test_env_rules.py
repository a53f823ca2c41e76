"""check-env rules are a pure function of the facts: every rule is triggered by faked facts,
and a healthy baseline triggers none of them."""
import copy

import pytest

from flactl.utils.env_rules import ERROR, RULES, evaluate, probe_findings, version_tuple

H100 = {"index": 0, "vendor": "nvidia", "name": "NVIDIA H100 80GB HBM3", "capability": [9, 0], "sm_count": 132,
        "memory_gib": 79.2, "shared_mem_per_block_optin": 232448}

HEALTHY = {
    "os": {"system": "Linux", "release": "6.1", "machine": "x86_64"},
    "python": "3.12.3",
    "packages": {"torch": "2.11.0", "triton": "3.7.1", "transformers": "5.17.0", "accelerate": "1.15.0",
                 "lm_eval": "0.4.13", "datasets": "4.0.0", "flactl": "0.1.0"},
    "torch": {"version": "2.11.0+cu130", "import_error": None, "cuda": "13.0", "hip": None,
              "required_triton": "triton==3.7.1", "gpus": [dict(H100, capability=[8, 0], name="NVIDIA A100")],
              "bf16_supported": True, "tf32_supported": True},
    "triton": {"version": "3.7.1", "import_error": None, "distributions": {"triton": "3.7.1"}, "backend": "cuda"},
    "hardware": {"nvidia_driver": "580.1", "nvidia_smi": True, "amd_kfd": False},
    "interpreter": False,
    "triton_cache": {"dir": "/tmp/x", "writable": True, "free_gib": 100.0},
    "env": {},
}


def _with(**changes):
    f = copy.deepcopy(HEALTHY)
    for path, value in changes.items():
        node = f
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return f


def _gpu(**kw):
    return [dict(H100, **kw)]


CASES = {
    "python-too-old": _with(python="3.9.18"),
    "python-3.10": _with(python="3.10.12"),
    "windows-triton": _with(os={"system": "Windows", "release": "11", "machine": "AMD64"}),
    "aarch64": _with(os={"system": "Linux", "release": "6", "machine": "aarch64"}),
    "torch-missing": _with(torch__version=None, torch__gpus=[]),
    "torch-import-error": _with(torch__version=None, torch__import_error="OSError: libcudart.so.13 missing"),
    "torch-cpu-on-nvidia": _with(torch__cuda=None, torch__gpus=[]),
    "torch-cuda-on-amd": _with(hardware={"nvidia_driver": None, "nvidia_smi": False, "amd_kfd": True},
                               torch__gpus=[]),
    "torch-gpu-build-no-gpu": _with(torch__gpus=[]),
    "triton-missing": _with(triton__version=None, triton__import_error="ImportError: no module"),
    "triton-missing-cpu": _with(triton__version=None, torch__gpus=[]),
    "triton-multiple-distributions": _with(triton__distributions={"triton": "3.6.0", "pytorch-triton-rocm": "3.6.0"}),
    "triton-too-old": _with(triton__version="2.3.1"),
    "triton-old": _with(triton__version="3.1.0"),
    "triton-torch-mismatch": _with(triton__version="3.5.1"),
    "no-triton-for-gpu": _with(torch__gpus=_gpu(capability=[6, 1])),
    "turing-new-triton": _with(torch__gpus=_gpu(capability=[7, 5])),
    "pre-ampere-bf16": _with(torch__gpus=_gpu(capability=[7, 0])),
    "hopper-triton-3.2": _with(torch__gpus=_gpu(), triton__version="3.2.0", torch__required_triton="triton==3.2.0"),
    "hopper-gated-bwd-miscompile": _with(torch__gpus=_gpu(), triton__version="3.6.0",
                                         torch__required_triton="triton==3.6.0"),
    "blackwell-old-triton": _with(torch__gpus=_gpu(capability=[10, 0]), triton__version="3.2.0",
                                  torch__required_triton="triton==3.2.0"),
    "small-shared-memory": _with(torch__gpus=_gpu(shared_mem_per_block_optin=48 * 1024)),
    "interpreter-with-gpu": _with(interpreter=True),
    "interpreter-on": _with(interpreter=True, torch__gpus=[]),
    "triton-cache-unwritable": _with(triton_cache={"dir": "/ro", "writable": False, "free_gib": 10.0}),
    "low-disk-for-cache": _with(triton_cache={"dir": "/x", "writable": True, "free_gib": 0.2}),
    "transformers-missing": _with(packages__transformers=None),
    "transformers-range": _with(packages__transformers="4.40.0"),
    "accelerate-missing": _with(packages__accelerate=None),
    "lm-eval-missing": _with(packages__lm_eval=None),
    "datasets-missing": _with(packages__datasets=None),
}


def test_every_rule_has_a_case():
    assert set(CASES) == {r.id for r in RULES}


def test_healthy_baseline_has_no_findings():
    assert evaluate(HEALTHY) == []


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_fires_on_its_case(rule_id):
    findings = evaluate(CASES[rule_id])
    ids = [f.id for f in findings]
    assert rule_id in ids, f"{rule_id} did not fire; got {ids}"
    f = next(f for f in findings if f.id == rule_id)
    assert f.message and f.fix and f.severity in ("error", "warning", "info")


def test_hopper_triton_boundaries():
    fires = lambda v: "hopper-gated-bwd-miscompile" in [  # noqa: E731
        f.id for f in evaluate(_with(torch__gpus=_gpu(), triton__version=v, torch__required_triton=f"triton=={v}"))]
    assert not fires("3.3.1")
    assert fires("3.4.0") and fires("3.6.0") and fires("3.7.0")
    assert not fires("3.7.1") and not fires("3.9.0")


def test_errors_sorted_first():
    f = evaluate(_with(python="3.9.0", interpreter=True))
    assert f[0].severity == ERROR


def test_version_tuple():
    assert version_tuple("3.6.0+git9a1b") == (3, 6, 0)
    assert version_tuple("2.11.0+cu130") == (2, 11, 0)
    assert version_tuple("5.17") == (5, 17, 0)
    assert version_tuple(None) is None and version_tuple("abc") is None


def test_probe_findings():
    results = [
        {"name": "chunk_gla", "ok": True, "errors": {"out": 1e-3}, "tol": 2e-2, "error": None},
        {"name": "chunk_x", "ok": False, "errors": {"out": 1e-3, "dg": 0.5}, "tol": 2e-2, "error": None},
        {"name": "chunk_y", "ok": False, "errors": {}, "tol": 2e-2, "error": "RuntimeError: boom"},
    ]
    f = probe_findings(results)
    assert [x.id for x in f] == ["probe-chunk_x", "probe-chunk_y"]
    assert "dg" in f[0].message and "boom" in f[1].message and all(x.severity == ERROR for x in f)
