"""Shared test helpers: device/dtype selection, relative-RMS comparison, input generators.

CPU (default): Triton kernels run under ``TRITON_INTERPRET=1`` in float32 (the interpreter
mis-computes bf16 ``tl.dot``). ``FLACTL_TEST_DEVICE=cuda``: the same tests run on the GPU in bf16.
"""
from __future__ import annotations

import os

import torch

DEVICE = os.environ.get("FLACTL_TEST_DEVICE", "cpu")
ON_GPU = DEVICE != "cpu"
# Activation dtype the kernels are tested in on this device.
DTYPE = torch.bfloat16 if ON_GPU else torch.float32


def rel_rms_error(ref: torch.Tensor, got: torch.Tensor) -> float:
    """||got - ref||_rms / ||ref||_rms, computed in float64 (0/0 counts as 0)."""
    ref64, got64 = ref.detach().double(), got.detach().double()
    num = (ref64 - got64).pow(2).mean().sqrt().item()
    den = ref64.pow(2).mean().sqrt().item()
    return num / den if den > 0 else num


def assert_close(name: str, ref: torch.Tensor, got: torch.Tensor, ratio: float) -> None:
    """Fail unless ``got`` matches ``ref`` to relative RMS error ``ratio``; NaN/inf never pass."""
    assert got is not None, f"{name}: result is None"
    assert ref.shape == got.shape, f"{name}: shape {tuple(got.shape)} != reference {tuple(ref.shape)}"
    if not torch.isfinite(got).all():
        bad = (~torch.isfinite(got)).sum().item()
        raise AssertionError(f"{name}: {bad} non-finite elements (of {got.numel()})")
    err = rel_rms_error(ref, got)
    maxdiff = (ref.detach().double() - got.detach().double()).abs().max().item() if ref.numel() else 0.0
    assert err <= ratio, f"{name}: relative RMS error {err:.3e} > {ratio:.1e} (max abs diff {maxdiff:.3e})"


def tol(fp32: float, bf16: float) -> float:
    """Tolerance for the dtype this run tests in."""
    return bf16 if DTYPE in (torch.bfloat16, torch.float16) else fp32


def randn(*shape, dtype=None, device=None, requires_grad=False, scale=1.0) -> torch.Tensor:
    t = (torch.randn(*shape, device=device or DEVICE, dtype=torch.float32) * scale).to(dtype or DTYPE)
    return t.requires_grad_(requires_grad)


def log_decay(*shape, device=None, dtype=torch.float32, low=0.9, high=0.999, requires_grad=False):
    """Random log-space decays log(a) with a in [low, high] (realistic, never zero)."""
    a = torch.empty(*shape, device=device or DEVICE, dtype=torch.float64).uniform_(low, high)
    return a.log().to(dtype).requires_grad_(requires_grad)


def uneven_cu_seqlens(lengths, device=None) -> torch.Tensor:
    """cu_seqlens (int64) from a list of sequence lengths, e.g. [1, 63, 65, 130]."""
    out = [0]
    for n in lengths:
        out.append(out[-1] + int(n))
    return torch.tensor(out, dtype=torch.long, device=device or DEVICE)


def grads(*tensors):
    """Collect .grad of each tensor (None stays None) and reset them."""
    out = []
    for t in tensors:
        out.append(None if t is None or t.grad is None else t.grad.detach().clone())
        if t is not None:
            t.grad = None
    return out
