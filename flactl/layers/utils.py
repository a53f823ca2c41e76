"""Shared helpers for the token-mixing layers: padding removal, the per-forward sequence context,
rotary embeddings by position id, and cache access.

Padding policy (DESIGN.md "Padding"): a ``[B, T]`` 0/1 ``attention_mask`` is turned into a packed
``[1, total, D]`` stream plus ``cu_seqlens`` ONCE (at the model entry, or at a standalone layer's
entry); every recurrent/conv kernel then runs varlen, so padding never enters a state. Softmax
attention layers re-pad q/k/v to the ``[B, T]`` layout, because their k/v cache is kept in the same
column layout as the ``attention_mask`` that ``generate`` passes at every step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F


@dataclass
class SeqContext:
    """What every layer of one forward call needs to know about the token layout.

    batch_size, seq_len: the padded input layout ``[B, T]`` of the new tokens.
    indices:   LongTensor ``[total]`` of flat ``b*T+t`` positions of the real tokens when the input was
               unpadded (the layers then see ``[1, total, D]``); None when nothing was removed.
    cu_seqlens: LongTensor ``[N+1]`` offsets of the packed stream (from unpadding or the caller).
    positions: LongTensor, same leading shape as the hidden states the layers see (``[B, T]`` or
               ``[1, total]``): the absolute position of each token in its own sequence (RoPE).
    key_mask:  bool ``[B, past+T]`` validity of every column seen so far (padded layout), or None
               when all columns are valid. Used by softmax attention for the cached keys.
    past_len:  number of columns already in the cache.
    """

    batch_size: int
    seq_len: int
    indices: Optional[torch.Tensor] = None
    cu_seqlens: Optional[torch.Tensor] = None
    positions: Optional[torch.Tensor] = None
    key_mask: Optional[torch.Tensor] = None
    past_len: int = 0
    caller_cu_seqlens: bool = False

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """``[1, total, ...]`` -> ``[B, T, ...]`` (zeros at padding); identity when not unpadded."""
        if self.indices is None:
            return x
        out = x.new_zeros(self.batch_size * self.seq_len, *x.shape[2:])
        out[self.indices] = x[0]
        return out.view(self.batch_size, self.seq_len, *x.shape[2:])

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, ...]`` -> ``[1, total, ...]``; identity when not unpadded."""
        if self.indices is None:
            return x
        return x.reshape(self.batch_size * self.seq_len, *x.shape[2:])[self.indices].unsqueeze(0)


def build_seq_context(
    batch_size: int,
    seq_len: int,
    device: torch.device,
    attention_mask: Optional[torch.Tensor] = None,
    cu_seqlens: Optional[torch.Tensor] = None,
    past_len: int = 0,
) -> SeqContext:
    """Validate the caller's mask / cu_seqlens and build the :class:`SeqContext`.

    attention_mask: ``[B, T]`` or ``[B, past_len + T]`` of 0/1 (bool or int). cu_seqlens: ``[N+1]``
    offsets of an already packed ``[1, T]`` input. Both together raise ``ValueError``.
    """
    B, T = batch_size, seq_len
    if cu_seqlens is not None:
        if attention_mask is not None:
            raise ValueError(
                "pass either cu_seqlens (packed input) or attention_mask (padded input), not both: "
                "a packed batch has no padding to mask")
        if B != 1:
            raise ValueError(f"cu_seqlens requires batch size 1 (packed input), got batch size {B}")
        if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2 or int(cu_seqlens[-1]) != T:
            raise ValueError(f"cu_seqlens must be a 1-D offset tensor ending at the packed length {T}, "
                             f"got {cu_seqlens.tolist() if cu_seqlens.numel() < 16 else tuple(cu_seqlens.shape)}")
        cu = cu_seqlens.to(device=device, dtype=torch.long)
        lens = cu[1:] - cu[:-1]
        seq_id = torch.repeat_interleave(torch.arange(lens.numel(), device=device), lens)
        positions = (torch.arange(T, device=device) - cu[seq_id] + past_len).unsqueeze(0)
        return SeqContext(B, T, None, cu, positions, None, past_len, caller_cu_seqlens=True)
    if attention_mask is None:
        positions = (torch.arange(T, device=device) + past_len).unsqueeze(0).expand(B, T)
        return SeqContext(B, T, None, None, positions, None, past_len)
    if attention_mask.dim() != 2 or attention_mask.shape[0] != B or attention_mask.shape[1] not in (T, past_len + T):
        raise ValueError(
            f"attention_mask must be a 2-D [batch, seq] 0/1 mask of shape [{B}, {T}] or [{B}, {past_len + T}] "
            f"(past + new tokens), got shape {tuple(attention_mask.shape)}")
    mask = attention_mask.to(device=device).bool()
    if mask.shape[1] == T and past_len > 0:
        # A mask for the new tokens only: assume all cached columns are valid.
        mask = torch.cat([mask.new_ones(B, past_len), mask], dim=1)
    full_pos = (mask.long().cumsum(-1) - 1).clamp_min(0)
    positions = full_pos[:, -T:]
    key_mask = None if bool(mask.all()) else mask
    new = mask[:, -T:]
    if key_mask is None or bool(new.all()):
        return SeqContext(B, T, None, None, positions, key_mask, past_len)
    indices = torch.nonzero(new.reshape(-1), as_tuple=False).squeeze(-1)
    lens = new.sum(-1)
    cu = F.pad(lens.cumsum(0), (1, 0)).long()
    return SeqContext(B, T, indices, cu, positions.reshape(-1)[indices].unsqueeze(0), key_mask, past_len)


def layer_context(hidden_states: torch.Tensor, attention_mask, cu_seqlens, past_key_values, layer_idx,
                  seq_ctx: Optional[SeqContext]):
    """For a layer's forward: return (hidden_states in the layout the kernels see, ctx, repad flag).

    Inside a model ``seq_ctx`` is given and the hidden states are already unpadded. A standalone layer
    builds its own context from ``attention_mask`` / ``cu_seqlens`` and unpads itself (repad=True).
    """
    if seq_ctx is not None:
        return hidden_states, seq_ctx, False
    B, T = hidden_states.shape[:2]
    past = 0
    if past_key_values is not None:
        past = past_key_values.get_seq_length(layer_idx)
    ctx = build_seq_context(B, T, hidden_states.device, attention_mask, cu_seqlens, past)
    return ctx.unpad(hidden_states), ctx, ctx.indices is not None


def get_layer_state(past_key_values, layer_idx: Optional[int]):
    """The cached dict of ``layer_idx`` or None (no cache, or nothing stored yet)."""
    if past_key_values is None:
        return None
    if layer_idx is None:
        raise ValueError("layer_idx must be set on a layer that is given past_key_values")
    return past_key_values.get_layer_state(layer_idx)


# ----------------------------------------------------------------------------------------------
# Rotary position embedding by explicit position ids (left padding, varlen and decoding all give
# each token its own position, so a single seqlen offset is not enough).
# ----------------------------------------------------------------------------------------------

def rotary_cos_sin(positions: torch.Tensor, dim: int, base: float, dtype: torch.dtype):
    """cos, sin of shape ``positions.shape + [dim // 2]`` computed in float32."""
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) / dim))
    freqs = positions.to(torch.float32)[..., None] * inv_freq
    return freqs.cos(), freqs.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Non-interleaved (GPT-NeoX) rotary on the first ``2*cos.shape[-1]`` channels of ``x [..., T, H, D]``.

    cos/sin: ``[..., T, R]`` broadcast over heads.
    """
    R = cos.shape[-1]
    xf = x.float()
    x1, x2, rest = xf[..., :R], xf[..., R:2 * R], xf[..., 2 * R:]
    c, s = cos[..., None, :], sin[..., None, :]
    out = torch.cat([x1 * c - x2 * s, x2 * c + x1 * s, rest], dim=-1)
    return out.to(x.dtype)


def use_recurrent_mode(mode: str, seq_len: int, training: bool, threshold: int = 64) -> bool:
    """True when a layer should run its fused_recurrent op: short inputs outside training (decoding)."""
    return mode == "fused_recurrent" or (not training and seq_len <= threshold)


def rope_qk(q: torch.Tensor, k: torch.Tensor, ctx: SeqContext, dim: int, base: float):
    """RoPE on q ``[.., T, H, D]`` and k by each token's position in ``ctx``.

    Without padding (training, packed input, unpadded prefill/decoding) positions are ``past_len + t``
    (per packed sequence): the fused ``flactl.modules.rotary_embedding`` kernel runs. With padding the
    per-token positions go through the torch path above.
    """
    if ctx.key_mask is None and ctx.indices is None:
        try:
            from flactl.modules import rotary_embedding
        except ImportError:  # pragma: no cover
            rotary_embedding = None
        if rotary_embedding is not None:
            L = ctx.past_len + ctx.seq_len
            pos = torch.arange(L, device=q.device)
            cos, sin = rotary_cos_sin(pos, dim, base, q.dtype)
            cu = ctx.cu_seqlens if ctx.caller_cu_seqlens else None
            return (rotary_embedding(q, cos, sin, seqlen_offsets=ctx.past_len, cu_seqlens=cu),
                    rotary_embedding(k, cos, sin, seqlen_offsets=ctx.past_len, cu_seqlens=cu))
    cos, sin = rotary_cos_sin(ctx.positions, dim, base, q.dtype)
    return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)


@torch.no_grad()
def init_decay_gate_params(init, A_log: torch.nn.Parameter, dt_bias: torch.nn.Parameter,
                           A_range=(0.0, 16.0), dt_min: float = 1e-3, dt_max: float = 0.1,
                           dt_floor: float = 1e-4) -> None:
    """Mamba-style initialisation of the in-kernel decay gate g = -exp(A_log) * softplus(a + dt_bias).

    A ~ U(A_range) -> A_log = log A; dt log-uniform in [dt_min, dt_max] (floored) -> dt_bias =
    softplus^-1(dt). ``init`` is torch.nn.init or transformers' guarded init; tensors already loaded
    from a checkpoint (``_is_hf_initialized``) are left alone. Shared by Gated DeltaNet, Gated
    DeltaProduct and Comba (the values fla's constructors use).
    """
    copy = getattr(init, "copy_", None) or (lambda t, v: t.copy_(v))
    if not getattr(A_log, "_is_hf_initialized", False):
        copy(A_log, torch.empty_like(A_log).uniform_(*A_range).clamp_min(dt_floor).log())
    if not getattr(dt_bias, "_is_hf_initialized", False):
        lo, hi = math.log(dt_min), math.log(dt_max)
        dt = torch.exp(torch.rand_like(dt_bias) * (hi - lo) + lo).clamp_min(dt_floor)
        copy(dt_bias, dt + torch.log(-torch.expm1(-dt)))


def document_ids(cu_seqlens: torch.Tensor, total: int, device) -> torch.Tensor:
    """[total] index of the packed sequence each token belongs to (no host sync)."""
    pos = torch.arange(total, device=device)
    return torch.searchsorted(cu_seqlens.to(device=device, dtype=torch.long)[1:].contiguous(), pos, right=True)


def segment_cumsum(x: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """float32 cumulative sum of x [1, total, *] along dim 1, restarting at every packed sequence
    (FoX's cumulative forget gate, linear attention's running key sum)."""
    c = x.float().cumsum(1)
    base = F.pad(c, (0, 0) * (c.dim() - 2) + (1, 0))[:, cu_seqlens[:-1].to(c.device, torch.long)]  # sum before bos
    return c - base[:, document_ids(cu_seqlens, x.shape[1], x.device)]
