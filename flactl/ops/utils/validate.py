"""Input validation for public ops: every failure is a ValueError naming the argument."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

MAX_HEAD_DIM = 256


def _desc(t: torch.Tensor) -> str:
    return f"shape {tuple(t.shape)}, dtype {t.dtype}"


def check_rank(name: str, t: torch.Tensor, rank: int, layout: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != rank:
        raise ValueError(f"{name} must have {rank} dims {layout}, got {_desc(t)}")


def check_floating(name: str, t: torch.Tensor) -> None:
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got {_desc(t)}")


def check_shape(name: str, t: torch.Tensor, expected: Sequence[int], layout: str) -> None:
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {layout} = {tuple(expected)}, got {_desc(t)}")


def check_same_device(**tensors: Optional[torch.Tensor]) -> None:
    devs = {n: t.device for n, t in tensors.items() if t is not None}
    if len(set(devs.values())) > 1:
        raise ValueError(f"all inputs must be on one device, got {devs}")


def check_head_dim(name: str, d: int, maximum: int = MAX_HEAD_DIM) -> None:
    if d > maximum:
        raise ValueError(f"{name} head dim {d} exceeds the supported maximum {maximum}")
    if d < 1:
        raise ValueError(f"{name} head dim must be >= 1, got {d}")


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, allow_gva: bool = False,
              max_v: int = MAX_HEAD_DIM):
    """Check q,k [B,T,H,K], v [B,T,HV,V]; returns (B, T, H, HV, K, V).

    ``allow_gva``: v may have more heads than q/k (HV a multiple of H); otherwise HV == H.
    ``max_v``: largest value head dim the caller's kernels take (ops that block over V take more).
    """
    check_rank("q", q, 4, "[B, T, H, K]")
    check_rank("k", k, 4, "[B, T, H, K]")
    check_rank("v", v, 4, "[B, T, HV, V]")
    for n, t in (("q", q), ("k", k), ("v", v)):
        check_floating(n, t)
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape [B, T, H, K], got q {tuple(q.shape)}, k {tuple(k.shape)}")
    B, T, H, K = q.shape
    if v.shape[0] != B or v.shape[1] != T:
        raise ValueError(f"v must have shape [B={B}, T={T}, HV, V], got {_desc(v)}")
    HV, V = v.shape[2], v.shape[3]
    if allow_gva:
        if HV % H != 0:
            raise ValueError(f"v heads ({HV}) must be a multiple of q/k heads ({H}) for grouped value heads")
    elif HV != H:
        raise ValueError(f"v must have the same number of heads as q/k ({H}), got {HV} (v {_desc(v)})")
    check_head_dim("q/k", K)
    check_head_dim("v", V, max_v)
    check_same_device(q=q, k=k, v=v)
    return B, T, H, HV, K, V


def check_cu_seqlens(cu_seqlens: Optional[torch.Tensor], B: int, T: int) -> int:
    """Validate varlen offsets; returns N (number of sequences): B when cu_seqlens is None.

    Needs one host read of cu_seqlens (small); callers that already validated may skip it.
    """
    if cu_seqlens is None:
        return B
    if not isinstance(cu_seqlens, torch.Tensor):
        raise ValueError(f"cu_seqlens must be a LongTensor [N+1], got {type(cu_seqlens).__name__}")
    if cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"cu_seqlens must be an integer tensor (int32/int64), got dtype {cu_seqlens.dtype}")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise ValueError(f"cu_seqlens must be 1-D with at least 2 offsets [N+1], got shape {tuple(cu_seqlens.shape)}")
    if B != 1:
        raise ValueError(f"with cu_seqlens the batch size must be 1 (packed sequences), got B={B}")
    cu = cu_seqlens.tolist()
    if cu[0] != 0:
        raise ValueError(f"cu_seqlens must start at 0, got {cu[0]}")
    if cu[-1] != T:
        raise ValueError(f"cu_seqlens must end at the total length T={T}, got {cu[-1]}")
    if any(b < a for a, b in zip(cu[:-1], cu[1:])):
        raise ValueError(f"cu_seqlens must be non-decreasing, got {cu}")
    return len(cu) - 1


def check_initial_state(initial_state: Optional[torch.Tensor], N: int, H: int, K: int, V: int,
                        name: str = "initial_state") -> None:
    if initial_state is None:
        return
    check_rank(name, initial_state, 4, "[N, H, K, V]")
    check_shape(name, initial_state, (N, H, K, V), "[N, H, K, V]")


def check_gate(name: str, g: Optional[torch.Tensor], expected: Sequence[int], layout: str) -> None:
    if g is None:
        return
    if not isinstance(g, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(g).__name__}")
    check_floating(name, g)
    check_shape(name, g, expected, layout)
