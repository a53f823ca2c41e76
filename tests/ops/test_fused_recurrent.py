"""fused_recurrent (generic kernel) and its simple_gla / retention / linear_attn / gla wrappers vs the
float32 token-by-token reference ``naive_recurrent_linear``: outputs, final states, every gradient.

CPU: Triton interpreter in float32 (plus the torch path). ``FLACTL_TEST_DEVICE=cuda``: bf16 on the GPU.
"""
from __future__ import annotations

import pytest
import torch
from helpers import DEVICE, DTYPE, ON_GPU, assert_close, log_decay, randn, tol, uneven_cu_seqlens

from flactl.ops.common.fused_recurrent import fused_recurrent
from flactl.ops.common.naive import naive_recurrent_linear
from flactl.ops.gla.fused_recurrent import fused_recurrent_gla
from flactl.ops.linear_attn.fused_recurrent import fused_recurrent_linear_attn
from flactl.ops.retention.fused_recurrent import fused_recurrent_retention, retention_log_decay
from flactl.ops.simple_gla.fused_recurrent import fused_recurrent_simple_gla
from flactl.ops.utils import force_backend

H, K, V = 2, 12, 20  # K != V, neither a power of two (masks), V spans two V blocks


def _make(gates, B, T, lens=None, h0=True, H=H, K=K, V=V):
    cu = uneven_cu_seqlens(lens) if lens else None
    if lens:
        B, T = 1, sum(lens)
    N = len(lens) if lens else B
    ins = dict(q=randn(B, T, H, K), k=randn(B, T, H, K, scale=K ** -0.5), v=randn(B, T, H, V))
    gates = set(gates.split("+"))
    if "g" in gates:
        ins["g"] = log_decay(B, T, H, low=0.8)
    if "g_gamma" in gates:
        ins["g_gamma"] = log_decay(H, low=0.8)
    if "gk" in gates:
        ins["gk"] = log_decay(B, T, H, K, low=0.7)
    if "gv" in gates:
        ins["gv"] = log_decay(B, T, H, V, low=0.7)
    if h0:
        ins["initial_state"] = randn(N, H, K, V, dtype=torch.float32, scale=0.5)
    for t in ins.values():
        t.requires_grad_(True)
    return ins, cu


def _run(fn, ins, cu, reverse, seed=1, **extra):
    """Forward + backward with fixed random cotangents for o and the final state."""
    o, ht = fn(**ins, output_final_state=True, reverse=reverse, cu_seqlens=cu, **extra)
    gen = torch.Generator(device=o.device).manual_seed(seed)
    do = torch.randn(o.shape, generator=gen, device=o.device).to(o.dtype)
    dht = torch.randn(ht.shape, generator=gen, device=o.device)
    grads = torch.autograd.grad((o.float() * do.float()).sum() + (ht * dht).sum(), list(ins.values()))
    return [o, ht, *grads]


def _compare(ins, cu, reverse, fn=fused_recurrent, ref=naive_recurrent_linear, **extra):
    ref_ins = {k: v.detach().float().requires_grad_(True) for k, v in ins.items()}
    want = _run(ref, ref_ins, cu, reverse, **extra)
    got = _run(fn, ins, cu, reverse, **extra)
    names = ["o", "ht"] + [f"d{k}" for k in ins]
    for name, r, g in zip(names, want, got):
        t = tol(2e-5, 6e-3) if name in ("o", "ht") else tol(5e-5, 1.2e-2)
        assert_close(name, r, g, t)


# (gates, B, T, varlen lengths, reverse, initial state, heads). The interpreter runs every program
# of the grid in Python, so the long sequences use one head (one program) and the many-program
# cases (two heads, V split into two blocks) stay short.
CASES = [
    ("g", 1, 63, None, False, True, 1),
    ("g_gamma", 1, 65, None, True, True, 1),
    ("gk+gv", 1, 65, None, False, False, 1),
    ("g+g_gamma+gk+gv", 1, 63, None, True, True, 1),
    ("gk", 2, 1, None, False, True, 2),
    ("g+g_gamma+gk+gv", 2, 9, None, True, True, 2),
    ("", 2, 7, None, False, True, 2),
    ("g+g_gamma+gk+gv", 1, 0, [1, 9, 5], False, True, 2),
    ("gk+gv", 1, 0, [6, 1, 11], True, True, 2),
    ("g", 1, 0, [1, 1, 5], False, False, 2),
]


@pytest.mark.parametrize("gates,B,T,lens,reverse,h0,heads", CASES)
def test_fused_recurrent_triton(gates, B, T, lens, reverse, h0, heads, nan_poison):
    ins, cu = _make(gates, B, T, lens, h0, H=heads, V=V if heads > 1 else 16)
    with force_backend("triton"):
        _compare(ins, cu, reverse)


@pytest.mark.skipif(ON_GPU, reason="the torch path is the CPU backend")
@pytest.mark.parametrize("gates,B,T,lens,reverse,h0,heads", [CASES[3], CASES[5], CASES[7], CASES[8]])
def test_fused_recurrent_torch_path(gates, B, T, lens, reverse, h0, heads):
    ins, cu = _make(gates, B, T, lens, h0, H=heads)
    with force_backend("torch"):
        _compare(ins, cu, reverse)


def test_no_grad_path_and_state_v_first():
    """The inference path (no autograd) gives the same numbers; state_v_first transposes states."""
    ins, _ = _make("g+gk", 2, 7)
    with force_backend("triton"):
        o1, h1 = fused_recurrent(**ins, output_final_state=True)
        with torch.no_grad():
            o2, h2 = fused_recurrent(**ins, output_final_state=True)
            h0t = ins["initial_state"].transpose(-1, -2).contiguous()
            o3, h3 = fused_recurrent(**dict(ins, initial_state=h0t), output_final_state=True, state_v_first=True)
    assert torch.equal(o1.detach(), o2) and torch.equal(h1.detach(), h2)
    assert_close("o (state_v_first)", o2, o3, 1e-6)
    assert_close("ht (state_v_first)", h2.transpose(-1, -2), h3, 1e-6)


def test_wrappers_vs_naive(nan_poison):
    B, T = 1, 5
    with force_backend("triton"):
        ins, _ = _make("g", B, T)
        _compare(ins, None, False, fn=fused_recurrent_simple_gla)
        ins, _ = _make("gk+gv", B, T)
        _compare(ins, None, True, fn=fused_recurrent_gla)
        ins, _ = _make("", B, T)

        def ret_ref(q, k, v, **kw):
            return naive_recurrent_linear(q, k, v, g_gamma=retention_log_decay(H, q.device), **kw)

        _compare(ins, None, False, fn=fused_recurrent_retention, ref=ret_ref)
        _compare(ins, None, False, fn=fused_recurrent_linear_attn)


def _normalized_ref(q, k, v, initial_state, z0, scale, cu, reverse):
    o, ht = naive_recurrent_linear(q, k, v, scale=scale, initial_state=initial_state, output_final_state=True,
                                   cu_seqlens=cu, reverse=reverse)
    o, z_fin = o.clone(), []
    bounds = cu.tolist()
    for n in range(len(bounds) - 1):
        z = z0[n, 0].clone()
        steps = range(bounds[n + 1] - 1, bounds[n] - 1, -1) if reverse else range(bounds[n], bounds[n + 1])
        for t in steps:
            z = z + k[0, t]
            o[0, t] = o[0, t] / ((q[0, t] * scale * z).sum(-1, keepdim=True) + 1e-10)
        z_fin.append(z[None])
    return o, ht, torch.stack(z_fin)


@pytest.mark.parametrize("reverse", [False, True])
def test_linear_attn_normalize_varlen(reverse):
    lens = [1, 6, 4]
    cu = uneven_cu_seqlens(lens)
    T = sum(lens)
    q, k = randn(1, T, H, K).abs(), randn(1, T, H, K).abs()  # positive features keep the denominator away from 0
    v = randn(1, T, H, V)
    h0, z0 = randn(3, H, K, V, dtype=torch.float32), randn(3, 1, H, K, dtype=torch.float32).abs()
    ref_o, ref_ht, ref_z = _normalized_ref(q.float(), k.float(), v.float(), h0, z0, K ** -0.5, cu, reverse)
    with force_backend("triton"):
        o, (ht, z) = fused_recurrent_linear_attn(q, k, v, initial_state=(h0, z0), output_final_state=True,
                                                 reverse=reverse, normalize=True, cu_seqlens=cu)
    assert_close("o", ref_o, o.float(), tol(1e-5, 6e-3))
    assert_close("ht", ref_ht, ht, tol(1e-5, 6e-3))
    assert_close("z", ref_z, z, tol(1e-5, 6e-3))


def test_bad_inputs():
    q, k, v = randn(2, 5, H, K), randn(2, 5, H, K), randn(2, 5, H, V)
    g = log_decay(2, 5, H)
    bad = [
        dict(q=q[0]),
        dict(k=randn(2, 5, H, K + 1)),
        dict(v=randn(2, 5, H + 1, V)),
        dict(g=log_decay(2, 5, H, 1)),
        dict(gk=log_decay(2, 5, H, V)),
        dict(gv=log_decay(2, 5, H, K)),
        dict(g_gamma=log_decay(2, H)),
        dict(initial_state=randn(3, H, K, V)),
        dict(initial_state=randn(2, H, V, K)),
        dict(cu_seqlens=uneven_cu_seqlens([2, 3])),  # B != 1
        dict(q=randn(1, 5, H, 300), k=randn(1, 5, H, 300), v=randn(1, 5, H, V)),  # head dim > 256
    ]
    for kw in bad:
        args = dict(q=q, k=k, v=v, g=g)
        args.update(kw)
        with pytest.raises(ValueError):
            fused_recurrent(**args)
    q1, k1, v1 = q[:1], k[:1], v[:1]
    for cu in ([1, 5], [0, 4], [0, 3, 2, 5], torch.tensor([0.0, 5.0])):
        cu = cu if isinstance(cu, torch.Tensor) else torch.tensor(cu, device=DEVICE)
        with pytest.raises(ValueError):
            fused_recurrent(q1, k1, v1, cu_seqlens=cu.to(DEVICE))
    with pytest.raises(ValueError):
        fused_recurrent_linear_attn(q, k, v, initial_state=(randn(2, H, K, V), randn(2, H, K)), normalize=True)
    with pytest.raises(ValueError):
        fused_recurrent_retention(q[0], k, v)


@pytest.mark.gpu
def test_decode_step_cuda_graph():
    """T=1 decoding with state in/out is capturable in a CUDA graph (no host syncs) and matches eager."""
    B, Hh, D = 4, 4, 64
    q, k, v = (randn(B, 1, Hh, D, dtype=DTYPE) for _ in range(3))
    g = log_decay(B, 1, Hh)
    h = randn(B, Hh, D, D, dtype=torch.float32)
    with torch.no_grad():
        o_ref, h_ref = fused_recurrent_simple_gla(q, k, v, g, initial_state=h, output_final_state=True)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(2):
                fused_recurrent_simple_gla(q, k, v, g, initial_state=h, output_final_state=True)
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            o_g, h_g = fused_recurrent_simple_gla(q, k, v, g, initial_state=h, output_final_state=True)
        graph.replay()
        torch.cuda.synchronize()
    assert torch.equal(o_g, o_ref) and torch.equal(h_g, h_ref)
