"""Gated DeltaProduct (Siems et al., 2025): n_h delta-rule (Householder) updates per token.

    S_t = exp(g_t) S_{t-1};  for j = 1..n_h:  S_t += beta_tj k_tj (v_tj - S_t^T k_tj)^T;   o_t = S_t^T q_t K^-1/2

Training and prefill call ``chunk_gated_delta_product`` (k, v, beta carry the n_h steps interleaved
along T). Decoding has no DeltaProduct-specific kernel (nor has fla's): it runs the (gated) delta rule
over the T·n_h interleaved rows with the decay on each token's first row and the query on its last,
which is the same recurrence (see ``_deps.delta_product_op``). Parameter names follow fla's
``GatedDeltaProduct`` (k/v/b projections carry n_h blocks).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._deps import delta_product_op
from .base import RecurrentMixer
from .utils import init_decay_gate_params


class GatedDeltaProduct(RecurrentMixer):
    """Gated DeltaProduct token mixer.

    Args (fla's names): hidden_size=2048, expand_v=2, head_dim=256, num_heads=6, num_householder=2,
    use_forget_gate=True, allow_neg_eigval=True, use_output_gate=True, use_short_conv=True, conv_size=4,
    conv_bias=False, mode='chunk', norm_eps=1e-5, layer_idx=None. Cached ``recurrent_state`` ``[N, H, K, V]``.
    """

    def __init__(self, hidden_size: int = 2048, expand_v: float = 2, head_dim: int = 256, num_heads: int = 6,
                 num_householder: int = 2, use_forget_gate: bool = True, allow_neg_eigval: bool = True,
                 use_output_gate: bool = True, use_short_conv: bool = True, conv_size: int = 4,
                 conv_bias: bool = False, mode: str = "chunk", norm_eps: float = 1e-5,
                 layer_idx: Optional[int] = None, **kwargs):
        super().__init__()
        self.mode, self.layer_idx = mode, layer_idx
        self.num_householder = num_householder
        self.build_gva_heads(hidden_size, num_heads, None, head_dim, expand_v)  # no grouped value heads
        self.use_forget_gate, self.allow_neg_eigval = use_forget_gate, allow_neg_eigval
        self.use_output_gate, self.use_short_conv = use_output_gate, use_short_conv
        n = num_householder
        self.build_qkv(hidden_size, self.key_dim, self.key_dim * n, self.value_dim * n, use_short_conv, conv_size, conv_bias)
        self.b_proj = nn.Linear(hidden_size, num_heads * n, bias=False)
        if use_forget_gate:
            self.build_decay_gate(hidden_size, num_heads)
            self.init_extra_parameters(nn.init)
        self.build_gated_output(hidden_size, self.value_dim, self.head_v_dim, use_output_gate, norm_eps)

    @torch.no_grad()
    def init_extra_parameters(self, init):
        if not self.use_forget_gate:
            return
        init_decay_gate_params(init, self.A_log, self.dt_bias)

    def mix(self, x: torch.Tensor, cu: Optional[torch.Tensor], state: dict, mode: str, use_cache: bool, **kwargs):
        q, k, v, conv_state = self.project_delta_qkv(x, state, use_cache, cu)
        B, T = x.shape[:2]
        n, H, K, V = self.num_householder, self.num_heads, self.head_k_dim, self.head_v_dim
        # k, v, beta carry n interleaved rows per token (row t*n + j = Householder step j of token t).
        k = k.view(B, T * n, H, K)
        v = v.view(B, T * n, H, V)
        beta = self.b_proj(x).float().sigmoid().view(B, T * n, H)
        if self.allow_neg_eigval:
            beta = beta * 2.0
        g = None
        if self.use_forget_gate:
            g = -self.A_log.float().exp() * F.softplus(self.a_proj(x).float() + self.dt_bias)
        h0 = state.get("recurrent_state")
        o, ht = delta_product_op(mode, q.view(B, T, H, K), k, v, g, beta, n, initial_state=h0,
                                 output_final_state=use_cache, cu_seqlens=cu, use_qk_l2norm_in_kernel=True)
        states = dict(recurrent_state=ht, conv_state=conv_state)
        o = self.gated_output(o, x)
        return o, states
