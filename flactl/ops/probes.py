"""Numeric probes: run each op at a tiny size, forward and backward, against its float32 reference.

A version table cannot catch a miscompiled kernel; these can. ``flactl check-env`` runs every
registered probe on the GPU. Families register in their ``__init__.py``::

    register_probe("chunk_gla", fn=chunk_gla, ref=naive_gla_ref, make_inputs=_inputs,
                   grad_inputs=("q", "k", "v", "g"))

``make_inputs(device, dtype)`` returns keyword arguments (fresh random tensors, never zeros);
``fn`` and ``ref`` take the same keywords and return a tensor or a tuple whose first entries are
tensors (output, final state, ...). The reference is called on float32 copies of the inputs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Sequence

import torch

PROBES: Dict[str, "Probe"] = {}


@dataclass
class Probe:
    name: str
    fn: Callable
    ref: Callable
    make_inputs: Callable
    grad_inputs: Sequence[str] = field(default_factory=tuple)
    tol: float = 2e-2  # relative RMS error allowed in bf16


def register_probe(name, fn, ref, make_inputs, grad_inputs=(), tol=2e-2) -> None:
    PROBES[name] = Probe(name, fn, ref, make_inputs, tuple(grad_inputs), tol)


def _tensors(out):
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for t in out if isinstance(t, torch.Tensor)]


def _rel(ref: torch.Tensor, got: torch.Tensor) -> float:
    ref, got = ref.double(), got.double()
    if not torch.isfinite(got).all():
        return float("inf")
    den = ref.pow(2).mean().sqrt().item()
    num = (ref - got).pow(2).mean().sqrt().item()
    return num / den if den > 0 else num


def run_probe(p: Probe, device: str, dtype: torch.dtype) -> dict:
    """Returns {name, ok, errors: {output/grad name: rel err}, max_err, seconds, error}."""
    t0 = time.perf_counter()
    try:
        inputs = p.make_inputs(device, dtype)
        got_in = {k: (v.detach().clone().requires_grad_(k in p.grad_inputs) if isinstance(v, torch.Tensor) else v)
                  for k, v in inputs.items()}
        ref_in = {k: (v.detach().float().clone().requires_grad_(k in p.grad_inputs)
                      if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
                  for k, v in inputs.items()}
        got_out, ref_out = _tensors(p.fn(**got_in)), _tensors(p.ref(**ref_in))
        errors = {}
        for i, (r, g) in enumerate(zip(ref_out, got_out)):
            errors["out" if i == 0 else f"out{i}"] = _rel(r, g)
        if p.grad_inputs:
            cot = [torch.randn_like(r, dtype=torch.float32) for r in ref_out]
            torch.autograd.backward([g.float() for g in got_out], cot)
            torch.autograd.backward(ref_out, cot)
            for k in p.grad_inputs:
                errors[f"d{k}"] = _rel(ref_in[k].grad, got_in[k].grad)
        if device != "cpu":
            torch.cuda.synchronize()
        max_err = max(errors.values()) if errors else 0.0
        return {"name": p.name, "ok": max_err <= p.tol, "errors": errors, "max_err": max_err,
                "tol": p.tol, "seconds": time.perf_counter() - t0, "error": None}
    except Exception as e:  # a probe must report, never crash check-env
        return {"name": p.name, "ok": False, "errors": {}, "max_err": None, "tol": p.tol,
                "seconds": time.perf_counter() - t0, "error": f"{type(e).__name__}: {e}"}


def run_probes(device: str = "cuda", dtype: torch.dtype = torch.bfloat16, names=None) -> list:
    import flactl.ops  # noqa: F401  (importing the families registers their probes)

    return [run_probe(p, device, dtype) for n, p in sorted(PROBES.items()) if names is None or n in names]
