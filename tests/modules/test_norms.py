"""Norms, gated norms, norm+linear, l2 norm vs plain torch references (outputs and every gradient)."""
import pytest
import torch
import torch.nn.functional as F

from helpers import DEVICE, assert_close, grads, randn, tol

from flactl.modules import (FusedLayerNormGated, FusedRMSNormGated, FusedRMSNormGatedLinear, GroupNorm, LayerNorm,
                            LayerNormLinear, RMSNorm, RMSNormLinear, l2_norm)


def _ref_norm(x, w, b, eps, kind, groups=1, gate=None, act="swish"):
    xf = x.double()
    shp = xf.shape
    if kind == "group":
        y = F.group_norm(xf.reshape(-1, shp[-1]), groups, None, None, eps).reshape(shp)
    elif kind == "rmsgroup":
        xg = xf.reshape(*shp[:-1], groups, -1)
        y = (xg * torch.rsqrt(xg.pow(2).mean(-1, keepdim=True) + eps)).reshape(shp)
    elif kind == "layer":
        y = F.layer_norm(xf, (shp[-1],), eps=eps)
    else:
        y = F.rms_norm(xf, (shp[-1],), eps=eps)
    if w is not None:
        y = y * w.double()
    if b is not None:
        y = y + b.double()
    if gate is not None:
        y = y * (torch.sigmoid(gate.double()) if act == "sigmoid" else F.silu(gate.double()))
    return y


def _affine(mod, C):
    with torch.no_grad():
        mod.weight.copy_(torch.randn(C) * 0.5 + 1)
        if mod.bias is not None:
            mod.bias.copy_(torch.randn(C) * 0.1)
    return mod.to(DEVICE)


@pytest.mark.parametrize("kind,C,bias,groups", [
    ("rms", 2304 if DEVICE != "cpu" else 96, False, 1),
    ("layer", 72, True, 1),
    ("group", 80, True, 4),
    ("rmsgroup", 64, False, 2),
])
@pytest.mark.parametrize("residual", [False, True])
def test_norm_residual(nan_poison, kind, C, bias, groups, residual):
    eps = 1e-5
    if kind in ("group", "rmsgroup"):
        mod = GroupNorm(groups, C, bias=bias, eps=eps, is_rms_norm=kind == "rmsgroup")
    else:
        mod = (RMSNorm if kind == "rms" else LayerNorm)(C, bias=bias, eps=eps)
    mod = _affine(mod, C)
    x = randn(3, 11, C, requires_grad=True)
    res = randn(3, 11, C, requires_grad=True) if residual else None
    params = [p for p in (mod.weight, mod.bias) if p is not None]
    y, r = mod(x, residual=res, prenorm=True, residual_in_fp32=True)
    assert r.dtype == torch.float32
    dy, dr = torch.randn_like(y), torch.randn_like(r)
    ((y * dy).sum() + (r * dr).sum()).backward()
    got = grads(x, res, *params)
    # reference in float64
    xr = x.detach().double().requires_grad_()
    rr = res.detach().double().requires_grad_() if residual else None
    pr = [p.detach().double().requires_grad_() for p in params]
    s = xr + rr if residual else xr
    yr = _ref_norm(s, pr[0], pr[1] if bias else None, eps, kind, groups)
    ((yr * dy.double()).sum() + (s * dr.double()).sum()).backward()
    assert_close("y", yr, y, tol(2e-6, 8e-3))
    assert_close("residual_out", s, r, tol(1e-7, 5e-3))
    assert_close("dx", xr.grad, got[0], tol(1e-5, 1e-2))
    if residual:
        assert_close("dresidual", rr.grad, got[1], tol(1e-5, 1e-2))
    for name, p, g in zip(("dweight", "dbias"), pr, got[2:]):
        assert_close(name, p.grad, g, tol(1e-5, 1e-2))


@pytest.mark.parametrize("cls,act,bias", [(FusedRMSNormGated, "swish", False), (FusedRMSNormGated, "sigmoid", False),
                                          (FusedLayerNormGated, "swish", True)])
def test_gated_norm(nan_poison, cls, act, bias):
    D = 48
    mod = _affine(cls(D, activation=act, eps=1e-5, bias=bias), D)
    x = randn(2, 9, 3, D, requires_grad=True)
    g = randn(2, 9, 3, D, requires_grad=True)
    params = [p for p in (mod.weight, mod.bias) if p is not None]
    y = mod(x, g)
    dy = torch.randn_like(y)
    (y * dy).sum().backward()
    got = grads(x, g, *params)
    xr, gr = x.detach().double().requires_grad_(), g.detach().double().requires_grad_()
    pr = [p.detach().double().requires_grad_() for p in params]
    yr = _ref_norm(xr, pr[0], pr[1] if bias else None, 1e-5, "rms" if cls is FusedRMSNormGated else "layer",
                   gate=gr, act=act)
    (yr * dy.double()).sum().backward()
    assert_close("y", yr, y, tol(2e-6, 8e-3))
    for name, ref, t in zip(("dx", "dg", "dweight", "dbias"), [xr.grad, gr.grad] + [p.grad for p in pr], got):
        assert_close(name, ref, t, tol(1e-5, 1e-2))


@pytest.mark.parametrize("cls", [RMSNormLinear, LayerNormLinear, FusedRMSNormGatedLinear])
def test_norm_linear(nan_poison, cls):
    D, O = 40, 24
    mod = _affine(cls(D, eps=1e-5), D)
    x = randn(2, 7, D, requires_grad=True)
    W = randn(O, D, requires_grad=True, scale=0.2)
    b = randn(O, requires_grad=True)
    gated = cls is FusedRMSNormGatedLinear
    g = randn(2, 7, D, requires_grad=True) if gated else None
    out = mod(x, g, W, b) if gated else mod(x, W, b)
    dout = torch.randn_like(out)
    (out * dout).sum().backward()
    ins = [x, W, b, mod.weight] + ([g] if gated else [])
    got = grads(*ins)
    ref_in = [t.detach().double().requires_grad_() for t in ins]
    kind = "layer" if cls is LayerNormLinear else "rms"
    y = _ref_norm(ref_in[0], ref_in[3], None, 1e-5, kind, gate=ref_in[4] if gated else None)
    outr = F.linear(y, ref_in[1], ref_in[2])
    (outr * dout.double()).sum().backward()
    assert_close("out", outr, out, tol(2e-6, 1e-2))
    for i, name in enumerate(["dx", "dW", "db", "dnorm_w", "dg"][:len(ins)]):
        assert_close(name, ref_in[i].grad, got[i], tol(1e-5, 1.5e-2))


def test_prenorm_without_residual_and_dtypes():
    mod = RMSNorm(32).to(DEVICE)
    x = randn(4, 32)
    y, r = mod(x, prenorm=True)
    assert r is x and y.dtype == x.dtype
    y, r = mod(x, prenorm=True, residual_in_fp32=True)
    assert r.dtype == torch.float32


def test_l2_norm(nan_poison):
    x = randn(3, 13, 2, 64, requires_grad=True)
    y = l2_norm(x)
    dy = torch.randn_like(y)
    (y * dy).sum().backward()
    xr = x.detach().double().requires_grad_()
    yr = xr / torch.sqrt(xr.pow(2).sum(-1, keepdim=True) + 1e-6)
    (yr * dy.double()).sum().backward()
    assert_close("y", yr, y, tol(2e-6, 8e-3))
    assert_close("dx", xr.grad, x.grad, tol(1e-5, 1e-2))


def test_state_dict_keys_and_errors():
    assert set(RMSNorm(8).state_dict()) == {"weight"}
    assert set(LayerNorm(8, bias=True).state_dict()) == {"weight", "bias"}
    assert set(FusedRMSNormGated(8).state_dict()) == {"weight"}
    mod = RMSNorm(8).to(DEVICE)
    with pytest.raises(ValueError, match="weight"):
        mod(randn(2, 9))
    with pytest.raises(ValueError, match="residual"):
        mod(randn(2, 8), residual=randn(3, 8))
    with pytest.raises(ValueError, match="activation"):
        FusedRMSNormGated(8, activation="tanh")
    with pytest.raises(ValueError, match="num_groups"):
        GroupNorm(3, 8)
