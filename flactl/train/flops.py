"""Architecture-aware training FLOPs per token, for MFU.

torchtitan/flame use ``6·N + 12·L·H·Q·T`` which assumes softmax attention and gives MFU > 100% for
linear attention (flame#7). Here the token-mixing term depends on the family:

* matmuls: ``2·N_linear`` forward FLOPs per token (every ``nn.Linear`` weight, the LM head included,
  embeddings excluded: a lookup is not a matmul);
* softmax attention (causal): ``2·T·H·d`` forward (QKᵀ and PV, half the square);
* chunked linear attention, chunk ``C``, per head: intra-chunk ``2·C·(dk + dv)`` + inter-chunk
  ``4·dk·dv`` (read and update the ``dk×dv`` state);
* delta rule (DeltaNet, Gated DeltaNet): additionally the WY representation, ``2·C·(dk + dv) + 2·dk·dv``.

Training = forward × 3 (backward ≈ 2× forward). Families not listed return None and MFU is not
reported — a wrong MFU is worse than none.
"""
from __future__ import annotations

from typing import Optional

CHUNK = 64
_LINEAR = {"gla", "retnet", "linear_attn", "hgrn2", "gsa", "abc", "lightnet", "rwkv6"}
_DELTA = {"delta_net", "gated_deltanet", "comba", "kda"}
_SOFTMAX = {"transformer", "llama", "mistral", "qwen2", "gpt2"}

# bf16 dense tensor-core peak, FLOP/s
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "H800": 989e12, "A100": 312e12, "A800": 312e12, "L40S": 362e12,
              "B200": 2250e12}


def linear_params(model) -> int:
    import torch.nn as nn

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


def _heads(cfg):
    """(number of heads, key dim, value dim) of one token-mixing layer, or None."""
    mt = getattr(cfg, "model_type", "")
    hidden = cfg.hidden_size
    if mt in _SOFTMAX:
        h = getattr(cfg, "num_heads", None) or getattr(cfg, "num_attention_heads")
        d = getattr(cfg, "head_dim", None) or hidden // h
        return h, d, d
    if mt in ("gated_deltanet", "comba", "kda"):
        h = getattr(cfg, "num_v_heads", None) or cfg.num_heads
        dk = cfg.head_dim
        return h, dk, int(dk * getattr(cfg, "expand_v", 1))
    if mt in _LINEAR | _DELTA:
        h = getattr(cfg, "num_heads", None)
        if not h:
            return None
        return h, int(hidden * getattr(cfg, "expand_k", 1)) // h, int(hidden * getattr(cfg, "expand_v", 1)) // h
    return None


def train_flops_per_token(model, seq_len: int) -> Optional[float]:
    """Training FLOPs per token (fwd+bwd), or None for an architecture we cannot count."""
    cfg = model.config
    heads = _heads(cfg)
    if heads is None:
        return None
    h, dk, dv = heads
    mt = cfg.model_type
    if mt in _SOFTMAX:
        mix = 2 * seq_len * h * dk  # causal: QKᵀ (T·d) + PV (T·d), halved, ×2 FLOPs per MAC
    else:
        mix = h * (2 * CHUNK * (dk + dv) + 4 * dk * dv)
        if mt in _DELTA:
            mix += h * (2 * CHUNK * (dk + dv) + 2 * dk * dv)
    layers = cfg.num_hidden_layers
    attn_layers = set()
    attn = getattr(cfg, "attn", None)
    if isinstance(attn, dict) and attn.get("layers"):  # hybrid: listed layers are softmax attention
        attn_layers = set(attn["layers"])
        ha = attn.get("num_heads", h)
        soft = 2 * seq_len * ha * (cfg.hidden_size // ha)
        mix_total = mix * (layers - len(attn_layers)) + soft * len(attn_layers)
    else:
        mix_total = mix * layers
    return 3.0 * (2.0 * linear_params(model) + mix_total)


def peak_flops(device_name: str) -> Optional[float]:
    for k, v in PEAK_FLOPS.items():
        if k in device_name:
            return v
    return None
