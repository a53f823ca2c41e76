"""Fused CE, fused linear CE and fused linear KL vs F.cross_entropy / F.kl_div on full logits."""
import pytest
import torch
import torch.nn.functional as F

from helpers import DEVICE, DTYPE, assert_close, grads, randn, tol

from flactl.modules import (FusedCrossEntropyLoss, FusedLinearCrossEntropyLoss, FusedLinearKLDivLoss,
                            fused_linear_cross_entropy)


def _targets(n, V):
    t = torch.randint(0, V, (n,), device=DEVICE)
    t[::5] = -100
    return t


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ls,scale", [(0.0, 1.0), (0.1, 0.5)])
def test_cross_entropy(nan_poison, reduction, ls, scale):
    n, V = 13, 1531
    logits = randn(n, V, requires_grad=True, scale=2.0)
    t = _targets(n, V)
    loss = FusedCrossEntropyLoss(reduction=reduction, label_smoothing=ls, logit_scale=scale)(logits, t)
    dl = torch.rand_like(loss) + 0.5
    (loss * dl).sum().backward()
    (g,) = grads(logits)
    lr = logits.detach().double().requires_grad_()
    ref = F.cross_entropy(lr * scale, t, label_smoothing=ls, reduction=reduction)
    (ref * dl.double()).sum().backward()
    assert_close("loss", ref, loss, tol(1e-6, 5e-3))
    assert_close("dlogits", lr.grad, g, tol(1e-5, 1e-2))


def _ref_linear_ce(x, t, W, b, ls, reduction):
    return F.cross_entropy(F.linear(x, W, b).reshape(-1, W.shape[0]), t.reshape(-1), label_smoothing=ls,
                           reduction=reduction)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("bias,ls,chunks", [(False, 0.0, 8), (True, 0.1, 3)])
def test_fused_linear_cross_entropy(nan_poison, reduction, bias, ls, chunks):
    B, T, H, V = 2, 9, 32, 1003
    x = randn(B, T, H, requires_grad=True)
    W = randn(V, H, requires_grad=True, scale=0.3)
    b = randn(V, requires_grad=True) if bias else None
    t = _targets(B * T, V).view(B, T)
    loss = FusedLinearCrossEntropyLoss(label_smoothing=ls, num_chunks=chunks, reduction=reduction)(x, t, W, b)
    dl = torch.rand_like(loss) + 0.5
    (loss * dl).sum().backward()
    got = grads(x, W, b)
    ref_in = [v.detach().double().requires_grad_() if v is not None else None for v in (x, W, b)]
    ref = _ref_linear_ce(ref_in[0], t, ref_in[1], ref_in[2], ls, reduction)
    if reduction == "none":
        ref = ref.view(B, T)
    (ref * dl.double()).sum().backward()
    assert_close("loss", ref, loss, tol(1e-6, 5e-3))
    for name, r, g in zip(("dx", "dW", "db"), ref_in, got):
        if r is not None:
            assert_close(name, r.grad, g, tol(1e-5, 1.5e-2))


def test_fused_linear_ce_tied_weight_and_errors():
    H, V = 16, 50
    emb = torch.nn.Embedding(V, H).to(DEVICE)
    ids = torch.randint(0, V, (2, 7), device=DEVICE)
    x = emb(ids).to(DTYPE)
    loss = fused_linear_cross_entropy(x, ids, emb.weight)
    loss.backward()
    ref_emb = torch.nn.Embedding(V, H).to(DEVICE)
    ref_emb.load_state_dict(emb.state_dict())
    xr = ref_emb(ids).to(DTYPE)
    F.cross_entropy(F.linear(xr, ref_emb.weight.to(DTYPE)).float().view(-1, V), ids.view(-1)).backward()
    assert_close("tied dW", ref_emb.weight.grad, emb.weight.grad, tol(2e-4, 2e-2))
    with pytest.raises(ValueError, match="weight"):
        fused_linear_cross_entropy(x, ids, randn(V, H + 1))
    with pytest.raises(ValueError, match="target"):
        fused_linear_cross_entropy(x, ids[:, :3], emb.weight)
    with pytest.raises(ValueError, match="reduction"):
        FusedLinearCrossEntropyLoss(reduction="avg")


def test_fused_linear_kl():
    N, H, Ht, V = 11, 16, 24, 300
    x = randn(N, H, requires_grad=True)
    W = randn(V, H, requires_grad=True, scale=0.3)
    tx, tW = randn(N, Ht), randn(V, Ht, scale=0.3)
    loss = FusedLinearKLDivLoss(num_chunks=3)(x, tx, W, tW)
    loss.backward()
    got = grads(x, W)
    xr, Wr = x.detach().double().requires_grad_(), W.detach().double().requires_grad_()
    ref = F.kl_div(F.log_softmax(xr @ Wr.t(), -1), F.log_softmax(tx.double() @ tW.double().t(), -1),
                   reduction="batchmean", log_target=True)
    ref.backward()
    assert_close("kl", ref, loss, tol(1e-6, 5e-3))
    assert_close("dx", xr.grad, got[0], tol(1e-5, 1.5e-2))
    assert_close("dW", Wr.grad, got[1], tol(1e-5, 1.5e-2))


def test_fused_linear_ce_sliced_dw(monkeypatch):
    """dW accumulated in vocab slices (as for large V) equals the reference."""
    import flactl.modules.fused_linear as fl
    monkeypatch.setattr(fl, "DW_SLICE_ELEMS", 32 * 100)       # 100-row slices for H=32
    x = randn(2, 9, 32, requires_grad=True)
    W = randn(1003, 32, requires_grad=True, scale=0.3)
    t = _targets(18, 1003).view(2, 9)
    fused_linear_cross_entropy(x, t, W, num_chunks=3).backward()
    got = grads(x, W)
    xr, Wr = x.detach().double().requires_grad_(), W.detach().double().requires_grad_()
    _ref_linear_ce(xr, t, Wr, None, 0.0, "mean").backward()
    assert_close("dx", xr.grad, got[0], tol(1e-5, 1.5e-2))
    assert_close("dW", Wr.grad, got[1], tol(1e-5, 1.5e-2))


@pytest.mark.parametrize("V", [32000, 128256, 151936])
def test_real_vocab_sizes(nan_poison, V):
    """The vocab sizes of Llama-2 / Llama-3 / Qwen2 (not powers of two, rows longer than one block):
    fused CE and fused linear CE (label smoothing, ignored rows) against full-logit references."""
    n, H = 5, 8
    logits = randn(n, V, requires_grad=True, scale=2.0)
    t = _targets(n, V)
    loss = FusedCrossEntropyLoss(label_smoothing=0.1)(logits, t)
    loss.backward()
    lr = logits.detach().double().requires_grad_()
    F.cross_entropy(lr, t, label_smoothing=0.1).backward()
    assert_close("loss", F.cross_entropy(lr.detach(), t, label_smoothing=0.1), loss, tol(1e-6, 5e-3))
    assert_close("dlogits", lr.grad, logits.grad, tol(1e-5, 1e-2))
    x, W = randn(n, H, requires_grad=True), randn(V, H, requires_grad=True, scale=0.3)
    loss = fused_linear_cross_entropy(x, t, W, num_chunks=2)
    loss.backward()
    xr, Wr = (a.detach().double().requires_grad_() for a in (x, W))
    ref = F.cross_entropy(xr @ Wr.T, t)
    ref.backward()
    assert_close("linear loss", ref, loss, tol(1e-6, 5e-3))
    assert_close("dx", xr.grad, x.grad, tol(1e-5, 1.5e-2))
    assert_close("dW", Wr.grad, W.grad, tol(1e-5, 1.5e-2))
