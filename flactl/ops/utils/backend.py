"""Which implementation an op runs: Triton kernels or the vectorised torch path.

Rule (DESIGN.md): GPU tensors -> Triton. CPU tensors -> the torch path, unless
``TRITON_INTERPRET=1`` (then the real Triton kernels run in Triton's interpreter; the tests do this).
Override with ``FLACTL_OPS_BACKEND=triton|torch`` or the ``force_backend`` context manager
(model tests on the CPU force ``torch`` so whole models stay fast under the interpreter).
Both variables are read on every call, so setting them at runtime (e.g. click's ``CliRunner(env=)``
in the command tests) takes effect at once.
"""
from __future__ import annotations

import contextlib
import os

import torch

_FORCED: list[str] = []
_VALID = ("triton", "torch")


def _env_reader(name: str):
    """A cheap ``os.environ.get(name)``: ``use_triton`` runs on every op call, and at T=1 decoding a
    plain ``os.environ.get`` (encode the key, miss, raise and catch KeyError) is a visible share of
    the host time. ``os.environ`` keeps its contents in the ``_data`` dict keyed by the encoded name
    and updates it on every assignment, so one dict lookup sees the same values; fall back to the
    public path where that layout is missing (another Python implementation)."""
    data = getattr(os.environ, "_data", None)
    encodekey = getattr(os.environ, "encodekey", None)
    decodevalue = getattr(os.environ, "decodevalue", None)
    if not (isinstance(data, dict) and callable(encodekey) and callable(decodevalue)):
        return lambda: os.environ.get(name)
    key = encodekey(name)

    def read():
        raw = data.get(key)
        return None if raw is None else decodevalue(raw)

    return read


_backend_env = _env_reader("FLACTL_OPS_BACKEND")
_interpret_env = _env_reader("TRITON_INTERPRET")


def interpreter_on() -> bool:
    return _interpret_env() == "1"


def use_triton(x: torch.Tensor) -> bool:
    """True if an op called on ``x`` should launch its Triton kernels."""
    forced = _FORCED[-1] if _FORCED else _backend_env()
    if forced:
        if forced not in _VALID:
            raise ValueError(f"FLACTL_OPS_BACKEND must be one of {_VALID}, got {forced!r}")
        if forced == "triton" and x.is_cpu and not interpreter_on():
            raise RuntimeError("Triton backend on CPU tensors needs TRITON_INTERPRET=1")
        return forced == "triton"
    # ``x.is_cpu`` rather than ``x.device.type == "cpu"``: no torch.device object built per call
    return not x.is_cpu or interpreter_on()


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
