"""The two entry points every delta-rule family's public functions call.

``delta_chunk_op``: validate + in-op transforms, then the Triton chunk kernels (GPU, or the
interpreter) or the vectorised torch chunk path (CPU).
``delta_recurrent_op``: validate (no host syncs), then the fused recurrent kernel with the in-op
transforms inside the kernel; the torch path on CPU.
"""
from __future__ import annotations

import torch

from ..utils.backend import use_triton
from ..utils.validate import MAX_HEAD_DIM
from .delta_chunk import delta_chunk_apply, finish_state, l2norm, prepare_delta_inputs
from .delta_recurrent import FusedRecurrentDeltaFunction, fused_recurrent_delta_fwd
from .delta_torch import torch_chunk_delta

_IGNORED = {"cu_seqlens_cpu", "chunk_indices", "cp_context"}
# Largest value head dim one launch handles. The chunk kernels block over V (64 columns per block), so
# one call takes flame's Gated DeltaNet 340M head_v 512; 512 is the widest verified on the H100 (on
# 2026-11-22 one V=512 call ran the 340M layer's fwd+bwd in 2.03 ms vs 3.64 ms as two V=256 calls,
# gradients equal to bf16 rounding: the split repeats the WY transform and every q/k-side product).
# The recurrent (decoding) kernel keeps V in registers and takes 256. Wider V is split into column
# slices: every value column of the state evolves independently (S[:, j] is updated by
# beta * k * (v_j - k^T S[:, j])), and w/A do not depend on v, so running the op on slices of v and
# concatenating o and the final state is exact; autograd sums the slices' contributions to q, k, beta, g.
CHUNK_MAX_V = 512
RECURRENT_MAX_V = 256
_KNOWN = {"use_gate_in_kernel", "A_log", "dt_bias", "use_beta_sigmoid_in_kernel", "allow_neg_eigval",
          "state_v_first", "chunk_size", "inplace_final_state"}
_ALLOWED = frozenset(_KNOWN | _IGNORED)
# the recurrent fast path takes value head dims that need neither a split nor a ValueError
_FAST_MAX_V = min(MAX_HEAD_DIM, RECURRENT_MAX_V)


def _check_kwargs(kwargs):
    if _ALLOWED.issuperset(kwargs):  # the common case in one set operation (decode calls pass ~6 keys)
        return
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


def _split_over_v(op, limit, q, k, v, beta, g, initial_state, output_final_state, kwargs, rest):
    """Run ``op`` on value-column slices of at most ``limit`` and join the results (see above)."""
    if kwargs.get("inplace_final_state"):
        raise ValueError(f"inplace_final_state supports a value head dim up to {limit}, got {v.shape[-1]}")
    state_v_first = kwargs.get("state_v_first", False)
    vdim = -2 if state_v_first else -1
    if initial_state is not None and (not isinstance(initial_state, torch.Tensor) or initial_state.dim() != 4
                                      or initial_state.shape[vdim] != v.shape[-1]):
        raise ValueError(f"initial_state must be [N, HV, {'V, K' if state_v_first else 'K, V'}] with "
                         f"V={v.shape[-1]}, got {tuple(initial_state.shape) if isinstance(initial_state, torch.Tensor) else initial_state}")
    v_parts = v.split(limit, dim=-1)
    h_parts = initial_state.split(limit, dim=vdim) if initial_state is not None else [None] * len(v_parts)
    outs = [op(q, k, vi, beta, g, initial_state=hi, output_final_state=output_final_state, **rest, **kwargs)
            for vi, hi in zip(v_parts, h_parts)]
    o = torch.cat([x[0] for x in outs], dim=-1)
    ht = torch.cat([x[1] for x in outs], dim=vdim) if output_final_state else None
    return o, ht


def _needs_v_split(v, limit) -> bool:
    return isinstance(v, torch.Tensor) and v.dim() == 4 and v.shape[-1] > limit


def delta_chunk_op(q, k, v, beta, g, *, gated, allow_gva, scale, initial_state, output_final_state,
                   cu_seqlens, use_qk_l2norm_in_kernel=False, p=None, **kwargs):
    _check_kwargs(kwargs)
    if _needs_v_split(v, CHUNK_MAX_V):
        rest = dict(gated=gated, allow_gva=allow_gva, scale=scale, cu_seqlens=cu_seqlens,
                    use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, p=p)
        return _split_over_v(delta_chunk_op, CHUNK_MAX_V, q, k, v, beta, g, initial_state, output_final_state,
                             kwargs, rest)
    p = _check_p(p, k, use_qk_l2norm_in_kernel)
    state_v_first = kwargs.get("state_v_first", False)
    q, k, v, beta, g, scale, h0 = prepare_delta_inputs(
        q, k, v, beta, g, gated=gated, allow_gva=allow_gva, initial_state=initial_state,
        cu_seqlens=cu_seqlens, scale=scale, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
        use_gate_in_kernel=kwargs.get("use_gate_in_kernel", False), A_log=kwargs.get("A_log"),
        dt_bias=kwargs.get("dt_bias"), use_beta_sigmoid_in_kernel=kwargs.get("use_beta_sigmoid_in_kernel", False),
        allow_neg_eigval=kwargs.get("allow_neg_eigval", False), state_v_first=state_v_first,
        chunk_size=kwargs.get("chunk_size", 64), max_v=CHUNK_MAX_V)
    if use_triton(q):
        o, ht = delta_chunk_apply(q, k, v, beta, g, scale, h0, output_final_state, cu_seqlens, p)
    else:
        o, ht = torch_chunk_delta(q, k, v, beta, g, scale, h0, output_final_state, cu_seqlens, p=p)
    return o, finish_state(ht, state_v_first)


def _vec_ok(t, n, dev) -> bool:
    """t is a floating [n] tensor on dev (A_log, dt_bias)."""
    return isinstance(t, torch.Tensor) and t.shape == (n,) and t.is_floating_point() and t.device == dev


def _fast_recurrent_valid(q, k, v, beta, g, h0, gated, allow_gva, gate_in, A_log, dt_bias) -> bool:
    """Cheap all-good check for the decoding hot path (cu_seqlens None, state [N, HV, K, V]): every
    condition ``prepare_delta_inputs`` checks, written as few tensor-attribute reads as possible
    (each costs ~0.1-0.2 µs; its per-argument checks add up to several µs at T=1). It accepts only
    what that accepts, so anything else falls through to it and gets its ValueError."""
    if not (isinstance(q, torch.Tensor) and isinstance(k, torch.Tensor) and isinstance(v, torch.Tensor)
            and isinstance(beta, torch.Tensor)):
        return False  # includes beta None: prepare_delta_inputs fills in ones
    shape, v_shape = q.shape, v.shape
    if len(shape) != 4 or len(v_shape) != 4 or k.shape != shape:
        return False
    B, T, H, K = shape
    Bv, Tv, HV, V = v_shape
    if Bv != B or Tv != T or H < 1 or (HV % H if allow_gva else HV != H):
        return False
    if not (0 < K <= MAX_HEAD_DIM and 0 < V <= _FAST_MAX_V):
        return False
    if not (q.is_floating_point() and k.is_floating_point() and v.is_floating_point()
            and beta.is_floating_point()):
        return False
    dev = q.device
    if k.device != dev or v.device != dev or beta.device != dev or beta.shape != (B, T, HV):
        return False
    if gated:
        if not (isinstance(g, torch.Tensor) and g.shape == (B, T, HV) and g.is_floating_point()
                and g.device == dev):
            return False
    elif g is not None:
        return False
    if h0 is not None and not (isinstance(h0, torch.Tensor) and h0.shape == (B, HV, K, V) and h0.device == dev):
        return False
    if gate_in and not (_vec_ok(A_log, HV, dev) and (dt_bias is None or _vec_ok(dt_bias, HV, dev))):
        return False
    return True


def delta_recurrent_op(q, k, v, beta, g, *, gated, allow_gva, scale, initial_state, output_final_state,
                       cu_seqlens, use_qk_l2norm_in_kernel=False, p=None, **kwargs):
    # This is the decode step (T=1), where host time is most of a call's cost on the GPU: the
    # common case (no cu_seqlens, state [N, HV, K, V], no grad) takes a short path with a cheap
    # validation and no dicts; anything unusual goes through the full checks.
    _check_kwargs(kwargs)
    get = kwargs.get
    state_v_first = get("state_v_first", False)
    gate_in = bool(get("use_gate_in_kernel", False))
    beta_sig = bool(get("use_beta_sigmoid_in_kernel", False))
    neg_eig = get("allow_neg_eigval", False)
    beta_scale = 2.0 if (beta_sig and neg_eig) else 1.0
    inplace = bool(get("inplace_final_state", False))
    A_log, dt_bias = get("A_log"), get("dt_bias")
    triton_path = use_triton(q)
    if (triton_path and cu_seqlens is None and not state_v_first
            and _fast_recurrent_valid(q, k, v, beta, g, initial_state, gated, allow_gva, gate_in, A_log, dt_bias)):
        # what prepare_delta_inputs(transform=False) returns; .contiguous() is free when already so
        q, k, v, beta = q.contiguous(), k.contiguous(), v.contiguous(), beta.contiguous()
        if g is not None:
            g = g.contiguous()
        scale = q.shape[3] ** -0.5 if scale is None else float(scale)
        h0 = initial_state.contiguous() if initial_state is not None else None
    else:
        if _needs_v_split(v, RECURRENT_MAX_V):  # (never true on the fast path: V <= _FAST_MAX_V there)
            rest = dict(gated=gated, allow_gva=allow_gva, scale=scale, cu_seqlens=cu_seqlens,
                        use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, p=p)
            return _split_over_v(delta_recurrent_op, RECURRENT_MAX_V, q, k, v, beta, g, initial_state,
                                 output_final_state, kwargs, rest)
        common = dict(gated=gated, allow_gva=allow_gva, initial_state=initial_state, cu_seqlens=cu_seqlens,
                      scale=scale, use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, use_gate_in_kernel=gate_in,
                      A_log=A_log, dt_bias=dt_bias, use_beta_sigmoid_in_kernel=beta_sig,
                      allow_neg_eigval=neg_eig, state_v_first=state_v_first)
        if not triton_path:
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
    if p is not None:
        p = _check_p(p, k, False)  # the kernel normalises p with q, k
    l2 = bool(use_qk_l2norm_in_kernel)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                       for t in (q, k, v, beta, g, A_log, dt_bias, h0, p)):
        opts = dict(gate_in_kernel=gate_in, beta_sigmoid=beta_sig, beta_scale=beta_scale, l2norm=l2,
                    inplace_final_state=inplace)
        o, ht = FusedRecurrentDeltaFunction.apply(q, k, v, beta, g, A_log, dt_bias, h0, p, scale,
                                                  output_final_state, cu_seqlens, opts)
    else:  # inference (decoding): no autograd bookkeeping
        o, ht = fused_recurrent_delta_fwd(q, k, v, beta, g, scale, h0, output_final_state, cu_seqlens,
                                          gate_in_kernel=gate_in, A_log=A_log, dt_bias=dt_bias,
                                          beta_sigmoid=beta_sig, beta_scale=beta_scale, l2norm=l2,
                                          inplace_final_state=inplace, p=p)
    return o, finish_state(ht, state_v_first)
