"""Forgetting attention (FoX, CPU, float32) against a float64 transcription of the formula
``softmax_j(q_i.k_j / sqrt(d) + F_i - F_j)`` (F = cumsum of logsigmoid(f_proj x) per query head), with
window, GQA, qk-norm (per-head RMS GroupNorm), output gate; cached continuation, packed and padded input."""
from __future__ import annotations

import pytest
import torch
from helpers import assert_close

from flactl.layers import ForgettingAttention
from flactl.models.cache import Cache
from flactl.ops.utils import force_backend

h = 32
CASES = {
    "mha": dict(num_heads=4),
    "gqa_norm_gate": dict(num_heads=4, num_kv_heads=2, qk_norm=True, use_output_gate=True),
    "window_bias": dict(num_heads=4, num_kv_heads=1, window_size=3, qkv_bias=True),
    "window_all": dict(num_heads=4, num_kv_heads=2, qk_norm=True, use_output_gate=True, window_size=4),
}


@pytest.fixture(autouse=True)
def _torch_ops():
    with force_backend("torch"):
        yield


def make(**kw):
    torch.manual_seed(0)
    layer = ForgettingAttention(hidden_size=h, layer_idx=0, **kw)
    with torch.no_grad():
        for n, p in layer.named_parameters():
            if "norm" in n:
                p.uniform_(0.5, 1.5)
            elif n == "f_proj.bias":
                p.uniform_(-1.0, 3.0)  # a spread of forget rates
            elif n.endswith("bias"):
                p.normal_(0, 0.1)
    return layer.eval()


def fox_ref(layer, x):
    """One sequence x [T, h] -> [T, h], float64, straight from the formula."""
    p = {k: v.double() for k, v in layer.state_dict().items()}
    H, Hkv, d = layer.num_heads, layer.num_kv_heads, layer.head_dim
    x = x.double()
    T = x.shape[0]

    def lin(name, inp):
        y = inp @ p[f"{name}.weight"].T
        return y + p[f"{name}.bias"] if f"{name}.bias" in p else y

    def grms(y, w, groups):  # RMS over each group of the last dim, weight over the whole dim
        yg = y.view(T, groups, -1)
        return (yg * torch.rsqrt(yg.pow(2).mean(-1, keepdim=True) + 1e-5)).view(T, -1) * w

    q, k, v = lin("q_proj", x), lin("k_proj", x), lin("v_proj", x)
    if layer.qk_norm:
        q, k = grms(q, p["q_norm.weight"], H), grms(k, p["k_norm.weight"], Hkv)
    q, k, v = q.view(T, H, d), k.view(T, Hkv, d), v.view(T, Hkv, d)
    k, v = k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1)
    Fc = torch.nn.functional.logsigmoid(lin("f_proj", x)).cumsum(0)  # [T, H]
    s = torch.einsum("ihd,jhd->hij", q, k) / d ** 0.5 + Fc.T[:, :, None] - Fc.T[:, None, :]
    i, j = torch.arange(T)[:, None], torch.arange(T)[None]
    ok = j <= i
    if layer.window_size is not None:
        ok = ok & (i - j < layer.window_size)
    o = torch.einsum("hij,jhd->ihd", s.masked_fill(~ok, float("-inf")).softmax(-1), v).reshape(T, H * d)
    if layer.use_output_gate:
        o = torch.sigmoid(x @ p["g_proj.weight"].T) * o
    return o @ p["o_proj.weight"].T


@pytest.mark.parametrize("case", CASES)
def test_forward_matches_formula(case):
    layer = make(**CASES[case])
    x = torch.randn(2, 9, h)
    with torch.no_grad():
        o = layer(x)[0]
    for b in range(2):
        assert_close(f"b{b}", fox_ref(layer, x[b]), o[b], 1e-5)


def test_parameter_names_and_shapes():
    layer = make(num_heads=4, num_kv_heads=2, qk_norm=True, use_output_gate=True)
    shapes = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
    assert shapes == {"q_proj.weight": (32, 32), "k_proj.weight": (16, 32), "v_proj.weight": (16, 32),
                      "f_proj.weight": (4, 32), "f_proj.bias": (4,), "g_proj.weight": (32, 32),
                      "o_proj.weight": (32, 32), "q_norm.weight": (32,), "k_norm.weight": (16,)}


@pytest.mark.parametrize("case", CASES)
def test_cached_continuation_matches_full(case):
    layer = make(**CASES[case])
    x = torch.randn(2, 10, h)
    with torch.no_grad():
        full = layer(x)[0]
        cache = Cache()
        o = layer(x[:, :5], past_key_values=cache, use_cache=True)[0]
        assert_close("prefill", full[:, :5], o, 1e-5)
        k, v, f = cache[0]["attn_state"]
        W = layer.window_size or 10
        assert k.shape[1] == v.shape[1] == f.shape[1] == min(5, W) and f.shape[-1] == layer.num_heads
        assert (f <= 0).all()
        o = layer(x[:, 5:7], past_key_values=cache, use_cache=True)[0]  # multi-token continuation
        assert_close("continue", full[:, 5:7], o, 1e-5)
        for t in range(7, 10):
            o = layer(x[:, t:t + 1], past_key_values=cache, use_cache=True)[0]
            assert_close(f"step {t}", full[:, t:t + 1], o, 1e-5)
        assert cache[0]["attn_state"][2].shape[1] == min(10, W)


@pytest.mark.parametrize("case", ["gqa_norm_gate", "window_all"])
def test_packed_restarts_per_sequence(case):
    layer = make(**CASES[case])
    lens = [3, 7, 1, 5]
    x = torch.randn(1, sum(lens), h)
    cu = torch.tensor([0, 3, 10, 11, 16])
    with torch.no_grad():
        o = layer(x, cu_seqlens=cu)[0]
    for n, (a, b) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        assert_close(f"seq{n}", fox_ref(layer, x[0, a:b]), o[0, a:b], 1e-5)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_matches_single(side):
    layer = make(**CASES["window_all"])
    lens = [8, 5]
    x = torch.randn(2, 8, h)
    mask = torch.zeros(2, 8, dtype=torch.long)
    for b, n in enumerate(lens):
        if side == "left":
            mask[b, 8 - n:] = 1
        else:
            mask[b, :n] = 1
    with torch.no_grad():
        o = layer(x, attention_mask=mask)[0]
    for b in range(2):
        keep = mask[b].bool()
        assert_close(f"b{b}", fox_ref(layer, x[b, keep]), o[b, keep], 1e-5)


def test_left_padded_decoding_matches_single():
    """Padded prefill then decoding steps (mask over past + new columns, as generate passes it)."""
    layer = make(**CASES["gqa_norm_gate"])
    x = torch.randn(2, 9, h)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, :3] = 0
    with torch.no_grad():
        cache = Cache()
        outs = [layer(x[:, :6], attention_mask=mask[:, :6], past_key_values=cache, use_cache=True)[0]]
        for t in range(6, 9):
            outs.append(layer(x[:, t:t + 1], attention_mask=mask[:, :t + 1], past_key_values=cache,
                              use_cache=True)[0])
    o = torch.cat(outs, 1)
    for b in range(2):
        keep = mask[b].bool()
        assert_close(f"b{b}", fox_ref(layer, x[b, keep]), o[b, keep], 1e-5)


def test_gradients_match_formula():
    layer = make(**CASES["gqa_norm_gate"]).train()
    x = torch.randn(1, 7, h)
    layer(x)[0].square().sum().backward()
    g = {n: p.grad.clone() for n, p in layer.named_parameters()}
    # float64 reference gradients through the same formula on the layer's own parameters
    p64 = {n: q.detach().double().requires_grad_() for n, q in layer.named_parameters()}

    class _View:  # fox_ref reads state_dict() and a few attributes
        num_heads, num_kv_heads, head_dim = layer.num_heads, layer.num_kv_heads, layer.head_dim
        qk_norm, window_size, use_output_gate = layer.qk_norm, layer.window_size, layer.use_output_gate

        @staticmethod
        def state_dict():
            return p64

    fox_ref(_View, x[0].double()).square().sum().backward()
    for n in g:
        assert_close(n, p64[n].grad, g[n], 1e-4)
