"""Collect facts about the environment for ``flactl check-env``.

Every probe of the system is wrapped so a broken torch or Triton becomes a recorded fact (an
``import_error`` string), never a crash. The result is a plain JSON-serialisable dict that
``flactl.utils.env_rules.evaluate`` turns into findings.
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Optional

PACKAGES = ["torch", "triton", "transformers", "accelerate", "lm_eval", "datasets", "safetensors",
            "einops", "typer", "flactl"]
# Distributions that can provide the `triton` module (more than one installed breaks imports).
TRITON_DISTRIBUTIONS = ["triton", "pytorch-triton", "pytorch-triton-rocm", "triton-rocm", "pytorch-triton-xpu",
                        "triton-ascend", "triton-windows", "triton-nightly"]
ENV_PREFIXES = ("FLACTL_", "FLA_", "TRITON_", "CUDA_", "HF_", "PYTORCH_", "TORCH_", "NCCL_", "HIP_", "ROCR_")
DIST_NAMES = {"lm_eval": "lm-eval"}


def _dist_version(name: str) -> Optional[str]:
    try:
        return md.version(DIST_NAMES.get(name, name))
    except md.PackageNotFoundError:
        return None


def _torch_required_triton() -> Optional[str]:
    """The exact triton version pinned in the installed torch's metadata (None if torch pins none)."""
    try:
        reqs = md.requires("torch") or []
    except md.PackageNotFoundError:
        return None
    for r in reqs:
        m = re.match(r"^(pytorch-triton(?:-rocm|-xpu)?|triton)\s*[=]=\s*([\w.+-]+)", r.replace(" ", ""))
        if m and "extra ==" not in r:
            return f"{m.group(1)}=={m.group(2)}"
    return None


def _torch_facts() -> dict:
    facts = {"version": None, "import_error": None, "cuda": None, "hip": None, "xpu_available": False,
             "required_triton": _torch_required_triton(), "gpus": [], "bf16_supported": None,
             "tf32_supported": None}
    try:
        import torch
    except Exception as e:  # broken installs raise all kinds of errors (OSError, ImportError, ...)
        facts["import_error"] = f"{type(e).__name__}: {e}"
        return facts
    facts["version"] = torch.__version__
    facts["cuda"] = getattr(torch.version, "cuda", None)
    facts["hip"] = getattr(torch.version, "hip", None)
    try:
        facts["xpu_available"] = bool(hasattr(torch, "xpu") and torch.xpu.is_available())
    except Exception:
        facts["xpu_available"] = False
    try:
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                gpu = {
                    "index": i,
                    "vendor": "amd" if facts["hip"] else "nvidia",
                    "name": p.name,
                    "capability": list(torch.cuda.get_device_capability(i)),
                    "sm_count": p.multi_processor_count,
                    "memory_gib": round(p.total_memory / 2**30, 1),
                    "shared_mem_per_block_optin": getattr(p, "shared_memory_per_block_optin", None),
                    "gcn_arch": getattr(p, "gcnArchName", None) if facts["hip"] else None,
                }
                facts["gpus"].append(gpu)
            facts["bf16_supported"] = bool(torch.cuda.is_bf16_supported())
            cap = torch.cuda.get_device_capability(0)
            facts["tf32_supported"] = (not facts["hip"]) and cap[0] >= 8
    except Exception as e:
        facts["gpu_error"] = f"{type(e).__name__}: {e}"
    return facts


def _triton_facts() -> dict:
    installed = [d for d in TRITON_DISTRIBUTIONS if _dist_version(d) is not None]
    facts = {"version": None, "import_error": None, "distributions": {d: _dist_version(d) for d in installed},
             "backend": None, "ptxas": None}
    try:
        import triton
        facts["version"] = triton.__version__
    except Exception as e:
        facts["import_error"] = f"{type(e).__name__}: {e}"
        return facts
    try:  # which backend Triton would compile for (raises without a GPU driver)
        from triton.runtime import driver
        facts["backend"] = driver.active.get_current_target().backend
    except Exception:
        facts["backend"] = None
    facts["ptxas"] = os.environ.get("TRITON_PTXAS_PATH") or shutil.which("ptxas")
    return facts


def _nvidia_driver() -> Optional[str]:
    """Driver version from /proc, else nvidia-smi; None when no NVIDIA driver is present."""
    try:
        with open("/proc/driver/nvidia/version") as f:
            m = re.search(r"Kernel Module\s+(?:for \w+\s+)?([\d.]+)", f.read())
            if m:
                return m.group(1)
    except OSError:
        if not shutil.which("nvidia-smi"):
            return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "present"
    except (OSError, subprocess.SubprocessError):
        return "present"


def _hardware_hints() -> dict:
    """GPU vendor hints that do not depend on torch (to catch a torch flavour mismatch)."""
    return {
        "nvidia_driver": _nvidia_driver(),
        "nvidia_smi": shutil.which("nvidia-smi") is not None,
        "amd_kfd": os.path.exists("/dev/kfd"),
    }


def _cache_dir_facts() -> dict:
    d = os.environ.get("TRITON_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".triton", "cache")
    writable = False
    try:
        os.makedirs(d, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=d, prefix=".flactl-probe-"):
            writable = True
    except OSError:
        writable = False
    free_gib = None
    try:
        free_gib = round(shutil.disk_usage(d).free / 2**30, 1)
    except OSError:
        pass
    return {"dir": d, "writable": writable, "free_gib": free_gib}


def collect_facts() -> dict:
    """Everything check-env reports, as a JSON-serialisable dict."""
    packages = {name: _dist_version(name) for name in PACKAGES}
    for name in ("torch", "triton"):
        if packages[name] is None:  # e.g. torch installed from source without metadata
            try:
                packages[name] = importlib.import_module(name).__version__
            except Exception:
                pass
    return {
        "os": {"system": platform.system(), "release": platform.release(), "machine": platform.machine()},
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "packages": packages,
        "torch": _torch_facts(),
        "triton": _triton_facts(),
        "hardware": _hardware_hints(),
        "interpreter": os.environ.get("TRITON_INTERPRET", "0") == "1",
        "triton_cache": _cache_dir_facts(),
        "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)},
    }
