"""Softmax attention (the Transformer family and the hybrid layers of every family) on torch SDPA.

GQA (``num_kv_heads < num_heads``), sliding window (each query sees keys ``[i-W+1, i]``), RoPE by
position id, optional qk RMSNorm and qkv bias. Keys/values are cached in the padded ``[B, T, H, D]``
column layout of the ``attention_mask`` that ``generate`` passes, trimmed to the last ``window_size``
columns when a window is set. Packed input (``cu_seqlens``) runs one batched call for all documents:
FlexAttention with a document-causal (and windowed) BlockMask on CUDA, one SDPA call with a
block-diagonal causal boolean mask otherwise (``_packed``). Parameter names equal fla's ``Attention``
(``q_proj, k_proj, v_proj, o_proj, q_norm, k_norm``).
Everything after the projections lives in :class:`SoftmaxAttentionBase`, shared with MLA (mla.py) and the
Forgetting Transformer (forgetting_attn.py, which passes a per-token ``log_decay`` to :meth:`attend`).
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._deps import RMSNorm
from .utils import SeqContext, document_ids, get_layer_state, layer_context, rope_qk, segment_cumsum


class SoftmaxAttentionBase(nn.Module):
    """Causal softmax attention on per-head q/k/v: k/v cache, sliding window, padding and packed input.

    Shared by :class:`Attention` and ``MultiheadLatentAttention`` (which differ only in how q/k/v are
    projected). Subclasses set ``num_heads``, ``num_kv_heads``, ``head_dim`` (of q/k), ``window_size``
    and ``layer_idx``.
    """

    def attend(self, q, k, v, ctx: SeqContext, past_key_values=None, use_cache: bool = False,
               log_decay: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Causal (windowed) attention of the new tokens over the cached and new keys; caches k/v.

        q ``[.., T, H, Dqk]``, k ``[.., T, Hkv, Dqk]``, v ``[.., T, Hkv, Dv]`` in the layout the layer sees
        (``[1, total, ..]`` when unpadded or packed). Returns o ``[.., T, H, Dv]`` in the same layout and,
        with ``use_cache``, stores ``attn_state = (k, v)`` in the padded column layout, trimmed to the window.

        log_decay (optional, Forgetting Transformer): per-token log forget gate f ``[.., T, H]`` (<= 0, one
        per query head). Scores then get the additive bias ``F_i - F_j`` with F the cumulative sum of f inside
        each sequence; the cache stores ``attn_state = (k, v, f)`` (raw f, like fla) and F of new tokens
        continues from the cached ones. This path materialises a float ``[B, H, T, Tk]`` bias (O(T^2) memory)
        and runs SDPA in float32.
        """
        state = get_layer_state(past_key_values, self.layer_idx)
        past_kv = state.get("attn_state") if state is not None else None
        if ctx.caller_cu_seqlens:
            if past_kv is not None:
                raise ValueError("softmax attention cannot continue a cache on a packed (cu_seqlens) input")
            o = self._packed(q, k, v, ctx.cu_seqlens, ctx, log_decay=log_decay)
            k_all, v_all, f_all = k, v, log_decay
        else:
            q, k, v = ctx.pad(q), ctx.pad(k), ctx.pad(v)  # [B, T, *, D] padded layout
            f_all = None if log_decay is None else ctx.pad(log_decay)  # f = 0 at padding
            if past_kv is not None:
                k_all, v_all = torch.cat([past_kv[0], k], 1), torch.cat([past_kv[1], v], 1)
                if f_all is not None:
                    f_all = torch.cat([past_kv[2], f_all], 1)
            else:
                k_all, v_all = k, v
            o = self._attend(q, k_all, v_all, ctx.key_mask, log_decay=f_all)
            o = ctx.unpad(o)
        if past_key_values is not None and use_cache:
            if self.window_size is not None and k_all.shape[1] > self.window_size:
                k_all, v_all = k_all[:, -self.window_size:], v_all[:, -self.window_size:]
                if f_all is not None:  # F_i - F_j inside the window only needs f of the window
                    f_all = f_all[:, -self.window_size:]
            attn_state = (k_all.contiguous(), v_all.contiguous())
            if f_all is not None:
                attn_state = attn_state + (f_all.contiguous(),)
            past_key_values.update_layer(self.layer_idx, offset=ctx.seq_len, attn_state=attn_state)
        return o

    def _sdpa(self, q, k, v, mask=None, is_causal=False):
        # [B, T, H, D] -> SDPA layout [B, H, T, D]; GQA by repeating kv heads (works on every backend).
        g = self.num_heads // self.num_kv_heads
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if g > 1 and q.is_cuda:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=True)
            return o.transpose(1, 2)
        if g > 1:
            k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
        return o.transpose(1, 2)

    def _sdpa_decay(self, q, k, v, allowed, F_cum):
        """SDPA with the Forgetting-Transformer bias ``F_i - F_j`` on the allowed (bool, broadcastable to
        [B, H, T, Tk]) entries; F_cum [B, Tk, H] cumulative log decay of the key columns (the queries are
        the last T). Computed in float32 (a low-precision bias would lose the decay), cast back."""
        T = q.shape[1]
        F_cum = F_cum.float().transpose(1, 2)  # [B, H, Tk]
        bias = (F_cum[..., -T:, None] - F_cum[..., None, :]).masked_fill(~allowed, float("-inf"))
        return self._sdpa(q.float(), k.float(), v.float(), mask=bias).to(q.dtype)

    def _attend(self, q, k, v, key_mask, log_decay=None):
        """q [B, T, H, D] (the last T columns), k/v [B, Tk, Hkv, D]; key_mask [B, >=Tk] or None;
        log_decay [B, Tk, H] per-column log forget gate (optional, see :meth:`attend`)."""
        T, Tk = q.shape[1], k.shape[1]
        if log_decay is None and key_mask is None and self.window_size is None and T == Tk:
            return self._sdpa(q, k, v, is_causal=True)
        if (log_decay is None and key_mask is None and T == 1
                and (self.window_size is None or Tk <= self.window_size)):
            return self._sdpa(q, k, v)
        qcol = torch.arange(Tk - T, Tk, device=q.device)[:, None]
        kcol = torch.arange(Tk, device=q.device)[None, :]
        allowed = kcol <= qcol
        if self.window_size is not None:
            allowed = allowed & (qcol - kcol < self.window_size)
        allowed = allowed[None]
        if key_mask is not None:
            allowed = allowed & key_mask[:, -Tk:].to(q.device)[:, None, :]
            # A padded query sees no valid key; let it see itself so SDPA never normalises an empty row
            # (its output is dropped by unpadding anyway).
            allowed = allowed | (kcol == qcol)[None]
        if log_decay is not None:
            return self._sdpa_decay(q, k, v, allowed[:, None], log_decay.float().cumsum(1))
        return self._sdpa(q, k, v, mask=allowed[:, None])

    def _packed(self, q, k, v, cu_seqlens, ctx: Optional[SeqContext] = None, log_decay=None):
        """Causal (optionally windowed) attention inside each packed sequence of q/k/v [1, total, *, D].

        One batched call instead of one per document: FlexAttention with a document-causal BlockMask on
        CUDA, else one SDPA call with a block-diagonal causal boolean mask while ``total`` is small enough
        for a ``[total, total]`` mask; the per-document loop only beyond that on CPU. Masks are built once
        per forward and shared by the layers through ``ctx``. With ``log_decay`` [1, total, H] (FoX) the
        cumulative decay restarts at every document and no FlexAttention path is taken."""
        total = q.shape[1]
        cache = _mask_cache(ctx)
        if log_decay is not None:
            if total > (_SDPA_MASK_MAX_CUDA if q.is_cuda else _SDPA_MASK_MAX_CPU):
                return self._packed_loop(q, k, v, cu_seqlens, log_decay)
            key = ("bool", self.window_size, total)
            if key not in cache:
                cache[key] = document_causal_mask(cu_seqlens, total, self.window_size, q.device)
            return self._sdpa_decay(q, k, v, cache[key][None, None], segment_cumsum(log_decay, cu_seqlens))
        if q.is_cuda and _flex_usable(self.head_dim):
            key = ("flex", self.window_size, total)
            try:
                if key not in cache:
                    cache[key] = _document_block_mask(cu_seqlens, total, self.window_size, q.device, compiled=True)
                return self._flex(q, k, v, cache[key], compiled=True)
            except Exception as e:  # compile/lowering failure on this setup: batched SDPA from now on
                _FLEX["ok"] = False
                warnings.warn(f"FlexAttention unavailable ({type(e).__name__}: {e}); packed attention falls "
                              f"back to SDPA with a block-diagonal mask", stacklevel=2)
        if total <= (_SDPA_MASK_MAX_CUDA if q.is_cuda else _SDPA_MASK_MAX_CPU):
            key = ("bool", self.window_size, total)
            if key not in cache:
                cache[key] = document_causal_mask(cu_seqlens, total, self.window_size, q.device)
            return self._sdpa(q, k, v, mask=cache[key][None, None])
        return self._packed_loop(q, k, v, cu_seqlens)

    def _packed_loop(self, q, k, v, cu_seqlens, log_decay=None):
        """Reference path: one SDPA call per document (slow with many documents; long CPU inputs only)."""
        outs = []
        bounds = cu_seqlens.tolist()
        for bos, eos in zip(bounds[:-1], bounds[1:]):
            if eos > bos:
                f = None if log_decay is None else log_decay[:, bos:eos]
                outs.append(self._attend(q[:, bos:eos], k[:, bos:eos], v[:, bos:eos], None, log_decay=f))
        return torch.cat(outs, 1)

    def _flex(self, q, k, v, block_mask, compiled: bool = True):
        """FlexAttention on [1, total, H, D] tensors with a precomputed BlockMask (GQA in the kernel)."""
        from torch.nn.attention.flex_attention import flex_attention
        fn = _compiled_flex() if compiled else flex_attention
        o = fn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), block_mask=block_mask,
               enable_gqa=self.num_heads != self.num_kv_heads)
        return o.transpose(1, 2)


class Attention(SoftmaxAttentionBase):
    """Multi-head softmax attention.

    Args:
        hidden_size: model width h.
        num_heads: query heads H; head_dim = h // H unless given.
        num_kv_heads: key/value heads (GQA), divides num_heads. Default num_heads.
        qkv_bias: bias on q/k/v projections.
        qk_norm: RMSNorm over head_dim of q and k (before RoPE).
        window_size: sliding window W (None = full causal attention).
        rope_theta: RoPE base (None disables RoPE).
        max_position_embeddings: accepted for fla compatibility (RoPE is computed on the fly).
        layer_idx: index in the model (required with a cache).

    forward(hidden_states [B, T, h], attention_mask [B, T] or [B, past+T] 0/1, past_key_values,
    use_cache, cu_seqlens [N+1] for packed [1, T, h]) -> (o [B, T, h], None, past_key_values).
    """

    def __init__(self, hidden_size: int = 2048, num_heads: int = 32, num_kv_heads: Optional[int] = None,
                 qkv_bias: bool = False, qk_norm: bool = False, window_size: Optional[int] = None,
                 rope_theta: Optional[float] = 10000.0, max_position_embeddings: Optional[int] = None,
                 head_dim: Optional[int] = None, norm_eps: float = 1e-6, layer_idx: Optional[int] = None,
                 **kwargs):
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_heads % num_kv_heads != 0:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
        self.hidden_size, self.num_heads, self.num_kv_heads = hidden_size, num_heads, num_kv_heads
        self.head_dim = head_dim or hidden_size // num_heads
        self.kv_dim = num_kv_heads * self.head_dim
        self.qkv_bias, self.qk_norm = qkv_bias, qk_norm
        self.window_size, self.rope_theta = window_size, rope_theta
        self.max_position_embeddings = max_position_embeddings
        self.layer_idx = layer_idx
        self.q_proj = nn.Linear(hidden_size, num_heads * self.head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(hidden_size, self.kv_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(hidden_size, self.kv_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(num_heads * self.head_dim, hidden_size, bias=False)
        if qk_norm:
            self.q_norm = RMSNorm(self.head_dim, eps=norm_eps)
            self.k_norm = RMSNorm(self.head_dim, eps=norm_eps)

    def forward(self, hidden_states: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                past_key_values=None, use_cache: bool = False, output_attentions: bool = False,
                cu_seqlens: Optional[torch.Tensor] = None, seq_ctx: Optional[SeqContext] = None, **kwargs):
        x, ctx, repad = layer_context(hidden_states, attention_mask, cu_seqlens, past_key_values,
                                      self.layer_idx, seq_ctx)
        lead = x.shape[:2]
        q = self.q_proj(x).view(*lead, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(*lead, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(*lead, self.num_kv_heads, self.head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope_theta is not None:
            q, k = rope_qk(q, k, ctx, self.head_dim, self.rope_theta)

        o = self.attend(q, k, v, ctx, past_key_values, use_cache)
        o = self.o_proj(o.reshape(*lead, -1))
        if repad:
            o = ctx.pad(o)
        return o, None, past_key_values


# Largest packed length for which the boolean [total, total] mask path is used (bytes = total^2).
_SDPA_MASK_MAX_CPU = 1024  # CPU SDPA may materialise [H, total, total] scores
_SDPA_MASK_MAX_CUDA = 16384
_FLEX = {}


def _flex_usable(head_dim: int) -> bool:
    """FlexAttention can run: importable, enabled (FLACTL_FLEX_ATTENTION=1), head_dim a power of 2 >= 16.

    Opt-in until the compiled CUDA path (forward and backward) has been verified on a GPU; the default
    packed path is one SDPA call with a block-diagonal causal mask.
    """
    if "ok" not in _FLEX:
        import os
        ok = os.environ.get("FLACTL_FLEX_ATTENTION", "0") == "1"
        if ok:
            try:
                from torch.nn.attention.flex_attention import create_block_mask, flex_attention  # noqa: F401
            except ImportError:
                ok = False
        _FLEX["ok"] = ok
    return _FLEX["ok"] and head_dim >= 16 and head_dim & (head_dim - 1) == 0


def _compiled_flex():
    # Uncompiled flex_attention materialises the full score matrix; the compiled one is the fused kernel.
    if "fn" not in _FLEX:
        from torch.nn.attention.flex_attention import flex_attention
        _FLEX["fn"] = torch.compile(flex_attention)
    return _FLEX["fn"]


def _mask_cache(ctx: Optional[SeqContext]) -> dict:
    """A per-forward dict on the SeqContext (shared by all layers of one forward call)."""
    if ctx is None:
        return {}
    cache = getattr(ctx, "_attn_masks", None)
    if cache is None:
        cache = {}
        ctx._attn_masks = cache
    return cache


def document_causal_mask(cu_seqlens: torch.Tensor, total: int, window_size: Optional[int], device) -> torch.Tensor:
    """bool [total, total]: key j visible to query i iff same document, j <= i and i - j < window_size."""
    doc = document_ids(cu_seqlens, total, device)
    pos = torch.arange(total, device=device)
    allowed = (doc[:, None] == doc[None, :]) & (pos[None, :] <= pos[:, None])
    if window_size is not None:
        allowed = allowed & (pos[:, None] - pos[None, :] < window_size)
    return allowed


def _document_block_mask(cu_seqlens: torch.Tensor, total: int, window_size: Optional[int], device,
                         compiled: bool = True):
    """FlexAttention BlockMask of :func:`document_causal_mask` (blocks outside every document skipped)."""
    from torch.nn.attention.flex_attention import create_block_mask
    doc = document_ids(cu_seqlens, total, device)

    def mask_mod(b, h, q_idx, kv_idx):
        m = (doc[q_idx] == doc[kv_idx]) & (kv_idx <= q_idx)
        if window_size is not None:
            m = m & (q_idx - kv_idx < window_size)
        return m

    return create_block_mask(mask_mod, B=None, H=None, Q_LEN=total, KV_LEN=total, device=device, _compile=compiled)
