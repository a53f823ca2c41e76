"""Plumbing shared by the recurrent token mixers: layout/padding context, mode choice, short
convolutions with their cache, and writing the layer's cache entry."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._deps import FusedRMSNormGated, RMSNorm, ShortConvolution, short_conv
from .utils import SeqContext, get_layer_state, layer_context, use_recurrent_mode


# Output-gate activations of the GLA-style mixers (fla's ``gate_fn`` values).
GATE_ACTIVATIONS = {"swish": F.silu, "silu": F.silu, "sigmoid": torch.sigmoid, "relu": F.relu, "gelu": F.gelu}


class RecurrentMixer(nn.Module):
    """Base class of the recurrent token mixers. Subclasses set ``self.mode`` and ``self.layer_idx``,
    build their projections with the helpers below and implement :meth:`mix`; :meth:`forward` (fla's
    layer contract) is shared."""

    mode: str = "chunk"
    layer_idx: Optional[int] = None

    def forward(self, hidden_states: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                past_key_values=None, use_cache: bool = False, output_attentions: bool = False,
                cu_seqlens: Optional[torch.Tensor] = None, seq_ctx: Optional[SeqContext] = None, **kwargs):
        """hidden_states [B, T, h] → (o [B, T, h], None, past_key_values).

        Padding is removed once (or the caller's packed ``cu_seqlens`` used), the kernel mode picked,
        the family's :meth:`mix` run on the unpadded tokens, its new states stored in the cache, and the
        output padded back to the caller's layout.
        """
        x, ctx, repad, state, mode = self.begin(hidden_states, attention_mask, cu_seqlens, past_key_values, seq_ctx)
        o, states = self.mix(x, ctx.cu_seqlens, state, mode, use_cache, ctx=ctx, **kwargs)
        self.save(past_key_values, use_cache, ctx, **states)
        return self.finish(o, ctx, repad), None, past_key_values

    def mix(self, x: torch.Tensor, cu: Optional[torch.Tensor], state: dict, mode: str, use_cache: bool,
            **kwargs):
        """The family's token mixing on x [1 or B, T, h] (cu: packed sequence offsets or None; state: this
        layer's cached dict, empty without a cache; mode: 'chunk' | 'fused_recurrent'; kwargs: ``ctx`` (the
        SeqContext, for positions) and whatever the model passes, e.g. HGRN's ``lower_bound``) → (o [.., h],
        dict of states to cache, e.g. recurrent_state / conv_state)."""
        raise NotImplementedError

    def begin(self, hidden_states, attention_mask, cu_seqlens, past_key_values, seq_ctx: Optional[SeqContext]):
        """→ (x in kernel layout, ctx, repad flag, cached dict ({} without one), 'chunk' | 'fused_recurrent')."""
        if self.mode not in ("chunk", "fused_recurrent", "fused_chunk", "parallel"):
            raise ValueError(f"mode must be 'chunk' or 'fused_recurrent', got {self.mode!r}")
        x, ctx, repad = layer_context(hidden_states, attention_mask, cu_seqlens, past_key_values,
                                      self.layer_idx, seq_ctx)
        state = get_layer_state(past_key_values, self.layer_idx) or {}
        # Short inputs outside training (decoding) use the token-by-token kernel; long ones the chunk kernel.
        mode = "fused_recurrent" if use_recurrent_mode(self.mode, x.shape[1], self.training) else "chunk"
        return x, ctx, repad, state, mode

    @staticmethod
    def run_convs(convs: Sequence[nn.Module], inputs: Sequence[torch.Tensor], state, use_cache: bool,
                  cu_seqlens):
        """Apply each short conv to its input with its cached window → (outputs, new conv states tuple)."""
        cached = state.get("conv_state") if state else None
        outs, finals = [], []
        for i, (conv, x) in enumerate(zip(convs, inputs)):
            cache = cached[i] if cached is not None else None
            y, final = short_conv(conv, x, cache=cache, output_final_state=use_cache, cu_seqlens=cu_seqlens)
            outs.append(y)
            finals.append(final)
        return outs, (tuple(finals) if use_cache else None)

    @staticmethod
    def heads_from_expand_ratio(hidden_size: int, num_heads: Optional[int], expand_ratio: Optional[int]):
        """(num_heads, expand_ratio) for layers sized by either (HGRN2, LightNet: expand_ratio is the key
        head dim; the other follows from hidden_size)."""
        if expand_ratio is None and num_heads is not None:
            expand_ratio = hidden_size // num_heads
        elif expand_ratio is not None and num_heads is None:
            if not 0 < expand_ratio <= hidden_size:
                raise ValueError(f"expand_ratio ({expand_ratio}, the key head dim) must be in 1..hidden_size "
                                 f"({hidden_size}); or give num_heads")
            num_heads = hidden_size // expand_ratio
        elif expand_ratio is None and num_heads is None:
            raise ValueError("one of num_heads or expand_ratio must be given")
        if num_heads < 1 or hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be a multiple of num_heads ({num_heads})")
        return num_heads, expand_ratio

    def build_qkv(self, hidden_size: int, q_dim: int, k_dim: int, v_dim: int, use_short_conv: bool,
                  conv_size: int, conv_bias: bool, qk_activation: Optional[str] = "silu") -> None:
        """q/k/v projections (no bias) and, with ``use_short_conv``, their causal short convolutions,
        under fla's parameter names (``q_proj``…, ``q_conv1d``…). The v conv always uses silu."""
        self.q_proj = nn.Linear(hidden_size, q_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, k_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, v_dim, bias=False)
        if use_short_conv:
            self.q_conv1d = ShortConvolution(q_dim, conv_size, bias=conv_bias, activation=qk_activation)
            self.k_conv1d = ShortConvolution(k_dim, conv_size, bias=conv_bias, activation=qk_activation)
            self.v_conv1d = ShortConvolution(v_dim, conv_size, bias=conv_bias, activation="silu")

    def project_qkv(self, x: torch.Tensor, state, use_cache: bool, cu_seqlens):
        """q, k, v = projections of x, through the short convs when the layer has them (carrying their
        decoding windows in ``state``) → (q, k, v, new conv state or None)."""
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if not self.use_short_conv:
            return q, k, v, None
        (q, k, v), conv_state = self.run_convs((self.q_conv1d, self.k_conv1d, self.v_conv1d), (q, k, v),
                                               state, use_cache, cu_seqlens)
        return q, k, v, conv_state

    def build_heads(self, hidden_size: int, num_heads: int, num_kv_heads: Optional[int], expand_k: float,
                    expand_v: float) -> None:
        """Head layout of the GLA-style mixers (fla's attribute names): key/value widths from the
        expansion ratios, GQA groups of ``num_heads // num_kv_heads`` query heads per k/v head."""
        self.hidden_size, self.num_heads = hidden_size, num_heads
        self.num_kv_heads = num_kv_heads if num_kv_heads is not None else num_heads
        self.num_kv_groups = num_heads // self.num_kv_heads
        self.key_dim, self.value_dim = int(hidden_size * expand_k), int(hidden_size * expand_v)
        if self.key_dim % num_heads or self.value_dim % num_heads:
            raise ValueError(f"key_dim {self.key_dim} and value_dim {self.value_dim} must be divisible by "
                             f"num_heads {num_heads}")
        self.key_dim_per_group = self.key_dim // self.num_kv_groups
        self.value_dim_per_group = self.value_dim // self.num_kv_groups
        self.head_k_dim, self.head_v_dim = self.key_dim // num_heads, self.value_dim // num_heads

    def build_gva_heads(self, hidden_size: int, num_heads: int, num_v_heads: Optional[int], head_dim: int,
                        expand_v: float) -> None:
        """Head layout of the gated delta-rule layers (fla's names): ``num_heads`` q/k heads of
        ``head_dim``, ``num_v_heads`` (a multiple; grouped value heads) v heads of ``head_dim·expand_v``."""
        self.hidden_size, self.num_heads = hidden_size, num_heads
        self.num_v_heads = num_v_heads if num_v_heads is not None else num_heads
        if self.num_v_heads % num_heads:
            raise ValueError(f"num_v_heads ({self.num_v_heads}) must be a multiple of num_heads ({num_heads})")
        self.head_k_dim, self.head_v_dim = head_dim, int(head_dim * expand_v)
        self.key_dim, self.value_dim = num_heads * self.head_k_dim, self.num_v_heads * self.head_v_dim

    def build_norm_gate_output(self, hidden_size: int, use_output_gate: bool, gate_fn: str, fuse_norm: bool,
                               elementwise_affine: Optional[bool], norm_eps: float) -> None:
        """Output path of GLA / RetNet (fla's names): per-head RMSNorm times ``gate_fn(g_proj(x))``
        (``g_norm_swish_gate``, fused, for swish), or the norm alone without an output gate; then
        ``o_proj``. Needs ``build_heads`` first."""
        self.use_output_gate = use_output_gate
        if use_output_gate:
            self.g_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
        self.o_proj = nn.Linear(self.value_dim, hidden_size, bias=False)
        self.fuse_norm_and_gate = gate_fn == "swish" and fuse_norm and use_output_gate
        if self.fuse_norm_and_gate:
            self.g_norm_swish_gate = FusedRMSNormGated(self.head_v_dim, elementwise_affine, norm_eps)
        else:
            self.g_norm = RMSNorm(self.head_v_dim, elementwise_affine=elementwise_affine, eps=norm_eps)
            self.gate_fn = GATE_ACTIVATIONS[gate_fn]

    def norm_gate_output(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """o [B, T, H, V] (kernel output heads), x the layer input → o_proj(norm(o) · gate)."""
        if self.use_output_gate:
            g = self.g_proj(x).view(o.shape)
            o = self.g_norm_swish_gate(o, g) if self.fuse_norm_and_gate else self.g_norm(o) * self.gate_fn(g)
        else:
            o = self.g_norm(o)
        return self.o_proj(o.reshape(*o.shape[:2], self.value_dim))

    def project_delta_qkv(self, x: torch.Tensor, state, use_cache: bool, cu_seqlens):
        """q, k, v of the delta-rule family, flat [B, T, dim]: projections through the short convs (silu
        inside the conv), or silu on the raw projections when the layer has no conv (fla's layers)."""
        q, k, v, conv_state = self.project_qkv(x, state, use_cache, cu_seqlens)
        if not self.use_short_conv:
            q, k, v = F.silu(q), F.silu(k), F.silu(v)
        return q, k, v, conv_state

    def split_delta_heads(self, x: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """[B, T, dim] → q, k [B, T, H, K] and v [B, T, HV, V] (HV ≥ H: grouped value heads)."""
        lead = x.shape[:2]
        return (q.view(*lead, self.num_heads, self.head_k_dim), k.view(*lead, self.num_heads, self.head_k_dim),
                v.view(*lead, self.num_v_heads, self.head_v_dim))

    def build_gated_output(self, hidden_size: int, value_dim: int, head_v_dim: int, use_gate: bool,
                           norm_eps: float, activation: str = "swish") -> None:
        """Output path of the delta-rule family: per-head RMSNorm, gated by ``activation(g_proj(x))``
        when ``use_gate`` (fused), then ``o_proj`` (fla's names ``g_proj``, ``o_norm``, ``o_proj``).
        fla gates with swish except Comba, which uses sigmoid."""
        self._output_gated = use_gate
        if use_gate:
            self.g_proj = nn.Linear(hidden_size, value_dim, bias=False)
            self.o_norm = FusedRMSNormGated(head_v_dim, eps=norm_eps, activation=activation)
        else:
            self.o_norm = RMSNorm(head_v_dim, eps=norm_eps)
        self.o_proj = nn.Linear(value_dim, hidden_size, bias=False)

    def gated_output(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """o [B, T, H, V] (heads of the kernel output), x the layer input → o_proj(norm(o) · gate)."""
        if self._output_gated:
            o = self.o_norm(o, self.g_proj(x).view(o.shape))
        else:
            o = self.o_norm(o)
        return self.o_proj(o.reshape(*o.shape[:2], -1))

    def build_decay_gate(self, hidden_size: int, num_heads: int) -> None:
        """Parameters of the in-kernel decay gate g = -exp(A_log) · softplus(a_proj(x) + dt_bias),
        kept out of weight decay like fla's (initialised by ``utils.init_decay_gate_params``)."""
        self.a_proj = nn.Linear(hidden_size, num_heads, bias=False)
        self.A_log = nn.Parameter(torch.empty(num_heads, dtype=torch.float32))
        self.dt_bias = nn.Parameter(torch.empty(num_heads, dtype=torch.float32))
        self.A_log._no_weight_decay = True
        self.dt_bias._no_weight_decay = True

    def save(self, past_key_values, use_cache: bool, ctx: SeqContext, **states):
        if past_key_values is not None and use_cache:
            past_key_values.update_layer(self.layer_idx, offset=ctx.seq_len, **states)

    @staticmethod
    def finish(o: torch.Tensor, ctx: SeqContext, repad: bool) -> torch.Tensor:
        return ctx.pad(o) if repad else o
