"""Known-bad environment combinations, as a data table, and the pure function that applies them.

``evaluate(facts) -> [Finding]`` depends only on the facts dict from ``env_facts.collect_facts``
(or a faked one in tests). Each rule has an id, a severity (error | warning | info), a predicate
over the facts, a message and a fix to try. Sources: ../shared/reference/user-lessons.md §1, §4.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Callable, List, Optional, Tuple

ERROR, WARNING, INFO = "error", "warning", "info"
TRANSFORMERS_RANGE = ((4, 56), (6, 0))  # tested: >=4.56, <6


def version_tuple(v: Optional[str]) -> Optional[Tuple[int, ...]]:
    """'3.6.0+git1234' -> (3, 6, 0); None/unparseable -> None."""
    if not v:
        return None
    m = re.match(r"^(\d+)(?:\.(\d+))?(?:\.(\d+))?", str(v))
    if not m:
        return None
    return tuple(int(x) if x is not None else 0 for x in m.groups())


@dataclass
class Finding:
    id: str
    severity: str
    message: str
    fix: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Rule:
    id: str
    severity: str
    when: Callable[[dict], bool]
    message: Callable[[dict], str]
    fix: str


# ---- accessors (tolerant of missing keys so faked facts can be minimal) ----------------------

def _py(f): return version_tuple(f.get("python"))
def _torch(f): return f.get("torch") or {}
def _triton(f): return f.get("triton") or {}
def _tv(f): return version_tuple(_triton(f).get("version"))
def _pkg(f, name): return (f.get("packages") or {}).get(name)
def _gpus(f): return _torch(f).get("gpus") or []
def _hw(f): return f.get("hardware") or {}
def _os(f): return f.get("os") or {}


def _cap(f) -> Optional[Tuple[int, int]]:
    g = _gpus(f)
    return tuple(g[0]["capability"]) if g and g[0].get("capability") else None


def _nvidia(f) -> bool:
    g = _gpus(f)
    return bool(g) and g[0].get("vendor") == "nvidia"


def _in(v, lo, hi) -> bool:
    """lo <= v < hi on version tuples (v None -> False)."""
    return v is not None and lo <= v < hi


def _triton_pin_mismatch(f) -> bool:
    req, have = _torch(f).get("required_triton"), _triton(f).get("version")
    if not req or not have:
        return False
    want = req.split("==")[1]
    return version_tuple(want)[:2] != version_tuple(have)[:2]


def _min_smem(f) -> Optional[int]:
    vals = [g.get("shared_mem_per_block_optin") for g in _gpus(f) if g.get("shared_mem_per_block_optin")]
    return min(vals) if vals else None


def _transformers_out_of_range(f) -> bool:
    v = version_tuple(_pkg(f, "transformers"))
    return v is not None and not (TRANSFORMERS_RANGE[0] <= v[:2] < TRANSFORMERS_RANGE[1])


RULES: List[Rule] = [
    Rule("python-too-old", ERROR, lambda f: _py(f) is not None and _py(f) < (3, 10),
         lambda f: f"Python {f.get('python')} is too old: flactl and Triton need Python >= 3.10.",
         "Create an environment with Python 3.11 or 3.12."),
    Rule("python-3.10", INFO, lambda f: _py(f) is not None and (3, 10) <= _py(f) < (3, 11),
         lambda f: "Python 3.10 works but torch.compile paths and newer wheels favour >= 3.11.",
         "Use Python 3.11+ when you can."),
    Rule("windows-triton", ERROR,
         lambda f: _os(f).get("system") == "Windows" and (_triton(f).get("distributions") or {}).get("triton-windows") is None,
         lambda f: "Windows needs the triton-windows package; PyPI's triton has no Windows wheels.",
         "pip install triton-windows (matching your torch), or use WSL2/Linux."),
    Rule("aarch64", INFO, lambda f: _os(f).get("machine") in ("aarch64", "arm64"),
         lambda f: "ARM host: Triton/torch wheel pairs are limited (e.g. Triton 3.3.1 with torch 2.7.1).",
         "Install torch first, then the exact triton version torch requires."),
    Rule("torch-missing", ERROR, lambda f: _torch(f).get("version") is None and not _torch(f).get("import_error"),
         lambda f: "PyTorch is not installed.",
         "pip install torch (CUDA build on a GPU machine; `pip install torch==2.13.0` is the CPU build on CI)."),
    Rule("torch-import-error", ERROR, lambda f: bool(_torch(f).get("import_error")),
         lambda f: f"PyTorch fails to import: {_torch(f).get('import_error')}",
         "Reinstall torch in a clean environment; check for mixed CUDA libraries on LD_LIBRARY_PATH."),
    Rule("torch-cpu-on-nvidia", ERROR,
         lambda f: _torch(f).get("version") is not None and not _torch(f).get("cuda") and not _torch(f).get("hip")
         and bool(_hw(f).get("nvidia_driver")),
         lambda f: f"An NVIDIA driver ({_hw(f).get('nvidia_driver')}) is present but torch {_torch(f).get('version')} "
                   "is a CPU-only build: kernels will not run on the GPU.",
         "Install a CUDA build of torch, e.g. pip install torch --index-url https://download.pytorch.org/whl/cu128"),
    Rule("torch-cuda-on-amd", ERROR,
         lambda f: bool(_torch(f).get("cuda")) and bool(_hw(f).get("amd_kfd")) and not _hw(f).get("nvidia_driver"),
         lambda f: "This machine has an AMD GPU (/dev/kfd) but torch is a CUDA build.",
         "Install torch from the ROCm wheel index (https://download.pytorch.org/whl/rocm6.x), then flactl."),
    Rule("torch-gpu-build-no-gpu", INFO,
         lambda f: bool(_torch(f).get("cuda") or _torch(f).get("hip")) and not _gpus(f) and _torch(f).get("version"),
         lambda f: "torch is a GPU build but no GPU is visible: ops use the CPU torch path (slow).",
         "Check CUDA_VISIBLE_DEVICES / the driver if you expected a GPU."),
    Rule("triton-missing", ERROR, lambda f: bool(_gpus(f)) and _triton(f).get("version") is None,
         lambda f: "A GPU is present but Triton is not importable"
                   + (f" ({_triton(f).get('import_error')})" if _triton(f).get("import_error") else "")
                   + ": no kernel can run.",
         "pip install the triton version your torch requires (see `pip show torch`)."),
    Rule("triton-missing-cpu", WARNING,
         lambda f: not _gpus(f) and _triton(f).get("version") is None and _os(f).get("system") == "Linux",
         lambda f: "Triton is not importable: the CPU torch paths work, TRITON_INTERPRET kernel tests do not.",
         "pip install triton"),
    Rule("triton-multiple-distributions", ERROR, lambda f: len(_triton(f).get("distributions") or {}) > 1,
         lambda f: f"Several Triton distributions are installed ({', '.join(_triton(f)['distributions'])}); "
                   "they overwrite each other's files.",
         "pip uninstall all of them, then install only the one your torch requires."),
    Rule("triton-too-old", ERROR, lambda f: _tv(f) is not None and _tv(f) < (3, 0),
         lambda f: f"Triton {_triton(f).get('version')} is too old (flactl needs >= 3.0; 3.2+ recommended).",
         "pip install -U 'triton>=3.2' matching your torch."),
    Rule("triton-old", WARNING, lambda f: _tv(f) is not None and (3, 0) <= _tv(f) < (3, 2),
         lambda f: f"Triton {_triton(f).get('version')} is older than the versions flactl is tested on (3.6, 3.9).",
         "Upgrade torch and Triton together."),
    Rule("triton-torch-mismatch", WARNING, _triton_pin_mismatch,
         lambda f: f"torch {_torch(f).get('version')} was built against {_torch(f).get('required_triton')} "
                   f"but Triton {_triton(f).get('version')} is installed.",
         "pip install the triton version torch declares (or reinstall torch)."),
    Rule("no-triton-for-gpu", ERROR, lambda f: _cap(f) is not None and _nvidia(f) and _cap(f) < (7, 0),
         lambda f: f"GPU compute capability {_cap(f)} is below 7.0: Triton does not support it.",
         "Use a Volta-or-newer GPU."),
    Rule("turing-new-triton", WARNING, lambda f: _cap(f) == (7, 5) and _tv(f) is not None and _tv(f) >= (3, 3),
         lambda f: f"Turing GPU (sm75) with Triton {_triton(f).get('version')}: Triton dropped tested support after 3.2.",
         "Use Triton <= 3.2 (with its matching torch) on Turing."),
    Rule("pre-ampere-bf16", WARNING, lambda f: _cap(f) is not None and _nvidia(f) and _cap(f) < (8, 0),
         lambda f: f"GPU capability {_cap(f)} has no bf16 (or tf32) tensor cores: bf16 models run slowly or fail.",
         "Use --dtype float16 or float32 on this GPU."),
    Rule("hopper-triton-3.2", ERROR, lambda f: _cap(f) is not None and _cap(f)[0] == 9 and _tv(f) is not None
         and _tv(f)[:2] == (3, 2),
         lambda f: "Hopper GPU with Triton 3.2: known LinearLayout/MMA assertion failures in chunk kernels.",
         "Upgrade to torch >= 2.7 with Triton >= 3.3."),
    Rule("hopper-gated-bwd-miscompile", WARNING,
         lambda f: _cap(f) is not None and _cap(f)[0] == 9 and _in(_tv(f), (3, 4, 0), (3, 7, 1)),
         lambda f: f"Hopper GPU with Triton {_triton(f).get('version')}: Triton 3.4.0-3.7.0 miscompiles fla's gated "
                   "chunk backward (fla#640; fla refuses to train GLA-style/GDN models here). flactl's kernels use a "
                   "formulation verified on this combination; the numeric probe below checks them on this GPU.",
         "Trust the probe result; for fla itself upgrade to Triton >= 3.7.1."),
    Rule("blackwell-old-triton", ERROR, lambda f: _cap(f) is not None and _cap(f)[0] in (10, 12) and _tv(f) is not None
         and _tv(f) < (3, 3),
         lambda f: f"Blackwell GPU (sm{_cap(f)[0]}{_cap(f)[1]}) needs Triton >= 3.3; found {_triton(f).get('version')}.",
         "Install torch >= 2.7 with its Triton (3.3+)."),
    Rule("small-shared-memory", WARNING, lambda f: _min_smem(f) is not None and _min_smem(f) < 64 * 1024,
         lambda f: f"GPU has {_min_smem(f) // 1024} KiB shared memory per block: large tiles will not fit.",
         "flactl picks smaller tiles automatically; report failures with `flactl check-env --json`."),
    Rule("interpreter-with-gpu", WARNING, lambda f: bool(f.get("interpreter")) and bool(_gpus(f)),
         lambda f: "TRITON_INTERPRET=1 is set on a GPU machine: kernels run on the CPU, extremely slowly.",
         "unset TRITON_INTERPRET"),
    Rule("interpreter-on", INFO, lambda f: bool(f.get("interpreter")) and not _gpus(f),
         lambda f: "TRITON_INTERPRET=1: kernels run in Triton's interpreter (float32 only; bf16 dots are wrong there).",
         "Use float32 inputs under the interpreter."),
    Rule("triton-cache-unwritable", ERROR, lambda f: (f.get("triton_cache") or {}).get("writable") is False,
         lambda f: f"Triton cache dir {(f.get('triton_cache') or {}).get('dir')} is not writable: every kernel "
                   "recompiles and autotuning is repeated.",
         "export TRITON_CACHE_DIR=/a/writable/dir"),
    Rule("low-disk-for-cache", WARNING, lambda f: ((f.get("triton_cache") or {}).get("free_gib") or 1e9) < 1.0,
         lambda f: "Less than 1 GiB free where Triton caches kernels.",
         "Free space or point TRITON_CACHE_DIR elsewhere."),
    Rule("transformers-missing", ERROR, lambda f: _pkg(f, "transformers") is None,
         lambda f: "transformers is not installed: models, generate and eval need it.",
         "pip install 'transformers>=4.56,<6'"),
    Rule("transformers-range", WARNING, _transformers_out_of_range,
         lambda f: f"transformers {_pkg(f, 'transformers')} is outside the tested range >=4.56,<6 (cache API changes).",
         "pip install 'transformers>=4.56,<6'"),
    Rule("accelerate-missing", WARNING, lambda f: _pkg(f, "accelerate") is None,
         lambda f: "accelerate is not installed: `flactl train` and multi-GPU eval need it.",
         "pip install accelerate"),
    Rule("lm-eval-missing", WARNING, lambda f: _pkg(f, "lm_eval") is None,
         lambda f: "lm-eval is not installed: `flactl eval` needs it.",
         "pip install lm-eval"),
    Rule("datasets-missing", WARNING, lambda f: _pkg(f, "datasets") is None,
         lambda f: "datasets is not installed: `flactl train` needs it.",
         "pip install datasets"),
]


def evaluate(facts: dict) -> List[Finding]:
    """Apply every rule to ``facts``; returns findings, errors first."""
    out = []
    for r in RULES:
        try:
            hit = r.when(facts)
        except Exception as e:  # a rule that cannot evaluate is itself worth reporting
            out.append(Finding(r.id, INFO, f"rule could not be evaluated: {type(e).__name__}: {e}", ""))
            continue
        if hit:
            out.append(Finding(r.id, r.severity, r.message(facts), r.fix))
    order = {ERROR: 0, WARNING: 1, INFO: 2}
    return sorted(out, key=lambda x: order[x.severity])


def probe_findings(results: list) -> List[Finding]:
    """Findings for failed numeric probes (see flactl.ops.probes.run_probes)."""
    out = []
    for r in results:
        if r["ok"]:
            continue
        if r.get("error"):
            msg = f"probe {r['name']} crashed: {r['error']}"
        else:
            worst = max(r["errors"], key=r["errors"].get)
            msg = (f"probe {r['name']}: {worst} relative error {r['errors'][worst]:.2e} exceeds {r['tol']:.0e} "
                   "(wrong results from a kernel on this GPU/Triton)")
        out.append(Finding(f"probe-{r['name']}", ERROR, msg,
                           "Report with `flactl check-env --json`; try another Triton version."))
    return out
