"""Reference for the gated delta rule: the shared token-by-token oracle (see ops/delta_rule/naive.py),
plus the in-op transforms (gate from logits, beta sigmoid) written out in float32."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..delta_rule.naive import naive_recurrent_delta_rule


def naive_recurrent_gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
                                     cu_seqlens=None, use_qk_l2norm_in_kernel=False, use_gate_in_kernel=False,
                                     A_log=None, dt_bias=None, use_beta_sigmoid_in_kernel=False,
                                     allow_neg_eigval=False, dtype=torch.float32):
    if use_gate_in_kernel:
        x = g.to(dtype) + (dt_bias.to(dtype) if dt_bias is not None else 0)
        g = -A_log.to(dtype).exp() * F.softplus(x)
    if use_beta_sigmoid_in_kernel:
        beta = beta.to(dtype).sigmoid() * (2 if allow_neg_eigval else 1)
    return naive_recurrent_delta_rule(q, k, v, beta, g, scale=scale, initial_state=initial_state,
                                      output_final_state=output_final_state, cu_seqlens=cu_seqlens,
                                      use_qk_l2norm=use_qk_l2norm_in_kernel, dtype=dtype)
