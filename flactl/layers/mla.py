"""Multi-head latent attention (MLA, DeepSeek-V2 §2.1) on torch SDPA.

Queries optionally go through a low-rank bottleneck (``q_lora_rank``); keys and values are expanded
per head from one shared latent ``c_kv`` of width ``kv_lora_rank``. RoPE is "decoupled": only a
``qk_rope_head_dim`` slice of each query head is rotated, and the key side of that slice is ONE vector
per token shared by all heads. Per head::

    q_h = [q_nope_h, RoPE(q_rope_h)]                   (qk_head_dim = nope + rope)
    k_h = [W_uk_h · norm(c_kv), RoPE(W_kr · x)]        (the rope part broadcast over heads)
    v_h =  W_uv_h · norm(c_kv)                         (v_head_dim, may differ from qk_head_dim)
    o   = W_o · concat_h softmax(q_h k_h^T / sqrt(qk_head_dim)) v_h

Everything after the projections (cache, sliding window, padding, packed input) is the shared softmax
attention core :class:`~flactl.layers.attn.SoftmaxAttentionBase`.

Checkpoint compatibility with fla's ``MultiheadLatentAttention``: parameter names and shapes are fla's
(the DeepSeek names in brackets)::

    q_proj            Linear(h, H*qk_head_dim)                  when q_lora_rank is None, else
    q_proj.0 / .1 / .2  Linear(h, r_q) [q_a_proj], RMSNorm(r_q) [q_a_layernorm], Linear(r_q, H*qk_head_dim) [q_b_proj]
    kv_proj.0 / .1 / .2 Linear(h, r_kv), RMSNorm(r_kv) [kv_a_layernorm], Linear(r_kv, H*(nope+v)) [kv_b_proj]
    k_rope            Linear(h, qk_rope_head_dim)  (DeepSeek folds it into kv_a_proj_with_mqa)
    o_proj            Linear(H*v_head_dim, h)

The cache holds the decompressed per-head ``attn_state = (k [B, T, H, qk_head_dim] with RoPE applied,
v [B, T, H, v_head_dim])`` like fla (not the latent), trimmed to ``window_size`` when one is set.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._deps import RMSNorm
from .attn import SoftmaxAttentionBase
from .utils import SeqContext, layer_context, rope_qk

# fla builds the two latent norms without an eps argument, so its RMSNorm default applies whatever
# the model's norm_eps is; a checkpoint trained with fla needs the same value.
_LATENT_NORM_EPS = 1e-5


def check_rope_scaling(rope_scaling: Optional[dict]) -> None:
    """Only plain RoPE is supported: raise ValueError for any other ``rope_scaling`` type.

    fla 0.6.0 computes a YaRN ``mscale`` for non-default types but never passes it to its attention
    kernel (flash-attn runs with its default 1/sqrt(qk_head_dim)) and never rescales the RoPE
    frequencies, so such a setting changes nothing there. Rather than silently ignore it too, we refuse
    it; an fla checkpoint with it behaves exactly like ``rope_scaling=None``.
    """
    if not rope_scaling:
        return
    rope_type = rope_scaling.get("rope_type", rope_scaling.get("type", "default"))
    if rope_type != "default":
        raise ValueError(
            f"MultiheadLatentAttention supports only plain RoPE (rope_scaling None or rope_type 'default'), "
            f"got rope_type={rope_type!r}. fla 0.6.0 accepts this setting but applies neither the scaled "
            f"frequencies nor the YaRN mscale, so an fla checkpoint with it runs exactly as with "
            f"rope_scaling=None: set rope_scaling to None to load it.")


class MultiheadLatentAttention(SoftmaxAttentionBase):
    """Multi-head latent attention (fla's ``MultiheadLatentAttention`` parameters and defaults).

    Args:
        hidden_size: model width h.
        num_heads: heads H (keys/values are per head after decompression; no GQA).
        q_lora_rank: query bottleneck rank r_q; None = one dense ``q_proj``.
        qk_rope_head_dim: rotated slice of each q/k head (the shared key part).
        kv_lora_rank: width r_kv of the compressed key/value latent.
        v_head_dim: value head dim.
        qk_nope_head_dim: non-rotated slice of each q/k head.
        qk_head_dim: must equal nope + rope when given (fla's redundant field).
        window_size: sliding window W (None = full causal attention).
        rope_theta: RoPE base (None disables RoPE).
        max_position_embeddings: accepted for fla compatibility (RoPE is computed on the fly).
        rope_scaling: None or ``{"rope_type": "default"}`` (see :func:`check_rope_scaling`).
        layer_idx: index in the model (required with a cache).

    forward(hidden_states [B, T, h], attention_mask [B, T] or [B, past+T] 0/1, past_key_values,
    use_cache, cu_seqlens [N+1] for packed [1, T, h]) -> (o [B, T, h], None, past_key_values).
    """

    def __init__(self, hidden_size: int = 2048, num_heads: int = 16, q_lora_rank: Optional[int] = 1536,
                 qk_rope_head_dim: int = 64, kv_lora_rank: int = 512, v_head_dim: int = 128,
                 qk_nope_head_dim: int = 128, qk_head_dim: Optional[int] = 192, window_size: Optional[int] = None,
                 rope_theta: Optional[float] = 10000.0, max_position_embeddings: Optional[int] = None,
                 rope_scaling: Optional[dict] = None, layer_idx: Optional[int] = None, **kwargs):
        super().__init__()
        if qk_head_dim is not None and qk_head_dim != qk_nope_head_dim + qk_rope_head_dim:
            raise ValueError(f"qk_head_dim ({qk_head_dim}) must equal qk_nope_head_dim ({qk_nope_head_dim}) + "
                             f"qk_rope_head_dim ({qk_rope_head_dim})")
        if qk_rope_head_dim % 2:
            raise ValueError(f"qk_rope_head_dim must be even (RoPE rotates pairs), got {qk_rope_head_dim}")
        check_rope_scaling(rope_scaling)
        self.hidden_size, self.num_heads = hidden_size, num_heads
        self.num_kv_heads = num_heads  # what the attention core sees after decompression
        self.q_lora_rank, self.kv_lora_rank = q_lora_rank, kv_lora_rank
        self.qk_nope_head_dim, self.qk_rope_head_dim, self.v_head_dim = qk_nope_head_dim, qk_rope_head_dim, v_head_dim
        self.qk_head_dim = self.head_dim = qk_nope_head_dim + qk_rope_head_dim
        self.window_size, self.rope_theta, self.rope_scaling = window_size, rope_theta, rope_scaling
        self.max_position_embeddings = max_position_embeddings
        self.layer_idx = layer_idx

        q_out = num_heads * self.qk_head_dim
        if q_lora_rank is None:
            self.q_proj = nn.Linear(hidden_size, q_out, bias=False)
        else:
            self.q_proj = nn.Sequential(nn.Linear(hidden_size, q_lora_rank, bias=False),
                                        RMSNorm(q_lora_rank, eps=_LATENT_NORM_EPS),
                                        nn.Linear(q_lora_rank, q_out, bias=False))
        self.k_rope = nn.Linear(hidden_size, qk_rope_head_dim, bias=False)
        self.kv_proj = nn.Sequential(nn.Linear(hidden_size, kv_lora_rank, bias=False),
                                     RMSNorm(kv_lora_rank, eps=_LATENT_NORM_EPS),
                                     nn.Linear(kv_lora_rank, num_heads * (qk_nope_head_dim + v_head_dim), bias=False))
        self.o_proj = nn.Linear(num_heads * v_head_dim, hidden_size, bias=False)

    def forward(self, hidden_states: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                past_key_values=None, use_cache: bool = False, output_attentions: bool = False,
                cu_seqlens: Optional[torch.Tensor] = None, seq_ctx: Optional[SeqContext] = None, **kwargs):
        x, ctx, repad = layer_context(hidden_states, attention_mask, cu_seqlens, past_key_values,
                                      self.layer_idx, seq_ctx)
        lead, H = x.shape[:2], self.num_heads
        nope, rope = self.qk_nope_head_dim, self.qk_rope_head_dim
        q_nope, q_rope = self.q_proj(x).view(*lead, H, self.qk_head_dim).split([nope, rope], -1)
        # kv_b_proj's output is per head [k_nope | v]
        k_nope, v = self.kv_proj(x).view(*lead, H, nope + self.v_head_dim).split([nope, self.v_head_dim], -1)
        k_rope = self.k_rope(x).view(*lead, 1, rope)  # one rotated key part per token, shared by the heads
        if self.rope_theta is not None:
            q_rope, k_rope = rope_qk(q_rope, k_rope, ctx, rope, self.rope_theta)
        q = torch.cat([q_nope, q_rope], -1)
        k = torch.cat([k_nope, k_rope.expand(*lead, H, rope)], -1)
        # SDPA's default scale 1/sqrt(q.shape[-1]) = 1/sqrt(qk_head_dim): fla's effective scale too.
        o = self.attend(q, k, v, ctx, past_key_values, use_cache)
        o = self.o_proj(o.reshape(*lead, -1))
        if repad:
            o = ctx.pad(o)
        return o, None, past_key_values

    # torch SDPA's flash backend (and FlexAttention) want the value head dim equal to the q/k head dim.
    # On CUDA, v is zero-padded up to qk_head_dim for the kernel call (as fla does for flash-attn) and the
    # padded output channels (zeros) are dropped; the cache keeps the unpadded v. On CPU the math backend
    # takes Dv != Dqk directly. The scale comes from q's head dim either way.
    def _v_pad(self, q: torch.Tensor) -> int:
        return self.qk_head_dim - self.v_head_dim if q.is_cuda and self.v_head_dim < self.qk_head_dim else 0

    def _sdpa(self, q, k, v, mask=None, is_causal=False):
        pad = self._v_pad(q)
        if not pad:
            return super()._sdpa(q, k, v, mask=mask, is_causal=is_causal)
        return super()._sdpa(q, k, F.pad(v, (0, pad)), mask=mask, is_causal=is_causal)[..., :self.v_head_dim]

    def _flex(self, q, k, v, block_mask, compiled: bool = True):
        pad = self._v_pad(q)
        if not pad:
            return super()._flex(q, k, v, block_mask, compiled=compiled)
        return super()._flex(q, k, F.pad(v, (0, pad)), block_mask, compiled=compiled)[..., :self.v_head_dim]
