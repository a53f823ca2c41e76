"""Shared helpers for all op families (backend choice, validation, varlen indices, cumsum)."""
from .backend import force_backend, interpreter_on, use_triton
from .cumsum import chunk_local_cumsum
from .index import cdiv, num_chunks, prepare_chunk_indices, prepare_chunk_offsets, seq_boundaries

__all__ = [
    "force_backend", "interpreter_on", "use_triton", "chunk_local_cumsum", "cdiv", "num_chunks",
    "prepare_chunk_indices", "prepare_chunk_offsets", "seq_boundaries",
]
