"""RotaryEmbedding vs an explicit rotate-half / interleaved reference; offsets, varlen, partial, decoding."""
import pytest
import torch

from helpers import DEVICE, assert_close, grads, randn, tol, uneven_cu_seqlens

from flactl.modules import RotaryEmbedding


def _ref(x, pos, dim, base=10000.0, interleaved=False):
    """x [B, T, H, D] float64, pos [B, T] -> rotated (first `dim` channels)."""
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64, device=x.device) / dim))
    ang = pos.double()[..., None] * inv                                     # [B, T, dim/2]
    c, s = ang.cos()[:, :, None], ang.sin()[:, :, None]
    xr, rest = x[..., :dim], x[..., dim:]
    if interleaved:
        x0, x1 = xr[..., 0::2], xr[..., 1::2]
        y = torch.stack([x0 * c - x1 * s, x0 * s + x1 * c], -1).flatten(-2)
    else:
        x0, x1 = xr[..., :dim // 2], xr[..., dim // 2:]
        y = torch.cat([x0 * c - x1 * s, x1 * c + x0 * s], -1)
    return torch.cat([y, rest], -1)


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("dim,D", [(64, 64), (32, 48)])
def test_rotary_offsets(nan_poison, interleaved, dim, D):
    rope = RotaryEmbedding(dim, interleaved=interleaved).to(DEVICE)
    B, T = 2, 13
    q = randn(B, T, 4, D, requires_grad=True)
    k = randn(B, T, 2, D, requires_grad=True)
    off = torch.tensor([5, 0], device=DEVICE)
    qo, ko = rope(q, k, seqlen_offset=off)
    dq, dk = torch.randn_like(qo), torch.randn_like(ko)
    ((qo * dq).sum() + (ko * dk).sum()).backward()
    gq, gk = grads(q, k)
    pos = torch.arange(T, device=DEVICE)[None] + off[:, None]
    qr, kr = q.detach().double().requires_grad_(), k.detach().double().requires_grad_()
    qro, kro = _ref(qr, pos, dim, interleaved=interleaved), _ref(kr, pos, dim, interleaved=interleaved)
    ((qro * dq.double()).sum() + (kro * dk.double()).sum()).backward()
    assert_close("q", qro, qo, tol(2e-6, 8e-3))
    assert_close("k", kro, ko, tol(2e-6, 8e-3))
    assert_close("dq", qr.grad, gq, tol(2e-6, 8e-3))
    assert_close("dk", kr.grad, gk, tol(2e-6, 8e-3))


def test_rotary_varlen_matches_per_sequence(nan_poison):
    rope = RotaryEmbedding(32).to(DEVICE)
    lens = [4, 0, 9, 1]
    cu = uneven_cu_seqlens(lens)
    q, k = randn(1, sum(lens), 3, 32), randn(1, sum(lens), 3, 32)
    off = torch.tensor([2, 0, 7, 100], device=DEVICE)
    qo, ko = rope(q, k, seqlen_offset=off, cu_seqlens=cu)
    c = cu.tolist()
    for n in range(len(lens)):
        s, e = c[n], c[n + 1]
        if e == s:
            continue
        qs, ks = rope(q[:, s:e], k[:, s:e], seqlen_offset=int(off[n]))
        assert_close(f"q seq{n}", qs, qo[:, s:e], 1e-6)
        assert_close(f"k seq{n}", ks, ko[:, s:e], 1e-6)


def test_rotary_decoding_equals_full():
    rope = RotaryEmbedding(64).to(DEVICE)
    q, k = randn(2, 10, 2, 64), randn(2, 10, 2, 64)
    qf, kf = rope(q, k)
    for t in range(10):
        qt, kt = rope(q[:, t:t + 1], k[:, t:t + 1], seqlen_offset=t)
        assert_close(f"q step{t}", qf[:, t:t + 1], qt, 1e-6)
        assert_close(f"k step{t}", kf[:, t:t + 1], kt, 1e-6)


def test_rotary_left_padding_and_errors():
    rope = RotaryEmbedding(16).to(DEVICE)
    q = randn(2, 6, 1, 16)
    qo, _ = rope(q, q, seqlen_offset=torch.tensor([-2, 0], device=DEVICE))     # left-padded first row
    ref, _ = rope(q[:1, 2:], q[:1, 2:])
    assert_close("left-pad", ref, qo[:1, 2:], 1e-6)
    assert torch.isfinite(qo).all()
    assert rope.state_dict() == {}
    with pytest.raises(ValueError, match="q"):
        rope(randn(2, 6, 16), q)
    with pytest.raises(ValueError, match="dim"):
        RotaryEmbedding(15)
