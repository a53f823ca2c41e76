"""Forgetting Attention (FoX, Lin et al. 2025): softmax attention with a data-dependent forget gate.

Per query head, ``f_t = logsigmoid(W_f x_t + b_f) <= 0`` and, for keys ``j <= i`` (inside the window),
``score_ij = q_i . k_j / sqrt(d) + F_i - F_j`` with ``F_i = sum_{t <= i} f_t`` inside each sequence. No RoPE.

Runs on :class:`SoftmaxAttentionBase` (attn.py) with ``log_decay=f``: an explicit float ``[B, H, T, Tk]``
bias added to the causal / window / padding / document masks and one SDPA call in float32, i.e. O(T^2)
memory. A fused Triton kernel (fla's ``parallel_forgetting_attn``) is future work. The cache stores
``attn_state = (k, v, f)`` (raw per-token f, the convention of fla) in the padded column layout, trimmed
to the window, so decoding continues F exactly. Parameter names and shapes equal fla's
``ForgettingAttention``: ``q_proj, k_proj, v_proj, f_proj (bias), g_proj (output gate), o_proj, q_norm,
k_norm`` (per-head RMS GroupNorm with a weight over the whole projection, eps 1e-5).

Difference from fla 0.6.0: fla's layer does not pass ``window_size`` to its prefill kernel (full causal
prefill) but trims its decode cache to the window; flactl applies the window everywhere (each query sees
keys ``[i-W+1, i]``), so with ``window_size`` set only the first W positions of a prefill agree with fla.
"""
from __future__ import annotations

from typing import Optional

import torch.nn as nn
import torch.nn.functional as F

from .attn import SoftmaxAttentionBase
from .utils import SeqContext, layer_context


class ForgettingAttention(SoftmaxAttentionBase):
    """Forgetting attention (FoX).

    Args:
        hidden_size: model width h; head_dim = h // num_heads.
        num_heads: query heads H (and forget-gate heads).
        num_kv_heads: key/value heads (GQA), divides num_heads. Default num_heads.
        qkv_bias: bias on q/k/v projections.
        qk_norm: per-head RMS GroupNorm of q and k (fla's ``GroupNorm(is_rms_norm=True)``).
        window_size: sliding window W (None = full causal attention).
        use_output_gate: ``o = sigmoid(g_proj(x)) * o`` before o_proj.
        layer_idx: index in the model (required with a cache).

    forward(hidden_states [B, T, h], attention_mask [B, T] or [B, past+T] 0/1, past_key_values,
    use_cache, cu_seqlens [N+1] for packed [1, T, h]) -> (o [B, T, h], None, past_key_values).
    """

    def __init__(self, hidden_size: int = 2048, num_heads: int = 32, num_kv_heads: Optional[int] = None,
                 qkv_bias: bool = False, qk_norm: bool = False, window_size: Optional[int] = None,
                 use_output_gate: bool = False, layer_idx: Optional[int] = None, **kwargs):
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_heads % num_kv_heads != 0:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size ({hidden_size}) must be a multiple of num_heads ({num_heads})")
        self.hidden_size, self.num_heads, self.num_kv_heads = hidden_size, num_heads, num_kv_heads
        self.num_kv_groups = num_heads // num_kv_heads
        self.head_dim = hidden_size // num_heads
        self.kv_dim = num_kv_heads * self.head_dim
        self.qkv_bias, self.qk_norm = qkv_bias, qk_norm
        self.window_size, self.use_output_gate = window_size, use_output_gate
        self.layer_idx = layer_idx

        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=qkv_bias)
        self.k_proj = nn.Linear(hidden_size, self.kv_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(hidden_size, self.kv_dim, bias=qkv_bias)
        self.f_proj = nn.Linear(hidden_size, num_heads, bias=True)
        if use_output_gate:
            self.g_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        if qk_norm:
            from flactl.modules import GroupNorm
            self.q_norm = GroupNorm(num_groups=num_heads, hidden_size=hidden_size, is_rms_norm=True)
            self.k_norm = GroupNorm(num_groups=num_kv_heads, hidden_size=self.kv_dim, is_rms_norm=True)

    def forward(self, hidden_states, attention_mask=None, past_key_values=None, use_cache: bool = False,
                output_attentions: bool = False, cu_seqlens=None, seq_ctx: Optional[SeqContext] = None, **kwargs):
        x, ctx, repad = layer_context(hidden_states, attention_mask, cu_seqlens, past_key_values,
                                      self.layer_idx, seq_ctx)
        lead = x.shape[:2]
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        f = F.logsigmoid(self.f_proj(x).float())  # [.., T, H] float32
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(*lead, self.num_heads, self.head_dim)
        k = k.view(*lead, self.num_kv_heads, self.head_dim)
        v = v.view(*lead, self.num_kv_heads, self.head_dim)

        o = self.attend(q, k, v, ctx, past_key_values, use_cache, log_decay=f).reshape(*lead, -1)
        if self.use_output_gate:
            o = self.g_proj(x).sigmoid() * o
        o = self.o_proj(o)
        if repad:
            o = ctx.pad(o)
        return o, None, past_key_values
