"""Multi-head latent attention (CPU, float32): the layer against a direct transcription of the MLA
equations (DeepSeek-V2 §2.1, decoupled RoPE), its cache content, the v-padding path used on CUDA, and
the rope_scaling policy."""
from __future__ import annotations

import pytest
import torch
from helpers import assert_close

from flactl.layers import MultiheadLatentAttention
from flactl.models.cache import Cache

h = 32
DIMS = dict(num_heads=2, kv_lora_rank=12, qk_rope_head_dim=8, qk_nope_head_dim=8, qk_head_dim=16, v_head_dim=12)


def make(**over):
    torch.manual_seed(0)
    layer = MultiheadLatentAttention(hidden_size=h, **{**DIMS, "q_lora_rank": 16, **over}, layer_idx=0)
    with torch.no_grad():  # non-trivial latent norm weights
        for m in layer.modules():
            if "Norm" in type(m).__name__:
                m.weight.uniform_(0.5, 1.5)
    return layer.eval()


def rope_ref(x, base=10000.0):
    """GPT-NeoX RoPE of x [T, ..., D] at positions 0..T-1 (halves rotated)."""
    T, D = x.shape[0], x.shape[-1]
    inv = base ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv
    shape = (T,) + (1,) * (x.dim() - 2) + (D // 2,)
    c, s = ang.cos().view(shape), ang.sin().view(shape)
    x1, x2 = x[..., :D // 2], x[..., D // 2:]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], -1)


def rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def mla_ref(layer, x, window=None):
    """One sequence x [T, h] -> [T, h], float64, straight from the equations."""
    p = {k: v.double() for k, v in layer.state_dict().items()}
    H, nope, rope, dv = layer.num_heads, layer.qk_nope_head_dim, layer.qk_rope_head_dim, layer.v_head_dim
    x = x.double()
    T = x.shape[0]
    if layer.q_lora_rank is None:
        q = x @ p["q_proj.weight"].T
    else:
        q = rms(x @ p["q_proj.0.weight"].T, p["q_proj.1.weight"], 1e-5) @ p["q_proj.2.weight"].T
    q = q.view(T, H, nope + rope)
    c_kv = rms(x @ p["kv_proj.0.weight"].T, p["kv_proj.1.weight"], 1e-5)
    kv = (c_kv @ p["kv_proj.2.weight"].T).view(T, H, nope + dv)
    k_pe = rope_ref(x @ p["k_rope.weight"].T)  # [T, rope], shared by the heads
    q = torch.cat([q[..., :nope], rope_ref(q[..., nope:])], -1)
    k = torch.cat([kv[..., :nope], k_pe[:, None].expand(T, H, rope)], -1)
    v = kv[..., nope:]
    s = torch.einsum("thd,shd->hts", q, k) / (nope + rope) ** 0.5
    i, j = torch.arange(T)[:, None], torch.arange(T)[None]
    allowed = (j <= i) if window is None else (j <= i) & (i - j < window)
    o = torch.einsum("hts,shd->thd", s.masked_fill(~allowed, float("-inf")).softmax(-1), v)
    return o.reshape(T, H * dv) @ p["o_proj.weight"].T


@pytest.mark.parametrize("over", [{}, {"q_lora_rank": None}, {"window_size": 3}, {"v_head_dim": 20}],
                         ids=["lora_q", "dense_q", "window", "v_wider"])
def test_matches_equations(over):
    layer = make(**over)
    x = torch.randn(2, 9, h)
    with torch.no_grad():
        o = layer(x)[0]
    for b in range(2):
        assert_close(f"sample {b}", mla_ref(layer, x[b], layer.window_size).float(), o[b], 1e-5)


def test_cache_holds_decompressed_kv_and_continues():
    layer = make(window_size=4)
    x = torch.randn(2, 9, h)
    with torch.no_grad():
        full = layer(x)[0]
        cache = Cache()
        o1 = layer(x[:, :6], past_key_values=cache, use_cache=True)[0]
        k, v = cache[0]["attn_state"]
        assert k.shape == (2, 4, 2, 16) and v.shape == (2, 4, 2, 12)  # per head, trimmed to the window
        steps = [layer(x[:, t:t + 1], past_key_values=cache, use_cache=True)[0] for t in range(6, 9)]
    assert_close("cached", full, torch.cat([o1, *steps], 1), 1e-5)


def test_v_padding_path_is_exact(monkeypatch):
    """On CUDA v is zero-padded to qk_head_dim for the kernel; force that path on CPU."""
    layer = make()
    x = torch.randn(2, 7, h)
    mask = torch.tensor([[1] * 7, [0, 0, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        ref = [layer(x)[0], layer(x, attention_mask=mask)[0]]
        monkeypatch.setattr(MultiheadLatentAttention, "_v_pad", lambda self, q: self.qk_head_dim - self.v_head_dim)
        got = [layer(x)[0], layer(x, attention_mask=mask)[0]]
    for name, a, b in zip(("causal", "masked"), ref, got):
        assert_close(name, a, b, 1e-6)


def test_rope_scaling_policy():
    MultiheadLatentAttention(hidden_size=h, **DIMS, rope_scaling={"rope_type": "default", "rope_theta": 1e4})
    with pytest.raises(ValueError, match="yarn.*rope_scaling to None"):
        MultiheadLatentAttention(hidden_size=h, **DIMS, rope_scaling={"rope_type": "yarn", "factor": 4.0,
                                                                      "mscale_all_dim": 1.0})
    with pytest.raises(ValueError, match="qk_head_dim"):
        MultiheadLatentAttention(hidden_size=h, **{**DIMS, "qk_head_dim": 17})
