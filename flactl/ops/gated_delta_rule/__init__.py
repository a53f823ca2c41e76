"""Gated DeltaNet (Yang et al. 2025): ``chunk_gated_delta_rule``, ``fused_recurrent_gated_delta_rule``.

Math in README.md; kernels shared with the other delta-rule families in ops/common/delta_*.
"""
from __future__ import annotations

import torch

from ..probes import register_probe
from .chunk import chunk_gated_delta_rule, chunk_gdn
from .fused_recurrent import fused_recurrent_gated_delta_rule, fused_recurrent_gdn
from .naive import naive_recurrent_gated_delta_rule

__all__ = ["chunk_gated_delta_rule", "fused_recurrent_gated_delta_rule", "chunk_gdn", "fused_recurrent_gdn",
           "naive_recurrent_gated_delta_rule"]


def _probe_inputs(device, dtype):
    # GVA, gate and beta from logits, l2norm in the op: every gradient the layer needs
    B, T, H, HV, K, V = 2, 100, 1, 2, 64, 32
    return dict(
        q=torch.randn(B, T, H, K, device=device).to(dtype),
        k=torch.randn(B, T, H, K, device=device).to(dtype),
        v=torch.randn(B, T, HV, V, device=device).to(dtype),
        g=torch.randn(B, T, HV, device=device).to(dtype),
        beta=torch.randn(B, T, HV, device=device).to(dtype),
        A_log=torch.rand(HV, device=device).log(),
        dt_bias=torch.randn(HV, device=device),
        initial_state=torch.randn(B, HV, K, V, device=device),
        output_final_state=True, use_qk_l2norm_in_kernel=True, use_gate_in_kernel=True,
        use_beta_sigmoid_in_kernel=True)


def _ref(q, k, v, g, beta, A_log, dt_bias, initial_state, **kw):
    return naive_recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=initial_state, A_log=A_log,
                                            dt_bias=dt_bias, **kw)


for _name, _fn in (("chunk_gated_delta_rule", chunk_gated_delta_rule),
                   ("fused_recurrent_gated_delta_rule", fused_recurrent_gated_delta_rule)):
    register_probe(_name, fn=_fn, ref=_ref, make_inputs=_probe_inputs,
                   grad_inputs=("q", "k", "v", "g", "beta", "A_log", "dt_bias", "initial_state"))
