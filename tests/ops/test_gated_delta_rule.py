"""chunk_gated_delta_rule / fused_recurrent_gated_delta_rule vs the oracle: GVA, K != V, varlen,
gate and beta from logits, l2norm in the op, every gradient (incl. g, A_log, dt_bias, h0), and a
numerical stress test of the intra-chunk triangular solve (beta ~ 1, correlated keys, strong decay).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import DEVICE, DTYPE, ON_GPU, assert_close, tol, uneven_cu_seqlens

from flactl.ops.gated_delta_rule import (chunk_gated_delta_rule, fused_recurrent_gated_delta_rule,
                                         naive_recurrent_gated_delta_rule)
from flactl.ops.utils import force_backend

MODES = {"chunk": chunk_gated_delta_rule, "fused_recurrent": fused_recurrent_gated_delta_rule}


def _inputs(B, T, H, HV, K, V, N=None, logits=False, beta_range=(0.0, 1.0), glow=-0.3, corr=0.0):
    k = torch.randn(B, T, H, K, device=DEVICE)
    if corr:
        k = (1 - corr) * k + corr * torch.randn(1, 1, H, K, device=DEVICE)
    x = dict(q=torch.randn(B, T, H, K, device=DEVICE).to(DTYPE),
             k=(k if logits else F.normalize(k, dim=-1)).to(DTYPE),
             v=torch.randn(B, T, HV, V, device=DEVICE).to(DTYPE))
    if logits:
        x["g"] = torch.randn(B, T, HV, device=DEVICE).to(DTYPE)
        x["beta"] = torch.randn(B, T, HV, device=DEVICE).to(DTYPE)
        x["A_log"] = torch.rand(HV, device=DEVICE).log()
        x["dt_bias"] = torch.randn(HV, device=DEVICE)
    else:
        x["g"] = torch.empty(B, T, HV, device=DEVICE).uniform_(glow, 0.0)
        x["beta"] = torch.empty(B, T, HV, device=DEVICE).uniform_(*beta_range).to(DTYPE)
    x["initial_state"] = torch.randn(N or B, HV, K, V, device=DEVICE)
    return {n: t.requires_grad_() for n, t in x.items()}


def _run(fn, x, **kw):
    for t in x.values():
        t.grad = None
    o, ht = fn(**x, output_final_state=True, **kw)
    gen = torch.Generator(device=DEVICE).manual_seed(7)
    do = torch.randn(o.shape, device=DEVICE, generator=gen)
    dht = torch.randn(ht.shape, device=DEVICE, generator=gen)
    torch.autograd.backward([o.float(), ht], [do, dht])
    return o, ht, {n: t.grad.clone() for n, t in x.items()}


def _compare(fn, x, t_o=None, t_g=None, **kw):
    o, ht, g = _run(fn, x, **kw)
    ro, rht, rg = _run(naive_recurrent_gated_delta_rule, x, **kw)
    assert_close("o", ro, o, t_o or tol(2e-4, 8e-3))
    assert_close("final_state", rht, ht, t_o or tol(2e-4, 8e-3))
    for n in x:
        assert_close(f"d{n}", rg[n], g[n], t_g or tol(5e-4, 2e-2))


@pytest.mark.parametrize("mode,T", [("chunk", 65), ("chunk", 130), ("fused_recurrent", 63)])
def test_gva_vs_naive(mode, T, nan_poison):
    _compare(MODES[mode], _inputs(1, T, 1, 2, 32, 16))


@pytest.mark.parametrize("mode", ["chunk", "fused_recurrent"])
def test_varlen_logits_l2norm(mode, nan_poison):
    lens = [1, 65, 30]
    x = _inputs(1, sum(lens), 1, 2, 16, 16, N=len(lens), logits=True)
    _compare(MODES[mode], x, cu_seqlens=uneven_cu_seqlens(lens), use_qk_l2norm_in_kernel=True,
             use_gate_in_kernel=True, use_beta_sigmoid_in_kernel=True)


def test_state_v_first_and_neg_eigval():
    x = _inputs(1, 40, 1, 1, 16, 32, logits=True)
    x2 = dict(x, initial_state=x["initial_state"].transpose(-1, -2))  # [N, HV, V, K]
    o, ht = chunk_gated_delta_rule(**x2, output_final_state=True, use_gate_in_kernel=True,
                                   use_beta_sigmoid_in_kernel=True, allow_neg_eigval=True, state_v_first=True,
                                   use_qk_l2norm_in_kernel=True)
    ro, rht = naive_recurrent_gated_delta_rule(**x, output_final_state=True, use_gate_in_kernel=True,
                                               use_beta_sigmoid_in_kernel=True, allow_neg_eigval=True,
                                               use_qk_l2norm_in_kernel=True)
    assert ht.shape == x2["initial_state"].shape
    assert_close("o", ro, o, tol(2e-4, 8e-3))
    assert_close("final_state", rht.transpose(-1, -2), ht, tol(2e-4, 8e-3))


@pytest.mark.parametrize("glow", [-0.02, -8.0])
def test_stress_solve(glow):
    """beta ~ 1, strongly correlated keys (ill-conditioned I + L), weak or very strong decays."""
    T = 512 if ON_GPU else 130
    x = _inputs(1, T, 1, 1, 64 if ON_GPU else 32, 32, beta_range=(0.95, 1.0), glow=glow, corr=0.7)
    _compare(chunk_gated_delta_rule, x, t_o=tol(1e-3, 2e-2), t_g=tol(3e-3, 5e-2))


@pytest.mark.parametrize("mode", ["chunk", "fused_recurrent"])
def test_torch_path(mode):
    lens = [1, 63, 65, 130]
    with force_backend("torch"):
        _compare(MODES[mode], _inputs(1, sum(lens), 2, 4, 32, 16, N=len(lens), logits=True),
                 cu_seqlens=uneven_cu_seqlens(lens), use_gate_in_kernel=True, use_beta_sigmoid_in_kernel=True,
                 use_qk_l2norm_in_kernel=True)
        _compare(MODES[mode], _inputs(2, 65, 1, 2, 16, 32))


@pytest.mark.gpu
def test_decode_inplace_and_graph():
    x = {n: t.detach() for n, t in _inputs(4, 1, 2, 4, 64, 64, logits=True).items()}
    h = x.pop("initial_state").contiguous()
    kw = dict(use_gate_in_kernel=True, use_beta_sigmoid_in_kernel=True, use_qk_l2norm_in_kernel=True)
    ro, rht = fused_recurrent_gated_delta_rule(**x, initial_state=h, output_final_state=True, **kw)
    hh = h.clone()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        o, ht = fused_recurrent_gated_delta_rule(**x, initial_state=hh, output_final_state=True,
                                                 inplace_final_state=True, **kw)
    hh.copy_(h)
    graph.replay()
    torch.cuda.synchronize()
    assert ht.data_ptr() == hh.data_ptr()
    assert_close("o", ro, o, 1e-3)
    assert_close("state", rht, hh, 1e-4)


def test_bad_inputs():
    x = {n: t.detach() for n, t in _inputs(1, 8, 2, 4, 16, 16).items()}
    q, k, v, g, beta = x["q"], x["k"], x["v"], x["g"], x["beta"]
    with pytest.raises(ValueError, match="v heads"):
        chunk_gated_delta_rule(q, k, v[:, :, :3], g[:, :, :3], beta[:, :, :3])
    with pytest.raises(ValueError, match="beta"):
        chunk_gated_delta_rule(q, k, v, g, beta[:, :, :2])
    with pytest.raises(ValueError, match="g"):
        chunk_gated_delta_rule(q, k, v, g[:, :, :2], beta)
    with pytest.raises(ValueError, match="g"):
        fused_recurrent_gated_delta_rule(q, k, v, None, beta)
    with pytest.raises(ValueError, match="A_log"):
        chunk_gated_delta_rule(q, k, v, g, beta, use_gate_in_kernel=True)
    with pytest.raises(ValueError, match="A_log"):
        chunk_gated_delta_rule(q, k, v, g, beta, use_gate_in_kernel=True, A_log=torch.zeros(2, device=DEVICE))
    with pytest.raises(ValueError, match="initial_state"):
        fused_recurrent_gated_delta_rule(q, k, v, g, beta, initial_state=x["initial_state"][:, :2])
    with pytest.raises(ValueError, match="head_first"):
        chunk_gated_delta_rule(q, k, v, g, beta, head_first=False)


@pytest.mark.parametrize("mode,V", [("chunk", 300), ("chunk", 520), ("fused_recurrent", 300)])
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_wide_value_heads(mode, V, backend, nan_poison):
    """V > 256 (flame's Gated DeltaNet 340M uses head_v 512): the chunk kernels take up to 512 in one call
    (they block over V); wider V, and V > 256 in the recurrent kernel, run as exact column slices."""
    x = _inputs(1, 33, 1, 2, 16, V, logits=True)
    if backend == "torch" and ON_GPU:
        pytest.skip("the torch path is for CPU tensors")
    with force_backend(backend):
        _compare(MODES[mode], x, use_gate_in_kernel=True, use_beta_sigmoid_in_kernel=True,
                 use_qk_l2norm_in_kernel=True)


def test_value_head_dim_split_rejects_inplace_and_bad_state():
    x = _inputs(1, 4, 1, 1, 16, 300)
    with pytest.raises(ValueError, match="inplace_final_state"):
        fused_recurrent_gated_delta_rule(**{n: t.detach() for n, t in x.items()}, inplace_final_state=True)
    bad = {n: t.detach() for n, t in x.items()}
    bad["initial_state"] = bad["initial_state"][..., :299]
    with pytest.raises(ValueError, match="initial_state"):
        chunk_gated_delta_rule(**bad)


def _no_separate_output_kernel(*a, **kw):
    raise AssertionError("the separate output kernel ran: the fused walk was expected")


@pytest.mark.parametrize("K,V,BV", [(32, 16, None), (128, 40, 32), (128, 40, 64)])
def test_output_fused_into_walk(K, V, BV, monkeypatch, nan_poison):
    """The state walk that also writes the outputs (no h round trip; by default only ungated calls
    without grad take it, here forced on for gated calls with and without grad): without grad equal
    to the two-kernel forward; with grad, outputs and every gradient vs the oracle. Varlen with uneven
    lengths, grouped value heads, K up to two 64-row state tiles, both widths of the value slab."""
    from flactl.ops.common import delta_chunk, delta_h
    lens = [1, 65, 70]
    cu = uneven_cu_seqlens(lens)
    x = _inputs(1, sum(lens), 1, 2, K, V, N=len(lens))
    plain = {n: t.detach() for n, t in x.items()}
    monkeypatch.setitem(delta_h.FWD_H_LAUNCH, "BV", BV)
    monkeypatch.setitem(delta_chunk.FUSED_OUTPUT, "inference", False)
    ref_o, ref_ht = chunk_gated_delta_rule(**plain, output_final_state=True, cu_seqlens=cu)
    for mode in ("inference", "train", "gated"):
        monkeypatch.setitem(delta_chunk.FUSED_OUTPUT, mode, True)
    with monkeypatch.context() as m:
        m.setattr(delta_chunk, "fwd_o", _no_separate_output_kernel)
        o, ht = chunk_gated_delta_rule(**plain, output_final_state=True, cu_seqlens=cu)
        assert_close("o (fused, no grad)", ref_o.float(), o.float(), tol(1e-5, 1e-2))
        assert_close("final_state (fused, no grad)", ref_ht, ht, tol(1e-5, 1e-2))
        _compare(chunk_gated_delta_rule, x, cu_seqlens=cu)


def test_no_grad_call_takes_the_fused_walk(monkeypatch):
    """Default route: an ungated call under torch.no_grad() whose inputs require grad (a model in eval
    or generate) takes the fused walk; ctx.needs_input_grad ignores grad mode, so only the caller can
    tell (delta_chunk_apply)."""
    from flactl.ops.common import delta_chunk
    from flactl.ops.delta_rule import chunk_delta_rule
    x = _inputs(1, 70, 1, 1, 32, 16)
    del x["g"]
    o_grad, _ = chunk_delta_rule(**x)
    monkeypatch.setattr(delta_chunk, "fwd_o", _no_separate_output_kernel)
    with torch.no_grad():
        o, _ = chunk_delta_rule(**x)
    assert_close("o (no grad, fused) vs o (grad, two kernels)", o_grad.detach().float(), o.float(), tol(1e-5, 1e-2))
