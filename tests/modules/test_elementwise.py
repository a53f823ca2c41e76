"""token_shift (varlen, cache), swiglu / swiglu_linear, GatedMLP vs plain torch."""
import pytest
import torch
import torch.nn.functional as F

from helpers import DEVICE, DTYPE, assert_close, grads, randn, tol, uneven_cu_seqlens

from flactl.modules import GatedMLP, swiglu, swiglu_linear, token_shift


def _ref_shift(x, segs, cache):
    out = []
    for n, (b, s, e) in enumerate(segs):
        xs = x[b, s:e]
        first = cache[n:n + 1] if cache is not None else xs.new_zeros(1, xs.shape[1])
        prev = torch.cat([first, xs[:-1]], 0)[:xs.shape[0]]
        out.append(prev - xs)
    return out


@pytest.mark.parametrize("varlen", [False, True])
@pytest.mark.parametrize("use_cache", [False, True])
def test_token_shift(nan_poison, varlen, use_cache):
    D = 33
    if varlen:
        lens = [5, 0, 14, 1]
        cu = uneven_cu_seqlens(lens)
        x = randn(1, sum(lens), D, requires_grad=True)
        c = cu.tolist()
        segs = [(0, c[i], c[i + 1]) for i in range(len(lens))]
    else:
        cu = None
        x = randn(2, 11, D, requires_grad=True)
        segs = [(0, 0, 11), (1, 0, 11)]
    cache = randn(len(segs), D, requires_grad=True) if use_cache else None
    y, last = token_shift(x, cu, cache=cache, output_cache=True)
    dy = torch.randn_like(y)
    (y * dy).sum().backward()
    got = grads(x, cache)
    xr = x.detach().double().requires_grad_()
    cr = cache.detach().double().requires_grad_() if use_cache else None
    yr = torch.cat(_ref_shift(xr, segs, cr), 0).view(y.shape)
    (yr * dy.double()).sum().backward()
    assert_close("y", yr, y, tol(1e-7, 5e-3))
    assert_close("dx", xr.grad, got[0], tol(1e-7, 5e-3))
    if use_cache:
        assert_close("dcache", cr.grad, got[1], tol(1e-7, 5e-3))
    lr = torch.stack([x[b, e - 1] if e > s else (cache[n] if use_cache else x.new_zeros(D))
                      for n, (b, s, e) in enumerate(segs)])
    assert_close("last", lr, last, 1e-7)


def test_token_shift_isolation_and_errors():
    cu = uneven_cu_seqlens([4, 6])
    x = randn(1, 10, 8)
    y1 = token_shift(x, cu)
    x2 = x.clone()
    x2[:, :4] += 1
    y2 = token_shift(x2, cu)
    assert torch.equal(y1[:, 4:], y2[:, 4:])
    with pytest.raises(ValueError, match="cache"):
        token_shift(x, cu, cache=randn(3, 8))


def test_swiglu(nan_poison):
    g = randn(3, 5, 77, requires_grad=True)
    u = randn(3, 5, 77, requires_grad=True)
    W = randn(19, 77, requires_grad=True, scale=0.2)
    b = randn(19, requires_grad=True)
    y = swiglu(g, u)
    o = swiglu_linear(g, u, W, b)
    dy, do = torch.randn_like(y), torch.randn_like(o)
    ((y * dy).sum() + (o * do).sum()).backward()
    got = grads(g, u, W, b)
    ref = [t.detach().double().requires_grad_() for t in (g, u, W, b)]
    yr = F.silu(ref[0]) * ref[1]
    orf = F.linear(yr, ref[2], ref[3])
    ((yr * dy.double()).sum() + (orf * do.double()).sum()).backward()
    assert_close("y", yr, y, tol(1e-6, 8e-3))
    assert_close("o", orf, o, tol(1e-6, 1e-2))
    for name, r, t in zip(("dg", "du", "dW", "db"), ref, got):
        assert_close(name, r.grad, t, tol(1e-5, 1e-2))


def test_gated_mlp():
    mlp = GatedMLP(64).to(DEVICE, DTYPE)
    assert mlp.intermediate_size == 256 * ((int(64 * 4 * 2 / 3) + 255) // 256)
    assert set(mlp.state_dict()) == {"gate_proj.weight", "up_proj.weight", "down_proj.weight"}
    ref = GatedMLP(64, fuse_swiglu=False).to(DEVICE, DTYPE)
    ref.load_state_dict(mlp.state_dict())
    x = randn(2, 5, 64)
    assert_close("mlp", ref(x), mlp(x), tol(1e-5, 1e-2))
    assert GatedMLP(2304, hidden_ratio=4).intermediate_size == 6144
    with pytest.raises(ValueError, match="hidden_act"):
        GatedMLP(8, hidden_act="nope")
