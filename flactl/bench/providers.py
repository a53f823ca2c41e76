"""Benchmark providers: turn an op spec + inputs into a zero-argument callable to time.

* ``flactl``: flactl's public op (Triton on a GPU; on a CPU the vectorised torch path, or the Triton
  interpreter when ``TRITON_INTERPRET=1``).
* ``torch``: the same public op forced onto its torch path (the reference implementation).
* ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` (causal) on the same q/k/v: the
  softmax-attention baseline that gives the crossover length.
* ``fla``: flash-linear-attention, only when it is importable. This module is the ONLY place flactl
  imports fla, and only lazily inside :func:`build` (fla is an optional peer, never a dependency).

Each builder returns ``(fn, note)``; ``fn is None`` means "not available" with ``note`` saying why.
"""
from __future__ import annotations

import importlib
from typing import Callable, Optional

from .registry import OpSpec

PROVIDERS = ("flactl", "torch", "sdpa", "fla")


def _op_callable(spec: OpSpec, provider: str, decode: bool) -> tuple[Optional[Callable], str]:
    name = spec.decode_fn if decode else spec.chunk_fn
    if name is None:
        return None, f"{spec.name} has no recurrent (decode) kernel"
    if provider == "fla":
        if spec.fla_module is None:
            return None, "no fla counterpart"
        try:
            mod = importlib.import_module(spec.fla_module)  # lazy: fla is an optional peer
        except Exception as e:  # noqa: BLE001  (ImportError, or fla's own version checks)
            return None, f"fla not importable ({type(e).__name__}: {str(e)[:80]})"
    else:
        try:
            mod = importlib.import_module(f"flactl.ops.{spec.module}")
        except Exception as e:  # noqa: BLE001
            return None, f"flactl.ops.{spec.module} not importable ({type(e).__name__}: {e})"
    fn = getattr(mod, name, None)
    if fn is None:
        return None, f"{mod.__name__}.{name} not found"
    return fn, ""


def build(spec: OpSpec, provider: str, mode: str, inputs: dict, state=None) -> tuple[Optional[Callable], str]:
    """A callable running ``provider``'s version of ``spec`` in ``mode`` on ``inputs``."""
    import torch

    if provider == "sdpa":
        return _sdpa(inputs, mode, state)
    decode = mode == "decode"
    fn, note = _op_callable(spec, provider, decode)
    if fn is None:
        return None, note
    kwargs = dict(inputs)
    if decode:
        for src, dst in spec.decode_gate_names.items():
            if src in kwargs:
                kwargs[dst] = kwargs.pop(src)
        kwargs.update(initial_state=state, output_final_state=True)
    if provider == "torch":
        from flactl.ops.utils import force_backend

        def call():
            with force_backend("torch"):
                return fn(**kwargs)
    else:
        def call():
            return fn(**kwargs)

    if mode == "fwdbwd":
        leaves = [t for t in inputs.values() if t.requires_grad]
        do = torch.randn_like(inputs["v"])

        def run():
            for t in leaves:
                t.grad = None
            o = call()
            o = o[0] if isinstance(o, tuple) else o
            o.backward(do)
        return run, ""
    if mode == "fwd":
        def run_fwd():
            with torch.no_grad():
                return call()
        return run_fwd, ""
    if mode == "fwd_train":  # grad enabled: the op keeps what its backward would need
        return call, ""

    def run_dec():
        with torch.no_grad():
            return call()
    return run_dec, ""


def _sdpa(inputs: dict, mode: str, kv_cache) -> tuple[Optional[Callable], str]:
    import torch
    import torch.nn.functional as F

    q, k, v = (inputs[n] for n in ("q", "k", "v"))
    if mode == "decode":
        kc, vc = kv_cache  # [B, H, ctx, D]
        qt = q.transpose(1, 2)

        def run_dec():
            with torch.no_grad():
                return F.scaled_dot_product_attention(qt, kc, vc)
        return run_dec, ""
    # [B,T,H,D] -> [B,H,T,D] views; the transposes are part of what a layer would pay.
    if mode in ("fwd", "fwd_train"):
        def run_fwd():
            with torch.set_grad_enabled(mode == "fwd_train"):
                return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return run_fwd, ""
    do = torch.randn_like(v).transpose(1, 2)

    def run():
        for t in (q, k, v):
            t.grad = None
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        o.backward(do)
    return run, ""


def fla_version() -> Optional[str]:
    try:
        from importlib.metadata import version

        return version("fla-core")
    except Exception:  # noqa: BLE001
        try:
            from importlib.metadata import version

            return version("flash-linear-attention")
        except Exception:  # noqa: BLE001
            return None
