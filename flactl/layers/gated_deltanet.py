"""Gated DeltaNet (Yang et al., 2025): delta rule with a scalar data-dependent decay per value head,

    g_t = -exp(A_log) * softplus(a_t + dt_bias),   beta_t = sigmoid(b_t)
    S_t = exp(g_t) S_{t-1} + beta_t k_t (v_t - exp(g_t) S_{t-1}^T k_t)^T,   o_t = S_t^T q_t * K^-1/2

with grouped value heads (GVA: ``num_v_heads`` a multiple of ``num_heads``; value head j reads key
head j // (HV/H)) handled in the kernel, and q/k L2-normalised in the kernel. Parameter names equal
fla's ``GatedDeltaNet`` (``A_log``, ``dt_bias``, ``a_proj``, ``b_proj``, ``o_norm``, ...).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from ._deps import delta_op
from .base import RecurrentMixer
from .utils import init_decay_gate_params


class GatedDeltaNet(RecurrentMixer):
    """Gated DeltaNet token mixer.

    Args (fla's names/defaults): hidden_size=2048, expand_v=2, head_dim=256, num_heads=6, num_v_heads=None
    (GVA when > num_heads), mode='chunk', use_gate=True, use_short_conv=True, allow_neg_eigval=False,
    conv_size=4, conv_bias=False, layer_idx=None, norm_eps=1e-5.

    forward(hidden_states [B, T, h], attention_mask, past_key_values, use_cache, cu_seqlens)
    → (o [B, T, h], None, past_key_values). Cached ``recurrent_state`` ``[N, HV, K, V]`` float32.
    """

    def __init__(self, hidden_size: int = 2048, expand_v: float = 2, head_dim: int = 256, num_heads: int = 6,
                 num_v_heads: Optional[int] = None, mode: str = "chunk", use_gate: bool = True,
                 use_short_conv: bool = True, allow_neg_eigval: bool = False, conv_size: int = 4,
                 conv_bias: bool = False, layer_idx: Optional[int] = None, norm_eps: float = 1e-5, **kwargs):
        super().__init__()
        self.mode, self.layer_idx = mode, layer_idx
        self.build_gva_heads(hidden_size, num_heads, num_v_heads, head_dim, expand_v)
        self.use_gate, self.use_short_conv, self.allow_neg_eigval = use_gate, use_short_conv, allow_neg_eigval
        self.build_qkv(hidden_size, self.key_dim, self.key_dim, self.value_dim, use_short_conv, conv_size, conv_bias)
        self.build_decay_gate(hidden_size, self.num_v_heads)
        self.b_proj = nn.Linear(hidden_size, self.num_v_heads, bias=False)
        self.init_extra_parameters(nn.init)
        self.build_gated_output(hidden_size, self.value_dim, self.head_v_dim, use_gate, norm_eps)

    @torch.no_grad()
    def init_extra_parameters(self, init):
        """A = U(0, 16) → A_log = log A; dt log-uniform in [1e-3, 0.1] → dt_bias = softplus^-1(dt).
        ``init`` is torch.nn.init or transformers' guarded init (skips tensors loaded from a checkpoint)."""
        init_decay_gate_params(init, self.A_log, self.dt_bias)

    def mix(self, x: torch.Tensor, cu: Optional[torch.Tensor], state: dict, mode: str, use_cache: bool, **kwargs):
        q, k, v, conv_state = self.project_delta_qkv(x, state, use_cache, cu)
        q, k, v = self.split_delta_heads(x, q, k, v)
        # Gates go to the kernel raw: g = -exp(A_log) softplus(a + dt_bias), beta = sigmoid(b) (x2 with
        # allow_neg_eigval) are computed there, fused with the chunk cumsum (no [B,T,HV] fp32 temporaries).
        h0 = state.get("recurrent_state")
        o, ht = delta_op(mode, q, k, v, self.b_proj(x), g=self.a_proj(x), gated=True, initial_state=h0,
                         output_final_state=use_cache, cu_seqlens=cu, use_qk_l2norm_in_kernel=True,
                         use_gate_in_kernel=True, A_log=self.A_log, dt_bias=self.dt_bias,
                         use_beta_sigmoid_in_kernel=True, allow_neg_eigval=self.allow_neg_eigval)
        states = dict(recurrent_state=ht, conv_state=conv_state)
        o = self.gated_output(o, x)
        return o, states
