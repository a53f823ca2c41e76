"""Varlen bookkeeping: cu_seqlens -> per-chunk (sequence, local chunk) table and chunk offsets.

Kernels over packed sequences walk a table of chunks: row i = (seq_id, chunk_id_within_seq).
Both are computed on the host once per call (cu_seqlens is tiny) and cached by identity.
"""
from __future__ import annotations

from typing import Optional

import torch

_CACHE: dict = {}
_CACHE_SIZE = 8


def _cached(fn):
    def wrapper(cu_seqlens: torch.Tensor, chunk_size: int):
        key = (fn.__name__, id(cu_seqlens), cu_seqlens.data_ptr(), cu_seqlens._version, chunk_size)
        hit = _CACHE.get(key)
        if hit is not None and hit[0] is cu_seqlens:
            return hit[1]
        out = fn(cu_seqlens, chunk_size)
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = (cu_seqlens, out)
        return out
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


# Plain-Python host helpers: triton.cdiv / triton.next_power_of_2 are constexpr_function objects in
# recent Triton (3.9), and calling them from host code costs ~1 µs each (argument unwrapping), a
# visible share of a T=1 decode step's host time.
def cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def next_power_of_2(n: int) -> int:
    """Smallest power of 2 >= n (1 for n <= 1)."""
    return 1 << (n - 1).bit_length() if n > 1 else 1


@_cached
def prepare_chunk_indices(cu_seqlens: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """int32 [NT, 2]: for every chunk of every sequence, (seq_id, chunk_id within the sequence)."""
    lens = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    rows = [(i, c) for i, n in enumerate(lens) for c in range(cdiv(n, chunk_size))]
    if not rows:
        return torch.zeros(0, 2, dtype=torch.int32, device=cu_seqlens.device)
    return torch.tensor(rows, dtype=torch.int32, device=cu_seqlens.device)


@_cached
def prepare_chunk_offsets(cu_seqlens: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """int32 [N+1]: cumulative number of chunks before each sequence."""
    lens = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    out = [0]
    for n in lens:
        out.append(out[-1] + cdiv(n, chunk_size))
    return torch.tensor(out, dtype=torch.int32, device=cu_seqlens.device)


def num_chunks(T: int, chunk_size: int, cu_seqlens: Optional[torch.Tensor]) -> int:
    """Total number of chunks (over all sequences when varlen)."""
    if cu_seqlens is None:
        return cdiv(T, chunk_size)
    return int(prepare_chunk_offsets(cu_seqlens, chunk_size)[-1].item())


def seq_boundaries(cu_seqlens: Optional[torch.Tensor], B: int, T: int) -> list:
    """[(batch_index, start, end)] for each sequence (used by torch paths and references)."""
    if cu_seqlens is None:
        return [(b, 0, T) for b in range(B)]
    cu = cu_seqlens.tolist()
    return [(0, cu[i], cu[i + 1]) for i in range(len(cu) - 1)]
