"""Chunk-local cumulative sum of log-decays (the one implementation every family uses).

For chunk size C, position t in chunk c = t // C:  out[t] = sum_{s = cC}^{t} g[s]  (forward), or
sum_{s = t}^{cC + C - 1} g[s] (reverse, used by backward passes). Chunks restart at every sequence
start when ``cu_seqlens`` is given (chunks are aligned to each sequence's own start).
Accumulates and returns float32 by default: gates are log-space and long sums lose precision in bf16.

Scalar gates ``[B, T, H]`` and vector gates ``[B, T, H, K]`` share one kernel: the vector case is
viewed as ``[B, T, H*K]`` columns.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .backend import use_triton
from .index import prepare_chunk_indices, seq_boundaries


@triton.jit
def chunk_local_cumsum_kernel(
    g, o, cu_seqlens, chunk_indices, T, S,
    BT: tl.constexpr, BS: tl.constexpr, REVERSE: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    i_s, i_t, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    if IS_VARLEN:
        i_n = tl.load(chunk_indices + i_t * 2).to(tl.int64)
        i_c = tl.load(chunk_indices + i_t * 2 + 1).to(tl.int64)
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
        seq_len = eos - bos
        base = bos * S
    else:
        i_c = i_t.to(tl.int64)
        seq_len = T
        base = i_b.to(tl.int64) * T * S
    o_t = i_c * BT + tl.arange(0, BT)
    o_s = i_s * BS + tl.arange(0, BS)
    m = (o_t[:, None] < seq_len) & (o_s[None, :] < S)
    p = base + o_t[:, None].to(tl.int64) * S + o_s[None, :]
    b_g = tl.load(g + p, mask=m, other=0.0).to(tl.float32)
    if REVERSE:
        b_o = tl.sum(b_g, axis=0)[None, :] - tl.cumsum(b_g, axis=0) + b_g
    else:
        b_o = tl.cumsum(b_g, axis=0)
    tl.store(o + p, b_o.to(o.dtype.element_ty), mask=m)


def _torch_chunk_local_cumsum(g, chunk_size, reverse, cu_seqlens, out):
    B, T = g.shape[:2]
    for b, bos, eos in seq_boundaries(cu_seqlens, B, T):
        for s in range(bos, eos, chunk_size):
            e = min(s + chunk_size, eos)
            seg = g[b, s:e].float()
            cs = seg.flip(0).cumsum(0).flip(0) if reverse else seg.cumsum(0)
            out[b, s:e] = cs.to(out.dtype)
    return out


def chunk_local_cumsum(
    g: torch.Tensor,
    chunk_size: int,
    reverse: bool = False,
    cu_seqlens: Optional[torch.Tensor] = None,
    output_dtype: Optional[torch.dtype] = torch.float32,
) -> torch.Tensor:
    """Chunk-local cumsum of ``g`` ([B, T, H] or [B, T, H, K]) along T; see module docstring."""
    if g.dim() not in (3, 4):
        raise ValueError(f"g must be [B, T, H] or [B, T, H, K], got shape {tuple(g.shape)}")
    if chunk_size & (chunk_size - 1):
        raise ValueError(f"chunk_size must be a power of two, got {chunk_size}")
    out = torch.empty_like(g, dtype=output_dtype or g.dtype)
    if not use_triton(g):
        return _torch_chunk_local_cumsum(g, chunk_size, reverse, cu_seqlens, out)
    g = g.contiguous()
    B, T = g.shape[:2]
    S = g[0, 0].numel()
    BS = min(triton.next_power_of_2(S), 128)
    if cu_seqlens is not None:
        chunk_indices = prepare_chunk_indices(cu_seqlens, chunk_size)
        NT = chunk_indices.shape[0]
    else:
        chunk_indices = None
        NT = triton.cdiv(T, chunk_size)
    if NT == 0 or T == 0:
        return out
    grid = (triton.cdiv(S, BS), NT, B)
    chunk_local_cumsum_kernel[grid](
        g, out, cu_seqlens, chunk_indices, T, S,
        BT=chunk_size, BS=BS, REVERSE=reverse, IS_VARLEN=cu_seqlens is not None,
    )
    return out
