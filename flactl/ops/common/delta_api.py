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
# Largest value head dim one kernel launch handles. Larger V (e.g. flame's Gated DeltaNet 340M: head_v 512)
# is split into column slices: in the delta rule every value column of the state evolves independently
# (S[:, j] is updated by beta * k * (v_j - k^T S[:, j])), and w/A (the WY factors) do not depend on v, so
# running the op on slices of v and concatenating o and the final state is exact; autograd sums the
# slices' contributions to q, k, beta, g.
MAX_V_PER_CALL = 256
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


def _split_over_v(op, q, k, v, beta, g, initial_state, output_final_state, kwargs, rest):
    """Run ``op`` on value-column slices of at most MAX_V_PER_CALL and join the results (see above)."""
    if kwargs.get("inplace_final_state"):
        raise ValueError(f"inplace_final_state supports a value head dim up to {MAX_V_PER_CALL}, got {v.shape[-1]}")
    state_v_first = kwargs.get("state_v_first", False)
    vdim = -2 if state_v_first else -1
    if initial_state is not None and (not isinstance(initial_state, torch.Tensor) or initial_state.dim() != 4
                                      or initial_state.shape[vdim] != v.shape[-1]):
        raise ValueError(f"initial_state must be [N, HV, {'V, K' if state_v_first else 'K, V'}] with "
                         f"V={v.shape[-1]}, got {tuple(initial_state.shape) if isinstance(initial_state, torch.Tensor) else initial_state}")
    v_parts = v.split(MAX_V_PER_CALL, dim=-1)
    h_parts = initial_state.split(MAX_V_PER_CALL, dim=vdim) if initial_state is not None else [None] * len(v_parts)
    outs = [op(q, k, vi, beta, g, initial_state=hi, output_final_state=output_final_state, **rest, **kwargs)
            for vi, hi in zip(v_parts, h_parts)]
    o = torch.cat([x[0] for x in outs], dim=-1)
    ht = torch.cat([x[1] for x in outs], dim=vdim) if output_final_state else None
    return o, ht


def _needs_v_split(v) -> bool:
    return isinstance(v, torch.Tensor) and v.dim() == 4 and v.shape[-1] > MAX_V_PER_CALL


def delta_chunk_op(q, k, v, beta, g, *, gated, allow_gva, scale, initial_state, output_final_state,
                   cu_seqlens, use_qk_l2norm_in_kernel=False, p=None, **kwargs):
    _check_kwargs(kwargs)
    if _needs_v_split(v):
        rest = dict(gated=gated, allow_gva=allow_gva, scale=scale, cu_seqlens=cu_seqlens,
                    use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, p=p)
        return _split_over_v(delta_chunk_op, q, k, v, beta, g, initial_state, output_final_state, kwargs, rest)
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
    if _needs_v_split(v):
        rest = dict(gated=gated, allow_gva=allow_gva, scale=scale, cu_seqlens=cu_seqlens,
                    use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, p=p)
        return _split_over_v(delta_recurrent_op, q, k, v, beta, g, initial_state, output_final_state, kwargs, rest)
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
