"""Layer-level tests (CPU, float32).

* The real Triton kernels (Triton interpreter) and the ops' torch path give the same layer output and
  input gradient, in chunk mode (training) and fused_recurrent mode (eval, short input): this checks
  how each layer calls its ops (argument order, gates, GVA, varlen) — the kernels themselves are tested
  under tests/ops.
* A standalone layer given a padded ``attention_mask`` unpads itself: each sample equals the sample alone.
* A layer called with a cache continues exactly where the uncached layer would be.
"""
from __future__ import annotations

import pytest
import torch
from helpers import assert_close

from flactl.layers import (Attention, DeltaNet, GatedDeltaNet, GatedLinearAttention, HGRN2Attention, HGRNAttention,
                           Mamba2, MultiScaleRetention)
from flactl.models.cache import Cache
from flactl.ops.utils import force_backend

h = 32
LAYERS = {
    "attn": lambda: Attention(hidden_size=h, num_heads=4, num_kv_heads=2, qk_norm=True, window_size=5, layer_idx=0),
    "gla": lambda: GatedLinearAttention(hidden_size=h, num_heads=2, num_kv_heads=1, use_short_conv=True, layer_idx=0),
    "retnet": lambda: MultiScaleRetention(hidden_size=h, num_heads=2, layer_idx=0),
    "delta_net": lambda: DeltaNet(hidden_size=h, num_heads=2, use_gate=True, layer_idx=0),
    "gated_deltanet": lambda: GatedDeltaNet(hidden_size=h, head_dim=16, num_heads=1, num_v_heads=2, expand_v=1,
                                            layer_idx=0),
    "mamba2": lambda: Mamba2(hidden_size=h, head_dim=16, state_size=16, expand=1, layer_idx=0),
    "hgrn": lambda: HGRNAttention(hidden_size=h, layer_idx=0),
    "hgrn2": lambda: HGRN2Attention(hidden_size=h, expand_ratio=16, layer_idx=0),
}


def make(name):
    torch.manual_seed(3)
    layer = LAYERS[name]()
    with torch.no_grad():  # non-trivial weights (norm weights away from 1)
        for n, p in layer.named_parameters():
            if p.dim() == 1 and "norm" in n:
                p.add_(0.1 * torch.randn_like(p))
    return layer


@pytest.mark.parametrize("training", [True, False], ids=["chunk", "recurrent"])
@pytest.mark.parametrize("name", [n for n in LAYERS if n != "attn"])
def test_triton_kernels_match_torch_path(name, training):
    layer = make(name).train(training)
    x = torch.randn(1, 19, h, requires_grad=True)
    cu = torch.tensor([0, 6, 19])
    outs = {}
    for backend in ("torch", "triton"):
        with force_backend(backend):
            o = layer(x, cu_seqlens=cu)[0]
            (o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum().backward()
        outs[backend] = (o.detach(), x.grad.clone())
        x.grad = None
    assert_close("o", outs["torch"][0], outs["triton"][0], 2e-4)
    assert_close("dx", outs["torch"][1], outs["triton"][1], 2e-4)


@pytest.mark.parametrize("name", list(LAYERS))
def test_standalone_mask_and_cache(name):
    layer = make(name).eval()
    lens = [6, 3]
    T = 6
    x = torch.randn(2, T, h)
    mask = torch.zeros(2, T, dtype=torch.long)
    mask[0, :], mask[1, T - 3:] = 1, 1  # left padding
    with force_backend("torch"), torch.no_grad():
        o = layer(x, attention_mask=mask)[0]
        for b, n in enumerate(lens):
            alone = layer(x[b:b + 1, T - n:])[0]
            assert_close(f"sample {b}", alone[0], o[b, T - n:], 1e-5)
        # cache: 4 tokens then 2 more == 6 at once
        full = layer(x)[0]
        cache = Cache()
        o1 = layer(x[:, :4], past_key_values=cache, use_cache=True)[0]
        o2 = layer(x[:, 4:], past_key_values=cache, use_cache=True)[0]
        assert_close("cached", full, torch.cat([o1, o2], 1), 1e-5)
