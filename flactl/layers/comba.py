"""Comba (Hu et al., 2025, "Improving Bilinear RNNs with Closed-loop Control"): a gated delta rule whose
erase reads the state before the decay through an auxiliary key p, plus an output correction,

    p_t = k_t * sigmoid(decay)                          (inner decay, per key head; p = k without it)
    q_t <- q_t - D * p_t                                (output correction, per key head)
    g_t = -exp(A_log) * softplus(a_t + dt_bias),   beta_t = sigmoid(b_t)
    S_t = exp(g_t) S_{t-1} + beta_t k_t (v_t - S_{t-1}^T p_t)^T,   o_t = S_t^T q_t * K^-1/2

with q, k, p L2-normalised in the kernel (after the correction) and grouped value heads (GVA:
``num_v_heads`` a multiple of ``num_heads``) handled by the op. Parameter names equal fla's ``Comba``
(``q/k/v/a/b/g/o_proj``, ``A_log``, ``dt_bias``, ``D``, ``decay``, ``q/k/v_conv1d``, ``o_norm``).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from ._deps import comba_op
from .base import RecurrentMixer
from .utils import init_decay_gate_params


class Comba(RecurrentMixer):
    """Comba token mixer.

    Args (fla's names/defaults): hidden_size=2048, expand_v=2, head_dim=256, num_heads=6, num_v_heads=None
    (GVA when > num_heads), mode='chunk', use_output_gate=True, use_short_conv=True,
    use_output_correction=True (parameter ``D [H]`` = correction_factor), use_inner_decay=True (parameter
    ``decay [H]`` = 1), correction_factor=1.0, conv_size=4, conv_bias=False, layer_idx=None, norm_eps=1e-5.

    forward(hidden_states [B, T, h], attention_mask, past_key_values, use_cache, cu_seqlens)
    → (o [B, T, h], None, past_key_values). Cached ``recurrent_state`` ``[N, HV, K, V]`` float32.
    """

    def __init__(self, hidden_size: int = 2048, expand_v: float = 2, head_dim: int = 256, num_heads: int = 6,
                 num_v_heads: Optional[int] = None, mode: str = "chunk", use_output_gate: bool = True,
                 use_short_conv: bool = True, use_output_correction: bool = True, use_inner_decay: bool = True,
                 correction_factor: float = 1.0, conv_size: int = 4, conv_bias: bool = False,
                 layer_idx: Optional[int] = None, norm_eps: float = 1e-5, **kwargs):
        super().__init__()
        self.mode, self.layer_idx = mode, layer_idx
        self.build_gva_heads(hidden_size, num_heads, num_v_heads, head_dim, expand_v)
        self.use_output_gate, self.use_short_conv = use_output_gate, use_short_conv
        self.use_output_correction, self.use_inner_decay = use_output_correction, use_inner_decay
        self.correction_factor = correction_factor
        self.build_qkv(hidden_size, self.key_dim, self.key_dim, self.value_dim, use_short_conv, conv_size, conv_bias)
        if use_output_correction:
            self.D = nn.Parameter(torch.empty(num_heads))
            self.D._no_weight_decay = True
        if use_inner_decay:
            self.decay = nn.Parameter(torch.empty(num_heads))
            self.decay._no_weight_decay = True
        self.build_decay_gate(hidden_size, self.num_v_heads)
        self.b_proj = nn.Linear(hidden_size, self.num_v_heads, bias=False)
        self.init_extra_parameters(nn.init)
        # fla's Comba gates its output norm with sigmoid (the other delta-rule layers use swish);
        # found by scripts/cpu_fla_parity.py: swish gave logits off by ~1.9 on an fla checkpoint.
        self.build_gated_output(hidden_size, self.value_dim, self.head_v_dim, use_output_gate, norm_eps,
                                activation="sigmoid")

    @torch.no_grad()
    def init_extra_parameters(self, init):
        """A = U(0, 16) → A_log = log A; dt log-uniform in [1e-3, 0.1] → dt_bias = softplus^-1(dt);
        D = correction_factor, decay = 1 (fla's constructor values). ``init`` is torch.nn.init or
        transformers' guarded init (skips tensors loaded from a checkpoint)."""
        init_decay_gate_params(init, self.A_log, self.dt_bias)
        copy = getattr(init, "copy_", None) or (lambda t, v: t.copy_(v))
        if self.use_output_correction and not getattr(self.D, "_is_hf_initialized", False):
            copy(self.D, torch.full_like(self.D, float(self.correction_factor)))
        if self.use_inner_decay and not getattr(self.decay, "_is_hf_initialized", False):
            copy(self.decay, torch.ones_like(self.decay))

    def mix(self, x: torch.Tensor, cu: Optional[torch.Tensor], state: dict, mode: str, use_cache: bool, **kwargs):
        q, k, v, conv_state = self.project_delta_qkv(x, state, use_cache, cu)
        q, k, v = self.split_delta_heads(x, q, k, v)
        # p and the corrected q are formed before the in-kernel L2 norm (which also normalises p).
        p = k * self.decay.sigmoid().to(k.dtype)[:, None] if self.use_inner_decay else k
        if self.use_output_correction:
            q = q - self.D.to(q.dtype)[:, None] * p
        # Gates go to the kernel raw (as Gated DeltaNet): g = -exp(A_log) softplus(a + dt_bias), beta = sigmoid(b).
        h0 = state.get("recurrent_state")
        o, ht = comba_op(mode, q, k, v, p, self.a_proj(x), self.b_proj(x), initial_state=h0,
                         output_final_state=use_cache, cu_seqlens=cu, use_qk_l2norm_in_kernel=True,
                         use_gate_in_kernel=True, A_log=self.A_log, dt_bias=self.dt_bias,
                         use_beta_sigmoid_in_kernel=True)
        states = dict(recurrent_state=ht, conv_state=conv_state)
        o = self.gated_output(o, x)
        return o, states
