"""Small helpers shared by the fused modules (dispatch, activation codes, tiling choices)."""
from __future__ import annotations


import torch
import triton

from flactl.ops.utils import interpreter_on, use_triton
from flactl.ops.utils.device import sm_count

__all__ = ["use_triton", "next_pow2", "num_programs_cap", "ACT_CODES", "act_code", "torch_act"]

# Activation codes understood by the kernels (constexpr ACT).
ACT_CODES = {"swish": 0, "silu": 0, "sigmoid": 1}


def act_code(activation: str, name: str = "activation") -> int:
    if activation not in ACT_CODES:
        raise ValueError(f"{name} must be one of {sorted(ACT_CODES)}, got {activation!r}")
    return ACT_CODES[activation]


def torch_act(g: torch.Tensor, activation: str) -> torch.Tensor:
    return torch.sigmoid(g) if ACT_CODES[activation] == 1 else torch.nn.functional.silu(g)


def next_pow2(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))


def num_programs_cap(device: torch.device) -> int:
    """How many persistent programs a reduction-over-rows backward should launch."""
    if device.type == "cuda":
        return 4 * sm_count(device)
    return 2 if interpreter_on() else 64


def check_tensor(name: str, t, min_dim: int = 1) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dims, got shape {tuple(t.shape)}")


def check_float(name: str, t: torch.Tensor) -> None:
    check_tensor(name, t)
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got dtype {t.dtype}")


def check_same_shape(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    check_tensor(name, t)
    if t.shape != ref.shape:
        raise ValueError(f"{name} must have the same shape as {ref_name} {tuple(ref.shape)}, got {tuple(t.shape)}")
