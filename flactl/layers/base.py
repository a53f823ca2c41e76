"""Plumbing shared by the recurrent token mixers: layout/padding context, mode choice, short
convolutions with their cache, and writing the layer's cache entry."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn

from ._deps import FusedRMSNormGated, RMSNorm, ShortConvolution, short_conv
from .utils import SeqContext, get_layer_state, layer_context, use_recurrent_mode


class RecurrentMixer(nn.Module):
    """Base class. Subclasses set ``self.mode`` and ``self.layer_idx`` and call the helpers below."""

    mode: str = "chunk"
    layer_idx: Optional[int] = None

    def begin(self, hidden_states, attention_mask, cu_seqlens, past_key_values, seq_ctx: Optional[SeqContext]):
        """→ (x in kernel layout, ctx, repad flag, cached dict or None, 'chunk' | 'fused_recurrent')."""
        if self.mode not in ("chunk", "fused_recurrent", "fused_chunk", "parallel"):
            raise ValueError(f"mode must be 'chunk' or 'fused_recurrent', got {self.mode!r}")
        x, ctx, repad = layer_context(hidden_states, attention_mask, cu_seqlens, past_key_values,
                                      self.layer_idx, seq_ctx)
        state = get_layer_state(past_key_values, self.layer_idx)
        # Short inputs outside training (decoding) use the token-by-token kernel; long ones the chunk kernel.
        mode = "fused_recurrent" if use_recurrent_mode(self.mode, x.shape[1], self.training) else "chunk"
        return x, ctx, repad, state, mode

    @staticmethod
    def run_convs(convs: Sequence[nn.Module], inputs: Sequence[torch.Tensor], state, use_cache: bool,
                  cu_seqlens):
        """Apply each short conv to its input with its cached window → (outputs, new conv states tuple)."""
        cached = state.get("conv_state") if state is not None else None
        outs, finals = [], []
        for i, (conv, x) in enumerate(zip(convs, inputs)):
            cache = cached[i] if cached is not None else None
            y, final = short_conv(conv, x, cache=cache, output_final_state=use_cache, cu_seqlens=cu_seqlens)
            outs.append(y)
            finals.append(final)
        return outs, (tuple(finals) if use_cache else None)

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

    def build_gated_output(self, hidden_size: int, value_dim: int, head_v_dim: int, use_gate: bool,
                           norm_eps: float) -> None:
        """Output path of the delta-rule family: per-head RMSNorm, gated by silu(g_proj(x)) when
        ``use_gate`` (fused), then ``o_proj`` (fla's names ``g_proj``, ``o_norm``, ``o_proj``)."""
        self._output_gated = use_gate
        if use_gate:
            self.g_proj = nn.Linear(hidden_size, value_dim, bias=False)
            self.o_norm = FusedRMSNormGated(head_v_dim, eps=norm_eps)
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
