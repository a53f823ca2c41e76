"""Which implementation an op runs: Triton kernels or the vectorised torch path.

Rule (DESIGN.md): GPU tensors -> Triton. CPU tensors -> the torch path, unless
``TRITON_INTERPRET=1`` (then the real Triton kernels run in Triton's interpreter; the tests do this).
Override with ``FLACTL_OPS_BACKEND=triton|torch`` or the ``force_backend`` context manager
(model tests on the CPU force ``torch`` so whole models stay fast under the interpreter).
"""
from __future__ import annotations

import contextlib
import os

import torch

_FORCED: list[str] = []
_VALID = ("triton", "torch")


def interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def use_triton(x: torch.Tensor) -> bool:
    """True if an op called on ``x`` should launch its Triton kernels."""
    forced = _FORCED[-1] if _FORCED else os.environ.get("FLACTL_OPS_BACKEND")
    if forced:
        if forced not in _VALID:
            raise ValueError(f"FLACTL_OPS_BACKEND must be one of {_VALID}, got {forced!r}")
        if forced == "triton" and x.device.type == "cpu" and not interpreter_on():
            raise RuntimeError("Triton backend on CPU tensors needs TRITON_INTERPRET=1")
        return forced == "triton"
    if x.device.type == "cpu":
        return interpreter_on()
    return True


@contextlib.contextmanager
def force_backend(name: str):
    """Run ops with ``name`` ('triton' or 'torch') inside the block."""
    if name not in _VALID:
        raise ValueError(f"backend must be one of {_VALID}, got {name!r}")
    _FORCED.append(name)
    try:
        yield
    finally:
        _FORCED.pop()
