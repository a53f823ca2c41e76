"""chunk_hgrn and fused_recurrent_hgrn vs the float32 reference ``naive_recurrent_hgrn``: outputs,
final states and the gradients of x, g and the initial state; varlen, odd T, the torch path."""
from __future__ import annotations

import pytest
import torch
from helpers import DEVICE, ON_GPU, assert_close, randn, tol, uneven_cu_seqlens

import flactl.ops.hgrn.fused_recurrent as fr
from flactl.ops.hgrn import chunk_hgrn, fused_recurrent_hgrn, naive_recurrent_hgrn
from flactl.ops.utils import force_backend


def token_by_token_hgrn(*args, **kwargs):
    """fused_recurrent_hgrn forced onto its token-by-token kernel at every length."""
    old, fr.TOKEN_KERNEL_MAX_T = fr.TOKEN_KERNEL_MAX_T, 10 ** 9
    try:
        return fused_recurrent_hgrn(*args, **kwargs)
    finally:
        fr.TOKEN_KERNEL_MAX_T = old


OPS = [chunk_hgrn, fused_recurrent_hgrn, token_by_token_hgrn]


def _inputs(B, T, D, lens=None, h0=True):
    cu = uneven_cu_seqlens(lens) if lens else None
    if lens:
        B, T = 1, sum(lens)
    N = len(lens) if lens else B
    x = randn(B, T, D)
    # forget gates in (0, 1), some close to 0 (strong decay) and some close to 1 (long memory)
    g = torch.nn.functional.logsigmoid(randn(B, T, D, dtype=torch.float32) * 2 + 2).to(x.dtype)
    ins = dict(x=x, g=g)
    if h0:
        ins["initial_state"] = randn(N, D, dtype=torch.float32)
    for t in ins.values():
        t.requires_grad_(True)
    return ins, cu


def _run(fn, ins, cu):
    o, ht = fn(**ins, output_final_state=True, cu_seqlens=cu)
    gen = torch.Generator(device=o.device).manual_seed(3)
    do = torch.randn(o.shape, generator=gen, device=o.device)
    dht = torch.randn(ht.shape, generator=gen, device=o.device)
    grads = torch.autograd.grad((o.float() * do).sum() + (ht * dht).sum(), list(ins.values()))
    return [o, ht, *grads]


def _compare(fn, ins, cu):
    ref_ins = {k: v.detach().float().requires_grad_(True) for k, v in ins.items()}
    want, got = _run(naive_recurrent_hgrn, ref_ins, cu), _run(fn, ins, cu)
    for name, r, g in zip(["o", "ht"] + [f"d{k}" for k in ins], want, got):
        assert_close(name, r, g, tol(2e-5, 6e-3) if name in ("o", "ht") else tol(5e-5, 1.2e-2))


CASES = [  # (B, T, D, lengths, initial state)
    (2, 1, 40, None, True),
    (2, 63, 40, None, True),
    (1, 65, 72, None, False),
    (1, 130, 24, None, True),
    (1, 0, 40, [1, 64, 70], True),
    (1, 0, 24, [65, 1, 3], False),
]


@pytest.mark.parametrize("fn", OPS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("B,T,D,lens,h0", CASES)
def test_hgrn_triton(fn, B, T, D, lens, h0, nan_poison):
    ins, cu = _inputs(B, T, D, lens, h0)
    with force_backend("triton"):
        _compare(fn, ins, cu)


@pytest.mark.skipif(ON_GPU, reason="the torch path is the CPU backend")
@pytest.mark.parametrize("B,T,D,lens,h0", [CASES[1], CASES[4]])
def test_hgrn_torch_path(B, T, D, lens, h0):
    ins, cu = _inputs(B, T, D, lens, h0)
    with force_backend("torch"):
        _compare(chunk_hgrn, ins, cu)


def test_chunk_equals_fused():
    ins, cu = _inputs(1, 0, 40, [3, 100, 20])
    with torch.no_grad(), force_backend("triton"):
        o1, h1 = chunk_hgrn(**ins, output_final_state=True, cu_seqlens=cu)
        o2, h2 = token_by_token_hgrn(**ins, output_final_state=True, cu_seqlens=cu)
    assert_close("o", o2.float(), o1.float(), tol(1e-6, 6e-3))
    assert_close("ht", h2, h1, tol(1e-6, 1e-3))


@pytest.mark.parametrize("fn", OPS, ids=lambda f: f.__name__)
def test_hgrn_bad_inputs(fn):
    x, g = randn(2, 5, 8), randn(2, 5, 8)
    bad = [
        dict(x=x[0]), dict(g=g[:, :4]), dict(g=None), dict(initial_state=randn(3, 8)),
        dict(initial_state=randn(2, 1, 8)), dict(cu_seqlens=uneven_cu_seqlens([2, 3])),
        dict(x=x[:1], g=g[:1], cu_seqlens=torch.tensor([0, 3, 2, 5], device=DEVICE)),
        dict(x=x[:1], g=g[:1], cu_seqlens=torch.tensor([0, 4], device=DEVICE)),
        dict(x=x.long(), g=g),
    ]
    for kw in bad:
        args = dict(x=x, g=g)
        args.update(kw)
        with pytest.raises(ValueError):
            fn(**args)
