"""The two entry points every delta-rule family's public functions call.

``delta_chunk_op``: validate + in-op transforms, then the Triton chunk kernels (GPU, or the
interpreter) or the vectorised torch chunk path (CPU).
``delta_recurrent_op``: validate (no host syncs), then the fused recurrent kernel with the in-op
transforms inside the kernel; the torch path on CPU.
"""
from __future__ import annotations

import torch

from ..utils.backend import use_triton
from .delta_chunk import DeltaChunkFunction, finish_state, l2norm, prepare_delta_inputs
from .delta_recurrent import FusedRecurrentDeltaFunction, fused_recurrent_delta_fwd
from .delta_torch import torch_chunk_delta

_IGNORED = {"cu_seqlens_cpu", "chunk_indices", "cp_context"}
_KNOWN = {"use_gate_in_kernel", "A_log", "dt_bias", "use_beta_sigmoid_in_kernel", "allow_neg_eigval",
          "state_v_first", "chunk_size", "inplace_final_state"}


def _check_kwargs(kwargs):
    if "head_first" in kwargs:
        raise ValueError("head_first is not supported: inputs are [B, T, H, ...] (sequence first)")
    for key in kwargs:
        if key not in _KNOWN and key not in _IGNORED:
            raise ValueError(f"unexpected keyword argument {key!r}")


def _check_p(p, k, l2):
    """Comba's erase key: same shape as k; l2-normalised with q/k when asked."""
    if p is None:
        return None
    if not isinstance(p, torch.Tensor) or tuple(p.shape) != tuple(k.shape):
        raise ValueError(f"p must have the shape of k {tuple(k.shape)}, got "
                         f"{tuple(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__}")
    return l2norm(p).contiguous() if l2 else p.contiguous()


def delta_chunk_op(q, k, v, beta, g, *, gated, allow_gva, scale, initial_state, output_final_state,
                   cu_seqlens, use_qk_l2norm_in_kernel=False, p=None, **kwargs):
    _check_kwargs(kwargs)
    p = _check_p(p, k, use_qk_l2norm_in_kernel)
    state_v_first = kwargs.get("state_v_first", False)
    q, k, v, beta, g, scale, h0 = prepare_delta_inputs(
        q, k, v, beta, g, gated=gated, allow_gva=allow_gva, initial_state=initial_state,
        cu_seqlens=cu_seqlens, scale=scale, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
        use_gate_in_kernel=kwargs.get("use_gate_in_kernel", False), A_log=kwargs.get("A_log"),
        dt_bias=kwargs.get("dt_bias"), use_beta_sigmoid_in_kernel=kwargs.get("use_beta_sigmoid_in_kernel", False),
        allow_neg_eigval=kwargs.get("allow_neg_eigval", False), state_v_first=state_v_first,
        chunk_size=kwargs.get("chunk_size", 64))
    if use_triton(q):
        o, ht = DeltaChunkFunction.apply(q, k, v, beta, g, scale, h0, output_final_state, cu_seqlens, p)
    else:
        o, ht = torch_chunk_delta(q, k, v, beta, g, scale, h0, output_final_state, cu_seqlens, p=p)
    return o, finish_state(ht, state_v_first)


def delta_recurrent_op(q, k, v, beta, g, *, gated, allow_gva, scale, initial_state, output_final_state,
                       cu_seqlens, use_qk_l2norm_in_kernel=False, p=None, **kwargs):
    _check_kwargs(kwargs)
    state_v_first = kwargs.get("state_v_first", False)
    gate_in = bool(kwargs.get("use_gate_in_kernel", False))
    beta_sig = bool(kwargs.get("use_beta_sigmoid_in_kernel", False))
    beta_scale = 2.0 if (beta_sig and kwargs.get("allow_neg_eigval", False)) else 1.0
    inplace = bool(kwargs.get("inplace_final_state", False))
    A_log, dt_bias = kwargs.get("A_log"), kwargs.get("dt_bias")
    common = dict(gated=gated, allow_gva=allow_gva, initial_state=initial_state, cu_seqlens=cu_seqlens,
                  scale=scale, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, use_gate_in_kernel=gate_in,
                  A_log=A_log, dt_bias=dt_bias, use_beta_sigmoid_in_kernel=beta_sig,
                  allow_neg_eigval=kwargs.get("allow_neg_eigval", False), state_v_first=state_v_first)
    if not use_triton(q):
        p = _check_p(p, k, use_qk_l2norm_in_kernel)
        q, k, v, beta, g, scale, h0 = prepare_delta_inputs(q, k, v, beta, g, **common)
        o, ht = torch_chunk_delta(q, k, v, beta, g, scale, h0, output_final_state, cu_seqlens, p=p)
        return o, finish_state(ht, state_v_first)
    q, k, v, beta, g, scale, h0 = prepare_delta_inputs(q, k, v, beta, g, transform=False,
                                                       light_varlen_check=True, **common)
    if inplace and state_v_first:
        raise ValueError("inplace_final_state needs state_v_first=False (state [N, HV, K, V])")
    if inplace:
        h0 = initial_state  # update the caller's tensor itself
    opts = dict(gate_in_kernel=gate_in, beta_sigmoid=beta_sig, beta_scale=beta_scale,
                l2norm=bool(use_qk_l2norm_in_kernel), inplace_final_state=inplace)
    p = _check_p(p, k, False)  # the kernel normalises p with q, k
    tensors = (q, k, v, beta, g, A_log, dt_bias, h0, p)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        o, ht = FusedRecurrentDeltaFunction.apply(*tensors, scale, output_final_state, cu_seqlens, opts)
    else:
        o, ht = fused_recurrent_delta_fwd(q, k, v, beta, g, scale, h0, output_final_state, cu_seqlens,
                                          A_log=A_log, dt_bias=dt_bias, p=p, **opts)
    return o, finish_state(ht, state_v_first)
