"""Where chunk i_t of a (possibly packed, varlen) batch lies: shared by the chunk-parallel delta kernels."""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _chunk_bounds(i_t, i_b, cu_seqlens, chunk_indices, T, IS_VARLEN: tl.constexpr):
    """(bos, seq_len, chunk index within the sequence) for program chunk i_t of batch i_b."""
    if IS_VARLEN:
        i_n = tl.load(chunk_indices + i_t * 2).to(tl.int64)
        i_c = tl.load(chunk_indices + i_t * 2 + 1).to(tl.int64)
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        seq_len = tl.load(cu_seqlens + i_n + 1).to(tl.int64) - bos
    else:
        i_c = i_t.to(tl.int64)
        bos = i_b.to(tl.int64) * T
        seq_len = (i_b * 0 + T).to(tl.int64)
    return bos, seq_len, i_c
