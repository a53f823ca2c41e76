"""Numeric probes (``flactl check-env``) for the fused recurrent ops of the linear-attention families.

Each probe runs its op at a tiny bf16 size with an initial state and a final state, forward and
backward, against ``naive_recurrent_linear`` in float32. Imported by ``flactl.ops``.
"""
from __future__ import annotations

import torch

from ..gla.fused_recurrent import fused_recurrent_gla
from ..linear_attn.fused_recurrent import fused_recurrent_linear_attn
from ..probes import register_probe
from ..retention.fused_recurrent import fused_recurrent_retention, retention_log_decay
from ..simple_gla.fused_recurrent import fused_recurrent_simple_gla
from .naive import naive_recurrent_linear

B, T, H, K, V = 2, 37, 2, 32, 48


def _qkv(device, dtype):
    return dict(q=torch.randn(B, T, H, K, device=device).to(dtype),
                k=(torch.randn(B, T, H, K, device=device) * K ** -0.5).to(dtype),
                v=torch.randn(B, T, H, V, device=device).to(dtype),
                initial_state=torch.randn(B, H, K, V, device=device) * 0.1,
                output_final_state=True)


def _log_decay(*shape, device):
    return torch.empty(*shape, device=device).uniform_(0.8, 0.999).log()


def _simple_gla_inputs(device, dtype):
    return dict(_qkv(device, dtype), g=_log_decay(B, T, H, device=device))


def _gla_inputs(device, dtype):
    return dict(_qkv(device, dtype), gk=_log_decay(B, T, H, K, device=device),
                gv=_log_decay(B, T, H, V, device=device))


def _retention_ref(q, k, v, **kw):
    return naive_recurrent_linear(q, k, v, g_gamma=retention_log_decay(q.shape[2], q.device), **kw)


register_probe("fused_recurrent_simple_gla", fn=fused_recurrent_simple_gla, ref=naive_recurrent_linear,
               make_inputs=_simple_gla_inputs, grad_inputs=("q", "k", "v", "g", "initial_state"))
register_probe("fused_recurrent_gla", fn=fused_recurrent_gla, ref=naive_recurrent_linear,
               make_inputs=_gla_inputs, grad_inputs=("q", "k", "v", "gk", "gv", "initial_state"))
register_probe("fused_recurrent_retention", fn=fused_recurrent_retention, ref=_retention_ref,
               make_inputs=_qkv, grad_inputs=("q", "k", "v", "initial_state"))
register_probe("fused_recurrent_linear_attn", fn=fused_recurrent_linear_attn, ref=naive_recurrent_linear,
               make_inputs=_qkv, grad_inputs=("q", "k", "v", "initial_state"))
