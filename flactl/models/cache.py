"""The generation cache: per layer, a dict of recurrent state, conv state(s) and attention k/v.

Per-layer dict keys (fla's names, fla-facts §2.3): ``recurrent_state`` (tensor or tuple),
``conv_state`` (tensor or tuple of ``[B, D, W]``), ``attn_state`` (``(k, v)`` each ``[B, T, H, D]``, in
the padded column layout of the attention mask, already trimmed to the window by the layer),
``ffn_state``. ``get_seq_length`` counts the columns (tokens incl. padding) a layer has seen.

It subclasses transformers' ``Cache`` so ``generate`` treats it as a cache object, but stores its
own per-layer dicts (transformers' layer classes change between 5.x releases). Beam search works:
``reorder_cache`` index-selects every tensor along the batch dim.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from transformers.cache_utils import Cache as _HFCache


def _map(x, fn):
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return fn(x)
    if isinstance(x, (tuple, list)):
        return type(x)(_map(t, fn) for t in x)
    return x


class Cache(_HFCache):
    """Recurrent/conv/attention state per layer. ``Cache()``; layers call ``update_layer``."""

    is_compileable = False

    def __init__(self, *args, **kwargs):
        try:
            super().__init__(layers=[])
        except (TypeError, ValueError):  # older/newer transformers signatures: we need none of it
            pass
        self.states: List[Optional[Dict[str, Any]]] = []
        self._seen: List[int] = []

    # ---- what the layers use -----------------------------------------------------------------
    def get_layer_state(self, layer_idx: int) -> Optional[Dict[str, Any]]:
        return self.states[layer_idx] if layer_idx < len(self.states) else None

    def update_layer(self, layer_idx: int, offset: int = 0, **states) -> Dict[str, Any]:
        """Replace the given entries of layer ``layer_idx`` and advance its token count by ``offset``."""
        while len(self.states) <= layer_idx:
            self.states.append(None)
            self._seen.append(0)
        if self.states[layer_idx] is None:
            self.states[layer_idx] = {"recurrent_state": None, "attn_state": None, "conv_state": None,
                                      "ffn_state": None}
        for k, v in states.items():
            self.states[layer_idx][k] = v
        self._seen[layer_idx] += offset
        return self.states[layer_idx]

    # ---- transformers Cache API --------------------------------------------------------------
    def __getitem__(self, layer_idx: int):
        if layer_idx >= len(self.states):
            raise KeyError(f"Cache has only {len(self.states)} layers, asked for layer {layer_idx}")
        return self.states[layer_idx]

    def __len__(self) -> int:
        return len(self.states)

    def __iter__(self):
        return iter(self.states)

    def __repr__(self) -> str:
        return f"flactl.Cache(layers={len(self.states)}, seen={self.get_seq_length()})"

    def update(self, *args, **kwargs):
        raise NotImplementedError("flactl.Cache is updated by flactl layers through update_layer()")

    def get_seq_length(self, layer_idx: Optional[int] = 0, *args, **kwargs) -> int:
        layer_idx = layer_idx or 0
        return self._seen[layer_idx] if layer_idx < len(self._seen) else 0

    def get_max_length(self, *args, **kwargs) -> int:
        return -1

    def get_max_cache_shape(self, *args, **kwargs) -> int:
        return -1

    def get_mask_sizes(self, query_length, layer_idx: int = 0, *args, **kwargs):
        if isinstance(query_length, torch.Tensor):
            query_length = query_length.shape[0]
        return self.get_seq_length(layer_idx) + query_length, 0

    def get_query_offset(self, layer_idx: int = 0) -> int:
        return self.get_seq_length(layer_idx)

    def has_previous_state(self, layer_idx: Optional[int] = None, *args, **kwargs) -> bool:
        return len(self.states) > 0

    @property
    def is_initialized(self) -> bool:
        return len(self.states) > 0

    @property
    def is_croppable(self) -> bool:
        return False

    @property
    def is_sliding(self) -> list:
        return [False] * len(self.states)

    @property
    def is_linear(self) -> list:
        return [True] * len(self.states)

    @property
    def is_dummy(self) -> list:
        return [False] * len(self.states)

    @property
    def max_batch_size(self) -> int:
        return self.batch_size

    @property
    def batch_size(self) -> int:
        for s in self.states:
            for v in (s or {}).values():
                while isinstance(v, (tuple, list)) and v:
                    v = v[0]
                if isinstance(v, torch.Tensor):
                    return v.shape[0]
        return 0

    @property
    def max_cache_len(self) -> int:
        return -1

    def reset(self):
        self.states, self._seen = [], []

    def crop(self, max_length: int):
        raise NotImplementedError(
            "a recurrent state cannot be rolled back to an earlier token: assisted/speculative decoding and "
            "cache cropping are not supported by flactl's recurrent models")

    def _apply(self, fn):
        for i, s in enumerate(self.states):
            if s is not None:
                self.states[i] = {k: _map(v, fn) for k, v in s.items()}

    def reorder_cache(self, beam_idx: torch.LongTensor):
        """Beam search: keep the states of the selected beams."""
        self._apply(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int):
        self._apply(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor):
        self._apply(lambda t: t[indices])

    def offload(self, *args, **kwargs):
        pass

    def prefetch(self, *args, **kwargs):
        pass

    # ---- legacy tuple format (fla's from_legacy_cache / to_legacy_cache) ---------------------
    def to_legacy_cache(self):
        return tuple(self.states)

    @classmethod
    def from_legacy_cache(cls, past_key_values=None, seen_tokens: int = 0):
        cache = cls()
        for i, s in enumerate(past_key_values or ()):
            cache.update_layer(i, offset=seen_tokens, **(s or {}))
        return cache
