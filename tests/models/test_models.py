"""Model-level behaviour of every family on tiny configs (CPU, float32, ops on their torch path).

For each family: forward/backward; cached decoding (prefill, multi-token continuation, single steps)
== uncached full forward, also with a hybrid softmax-attention layer with a sliding window; greedy
generate cached == uncached; left/right padded batch == each sample alone; padded batch == packed
varlen; save_pretrained → from_pretrained identical logits; gradient checkpointing gives the same
gradients.
"""
from __future__ import annotations

import warnings

import pytest
import torch
from helpers import assert_close
from transformers import AutoConfig, AutoModelForCausalLM

import flactl  # noqa: F401  (registers the Auto classes)
from flactl.ops.utils import force_backend

V = 64
COMMON = dict(hidden_size=32, num_hidden_layers=2, vocab_size=V, initializer_range=0.1, hidden_ratio=2,
              bos_token_id=None, eos_token_id=None, pad_token_id=0, fuse_cross_entropy=False)
TINY = {
    "transformer": dict(num_heads=4, num_kv_heads=2, qk_norm=True),
    "gla": dict(num_heads=2, num_kv_heads=1, use_short_conv=True),
    "gated_deltanet": dict(head_dim=8, num_heads=2, num_v_heads=4, expand_v=1),
    "retnet": dict(num_heads=2),
    "delta_net": dict(num_heads=2, use_gate=True),
    "mamba2": dict(head_dim=8, state_size=8, expand=2, n_groups=1, num_heads=8),
    "hgrn": dict(expand_ratio=1),
    "hgrn2": dict(expand_ratio=16),
    "gated_deltaproduct": dict(head_dim=8, num_heads=2, expand_v=1, num_householder=2, use_forget_gate=True,
                               allow_neg_eigval=True),
    "linear_attn": dict(num_heads=2, feature_map="hedgehog", norm_feature_map=True),
    "comba": dict(head_dim=8, num_heads=2, num_v_heads=4, expand_v=1, correction_factor=0.5),
    # v_head_dim != qk_head_dim (8 nope + 8 rope) on purpose; q through the low-rank path
    "mla": dict(num_heads=2, q_lora_rank=16, kv_lora_rank=12, qk_rope_head_dim=8, qk_nope_head_dim=8,
                qk_head_dim=16, v_head_dim=12),
    "lightnet": dict(num_heads=2, expand_ratio=8, gate_low_rank_dim=8, use_short_conv=True),
    "rwkv6": dict(num_heads=2, expand_k=0.5, expand_v=1, proj_low_rank_dim=4, gate_low_rank_dim=8),
    "forgetting_transformer": dict(num_heads=4, num_kv_heads=2, qk_norm=True, use_output_gate=True),
}
HYBRID = dict(attn={"layers": [1], "num_heads": 2, "num_kv_heads": 1, "window_size": 3})


def _available():
    from flactl.models import FAMILIES
    return [f for f in TINY if f in FAMILIES]


FAMS = _available()


@pytest.fixture(autouse=True)
def _torch_ops():
    with force_backend("torch"):
        yield


def make(family, **over):
    cfg = AutoConfig.for_model(family, **{**COMMON, **TINY[family], **over})
    torch.manual_seed(1)
    return AutoModelForCausalLM.from_config(cfg).float().eval()


def ids(*shape):
    return torch.randint(1, V, shape)


@pytest.mark.parametrize("family", FAMS)
def test_forward_backward(family):
    m = make(family).train()
    x = ids(2, 11)
    out = m(x, labels=x)
    assert out.logits.shape == (2, 11, V) and torch.isfinite(out.loss)
    out.loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


@pytest.mark.parametrize("hybrid", [False, True], ids=["pure", "hybrid"])
@pytest.mark.parametrize("family", FAMS)
def test_cached_decoding_matches_full(family, hybrid):
    m = make(family, **(HYBRID if hybrid else {}))
    x = ids(2, 10)
    with torch.no_grad():
        full = m(x, use_cache=False).logits
        out = m(x[:, :5], use_cache=True)
        assert_close("prefill", full[:, :5], out.logits, 1e-5)
        cache = out.past_key_values
        out = m(x[:, 5:7], past_key_values=cache, use_cache=True)  # multi-token continuation
        assert_close("continue", full[:, 5:7], out.logits, 1e-5)
        for t in range(7, 10):
            out = m(x[:, t:t + 1], past_key_values=cache, use_cache=True)
            assert_close(f"step {t}", full[:, t:t + 1], out.logits, 1e-5)
        assert cache.get_seq_length() == 10
        if hybrid:  # the sliding-window layer keeps only the last window_size keys
            assert cache[1]["attn_state"][0].shape[1] == HYBRID["attn"]["window_size"]
        g1 = m.generate(x[:, :4], max_new_tokens=5, do_sample=False)
        g2 = m.generate(x[:, :4], max_new_tokens=5, do_sample=False, use_cache=False)
    assert torch.equal(g1, g2)


@pytest.mark.parametrize("family", FAMS)
def test_long_prefill_then_decode(family):
    """A prefill longer than 64 tokens runs the chunk kernels, the steps after it fused_recurrent."""
    m = make(family, **HYBRID)
    x = ids(1, 72)
    with torch.no_grad():
        full = m(x, use_cache=False).logits
        out = m(x[:, :70], use_cache=True)
        assert_close("prefill", full[:, :70], out.logits, 1e-4)
        for t in (70, 71):
            out = m(x[:, t:t + 1], past_key_values=out.past_key_values, use_cache=True)
            assert_close(f"step {t}", full[:, t:t + 1], out.logits, 1e-4)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("family", FAMS)
def test_padded_batch_matches_single(family, side):
    m = make(family, **HYBRID)
    lens = [7, 3, 9]
    T = max(lens)
    seqs = [ids(1, n) for n in lens]
    batch = torch.zeros(len(lens), T, dtype=torch.long)
    mask = torch.zeros(len(lens), T, dtype=torch.long)
    for b, s in enumerate(seqs):
        sl = slice(T - s.shape[1], T) if side == "left" else slice(0, s.shape[1])
        batch[b, sl], mask[b, sl] = s[0], 1
    with torch.no_grad():
        logits = m(batch, attention_mask=mask).logits
        for b, s in enumerate(seqs):
            ref = m(s).logits[0]
            got = logits[b][mask[b].bool()]
            assert_close(f"sample {b}", ref, got, 1e-5)
        if side == "left":
            gen = m.generate(batch, attention_mask=mask, max_new_tokens=4, do_sample=False)[:, T:]
            for b, s in enumerate(seqs):
                alone = m.generate(s, max_new_tokens=4, do_sample=False)[0, s.shape[1]:]
                assert torch.equal(gen[b], alone), f"sample {b}: {gen[b].tolist()} != {alone.tolist()}"


@pytest.mark.parametrize("family", FAMS)
def test_padded_equals_packed(family):
    m = make(family, **HYBRID).train()
    lens = [5, 8, 2]
    seqs = [ids(n) for n in lens]
    T = max(lens)
    batch = torch.zeros(len(lens), T, dtype=torch.long)
    mask = torch.zeros(len(lens), T, dtype=torch.long)
    for b, s in enumerate(seqs):
        batch[b, :len(s)], mask[b, :len(s)] = s, 1
    packed = torch.cat(seqs).unsqueeze(0)
    cu = torch.tensor([0, 5, 13, 15])
    h_pad = m.base_model(batch, attention_mask=mask).last_hidden_state[mask.bool()]
    h_pack = m.base_model(packed, cu_seqlens=cu).last_hidden_state[0]
    assert_close("hidden", h_pad, h_pack, 1e-5)
    with pytest.raises(ValueError, match="cu_seqlens"):
        m(packed, cu_seqlens=cu, attention_mask=torch.ones_like(packed))


@pytest.mark.parametrize("family", FAMS)
def test_save_load_identical(family, tmp_path):
    m = make(family, **HYBRID)
    m.save_pretrained(tmp_path)
    m2 = AutoModelForCausalLM.from_pretrained(tmp_path).float().eval()
    assert type(m2) is type(m)
    x = ids(2, 7)
    with torch.no_grad():
        assert torch.equal(m(x).logits, m2(x).logits)


@pytest.mark.parametrize("family", FAMS)
def test_gradient_checkpointing_same_grads(family):
    m = make(family).train()
    x = ids(2, 9)

    def grads():
        m.zero_grad()
        m(x, labels=x).loss.backward()
        return {n: p.grad.clone() for n, p in m.named_parameters()}

    ref = grads()
    m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert m.base_model.gradient_checkpointing
    got = grads()
    for n in ref:
        assert_close(n, ref[n], got[n], 1e-5)


def test_legacy_fields_warn_and_are_ignored():
    with pytest.warns(UserWarning, match="use_gk"):
        cfg = AutoConfig.for_model("gla", use_gk=True, **COMMON)
    with pytest.warns(UserWarning, match="attn_mode"):
        cfg = AutoConfig.for_model("gla", attn_mode="fused_chunk", **COMMON)
    assert cfg.attn_mode == "chunk"
    with pytest.warns(UserWarning, match="some_future_field"):
        AutoConfig.for_model("retnet", some_future_field=3, **COMMON)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AutoConfig.for_model("gla", **COMMON)
    with pytest.raises(ValueError, match="num_heads"):
        AutoConfig.for_model("gla", attn={"layers": [0]}, **COMMON)


def test_beam_search_runs():
    m = make("gla", **HYBRID)
    out = m.generate(ids(2, 4), max_new_tokens=3, num_beams=2, do_sample=False)
    assert out.shape == (2, 7)


def test_hgrn2_config_derives_and_validates_expand_ratio():
    """fla: expand_ratio is the forget-gate head dim; num_heads alone derives it; inconsistent values raise."""
    cfg = AutoConfig.for_model("hgrn2", **{**COMMON, "num_heads": 4})
    assert cfg.expand_ratio == COMMON["hidden_size"] // 4
    m = AutoModelForCausalLM.from_config(cfg).float().eval()
    with torch.no_grad():
        assert torch.isfinite(m(ids(1, 5)).logits).all()  # used to crash here (expand_ratio=128)
    cfg = AutoConfig.for_model("hgrn2", **{**COMMON, "hidden_size": 256})
    assert (cfg.expand_ratio, cfg.num_heads) == (128, None)  # fla's default; the layer derives 2 heads
    assert AutoConfig.for_model("hgrn2", **{**COMMON, "num_heads": 2, "expand_ratio": 16}).expand_ratio == 16
    with pytest.raises(ValueError, match="num_heads.*expand_ratio.*hidden_size"):
        AutoConfig.for_model("hgrn2", **{**COMMON, "num_heads": 4, "expand_ratio": 128})
    with pytest.raises(ValueError, match="num_heads"):
        AutoConfig.for_model("hgrn2", **{**COMMON, "num_heads": 5})
    with pytest.raises(ValueError, match="expand_ratio"):
        AutoConfig.for_model("hgrn2", **{**COMMON, "expand_ratio": 12})  # 2 heads * 12 != 32 lower-bound channels
    with pytest.raises(ValueError, match="expand_ratio"):
        AutoConfig.for_model("hgrn2", **COMMON)  # default 128 > hidden_size 32
