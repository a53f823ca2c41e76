"""ShortConvolution / causal_conv1d vs nn.functional.conv1d run per sequence; varlen isolation; decoding."""
import pytest
import torch
import torch.nn.functional as F

from helpers import DEVICE, assert_close, grads, randn, tol, uneven_cu_seqlens

from flactl.modules import ShortConvolution, causal_conv1d


def _ref_seq(x, w, b, act, init=None):
    """x [T, D] one sequence (float64), w [D, 1, W], init [D, W] cache or None -> [T, D]."""
    W = w.shape[-1]
    if x.shape[0] == 0:
        return x * 0
    xt = x.t().unsqueeze(0)                                          # [1, D, T]
    pad = init[:, 1:].unsqueeze(0) if init is not None else xt.new_zeros(1, x.shape[1], W - 1)
    y = F.conv1d(torch.cat([pad, xt], -1), w, b, groups=x.shape[1])[0].t()
    return F.silu(y) if act == "silu" else y


def _make(D, W, bias, act):
    conv = ShortConvolution(D, W, bias=bias, activation=act)
    with torch.no_grad():
        conv.weight.copy_(torch.randn_like(conv.weight) * 0.5)
        if bias:
            conv.bias.copy_(torch.randn_like(conv.bias) * 0.2)
    return conv.to(device=DEVICE)


@pytest.mark.parametrize("W,bias,act,use_cache", [(4, True, "silu", False), (3, False, None, True),
                                                  (4, False, "silu", True)])
@pytest.mark.parametrize("varlen", [False, True])
def test_conv(nan_poison, W, bias, act, use_cache, varlen):
    D = 40
    conv = _make(D, W, bias, act)
    if varlen:
        lens = [3, 0, 17, 1, 9]
        cu = uneven_cu_seqlens(lens)
        x = randn(1, sum(lens), D, requires_grad=True)
        segs = [(0, a, b) for a, b in zip(cu[:-1].tolist(), cu[1:].tolist())]
    else:
        cu = None
        x = randn(2, 19, D, requires_grad=True)
        segs = [(i, 0, 19) for i in range(2)]
    N = len(segs)
    cache = randn(N, D, W) if use_cache else None
    y, final = conv(x, cache=cache.clone() if use_cache else None, output_final_state=True, cu_seqlens=cu)
    dy = torch.randn_like(y)
    (y * dy).sum().backward()
    params = [conv.weight] + ([conv.bias] if bias else [])
    got = grads(x, *params)
    xr = x.detach().double().requires_grad_()
    pr = [p.detach().double().requires_grad_() for p in params]
    outs, finals = [], []
    for n, (bi, s, e) in enumerate(segs):
        init = cache[n].double() if use_cache else None
        outs.append(_ref_seq(xr[bi, s:e], pr[0], pr[1] if bias else None, act, init))
        hist = torch.cat([init if init is not None else xr.new_zeros(D, W), xr[bi, s:e].detach().t()], -1)
        finals.append(hist[:, -W:])
    yr = torch.cat(outs, 0).view(y.shape) if varlen else torch.stack(outs, 0)
    (yr * dy.double()).sum().backward()
    assert_close("y", yr, y, tol(2e-6, 8e-3))
    assert_close("final_cache", torch.stack(finals), final, tol(1e-7, 5e-3))
    assert_close("dx", xr.grad, got[0], tol(1e-5, 1e-2))
    assert_close("dweight", pr[0].grad, got[1], tol(1e-5, 1e-2))
    if bias:
        assert_close("dbias", pr[1].grad, got[2], tol(1e-5, 1e-2))


def test_varlen_isolation():
    """Changing one sequence must not change the outputs of its neighbours."""
    conv = _make(16, 4, True, "silu")
    cu = uneven_cu_seqlens([5, 7, 6])
    x = randn(1, 18, 16)
    y1, _ = conv(x, cu_seqlens=cu)
    x2 = x.clone()
    x2[:, 5:12] = randn(1, 7, 16)
    y2, _ = conv(x2, cu_seqlens=cu)
    assert torch.equal(y1[:, :5], y2[:, :5]) and torch.equal(y1[:, 12:], y2[:, 12:])
    assert not torch.equal(y1[:, 5:12], y2[:, 5:12])


@pytest.mark.parametrize("varlen", [False, True])
def test_decode_steps_match_full(varlen):
    D, W = 24, 4
    conv = _make(D, W, True, "silu")
    if varlen:
        lens = [6, 9]
        x = randn(1, sum(lens), D)
        seqs = [x[:, :6], x[:, 6:]]
    else:
        x = randn(2, 9, D)
        seqs = [x[0:1], x[1:2]]
    with torch.no_grad():
        for xs in seqs:                                # prefill 2 tokens, decode the rest one by one
            full, _ = conv(xs)
            y, cache = conv(xs[:, :2], output_final_state=True)
            steps = [y]
            for t in range(2, xs.shape[1]):
                yt, cache = conv(xs[:, t:t + 1], cache=cache)
                steps.append(yt)
            assert_close("decode", full, torch.cat(steps, 1), tol(1e-6, 8e-3))


def test_conv_errors_and_keys():
    conv = _make(8, 4, False, "silu")
    assert set(conv.state_dict()) == {"weight"} and conv.weight.shape == (8, 1, 4)
    with pytest.raises(ValueError, match="x"):
        conv(randn(2, 5, 9))
    with pytest.raises(ValueError, match="cache"):
        conv(randn(2, 5, 8), cache=randn(3, 8, 4))
    with pytest.raises(ValueError, match="cu_seqlens"):
        conv(randn(1, 5, 8), cu_seqlens=torch.tensor([0, 3, 4], device=DEVICE))
    with pytest.raises(ValueError, match="activation"):
        causal_conv1d(randn(1, 5, 8), conv.weight, activation="gelu")
