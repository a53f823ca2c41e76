"""Named model configs (``[model] preset = "gla-340m"``), sizes from flame's published configs.

Each preset is ``(model_type, config fields)``; fields given in ``[model.config]`` override them.
The 340M-class configs follow flame's ``configs/*_340M.json`` (hidden 1024, 24 layers, vocab 32000;
Gated DeltaNet: 21 layers, 6 heads of dim 256, expand_v 2 — flame's own file). vocab_size is
raised automatically when the tokenizer is larger.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

_COMMON = dict(vocab_size=32000, hidden_act="swish", hidden_ratio=4, intermediate_size=None,
               norm_eps=1e-6, tie_word_embeddings=False, initializer_range=0.02,
               bos_token_id=1, eos_token_id=2, max_position_embeddings=8192, use_cache=True)

PRESETS: Dict[str, Tuple[str, Dict[str, Any]]] = {
    "gla-340m": ("gla", dict(_COMMON, hidden_size=1024, num_hidden_layers=24, num_heads=4, expand_k=0.5,
                             expand_v=1, attn_mode="chunk")),
    "gla-1.3b": ("gla", dict(_COMMON, hidden_size=2048, num_hidden_layers=24, num_heads=4, expand_k=0.5,
                             expand_v=1, attn_mode="chunk")),
    "gated-deltanet-340m": ("gated_deltanet", dict(_COMMON, hidden_size=1024, num_hidden_layers=21, num_heads=6,
                                                   head_dim=256, expand_v=2, use_gate=True, use_short_conv=True,
                                                   conv_size=4, attn_mode="chunk")),
    "gated-deltanet-1.3b": ("gated_deltanet", dict(_COMMON, hidden_size=2048, num_hidden_layers=21, num_heads=6,
                                                   head_dim=256, expand_v=2, use_gate=True, use_short_conv=True,
                                                   conv_size=4, attn_mode="chunk")),
    # RetNet: hidden_ratio 2 (its MLP is smaller; expand_v=2 makes attention larger), ≈ 370M params.
    "retnet-340m": ("retnet", dict(_COMMON, hidden_size=1024, num_hidden_layers=24, num_heads=4, expand_k=1,
                                   expand_v=2, hidden_ratio=2, attn_mode="chunk")),
    "delta-net-340m": ("delta_net", dict(_COMMON, hidden_size=1024, num_hidden_layers=24, num_heads=8, expand_k=1,
                                         expand_v=1, use_short_conv=True, conv_size=4, use_beta=True,
                                         qk_activation="silu", qk_norm="l2", attn_mode="chunk")),
    "transformer-340m": ("transformer", dict(_COMMON, hidden_size=1024, num_hidden_layers=24, num_heads=16)),
}
