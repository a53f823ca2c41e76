"""RWKV6 ("Finch"): per-key-channel decay with a current-token bonus ``u``, built on the GLA kernels."""
from .chunk import chunk_rwkv6, fused_recurrent_rwkv6
from .naive import naive_recurrent_rwkv6

__all__ = ["chunk_rwkv6", "fused_recurrent_rwkv6", "naive_recurrent_rwkv6"]
