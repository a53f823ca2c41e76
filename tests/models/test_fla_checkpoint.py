"""Loading checkpoint directories laid out like fla's (config.json + model.safetensors).

The fixtures are written from the key names and shapes documented in fla-facts §2–3 (not from fla's
code): for each family a config.json with fla's model_type and field names (plus legacy fields fla
once wrote) and a state dict with exactly fla's keys. ``from_pretrained`` after ``import flactl``
must report no missing/unexpected keys, keep every tensor, and run a forward pass.
"""
from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

import flactl  # noqa: F401
from flactl.ops.utils import force_backend

h, L, V, I = 32, 2, 48, 64  # hidden, layers, vocab, MLP intermediate size


def _common(prefix="model"):
    keys = {f"{prefix}.embeddings.weight": (V, h), f"{prefix}.norm.weight": (h,), "lm_head.weight": (V, h)}
    for i in range(L):
        p = f"{prefix}.layers.{i}."
        keys.update({p + "attn_norm.weight": (h,), p + "mlp_norm.weight": (h,), p + "mlp.gate_proj.weight": (I, h),
                     p + "mlp.up_proj.weight": (I, h), p + "mlp.down_proj.weight": (h, I)})
    return keys


def _per_layer(fields):
    return {f"model.layers.{i}.attn.{k}": s for i in range(L) for k, s in fields.items()}


def gla():
    # expand_k=0.5, expand_v=1, 4 heads, 2 kv heads (g=2): Dk=16, Dv=32, head_v=8
    cfg = dict(model_type="gla", architectures=["GLAForCausalLM"], attn_mode="chunk", expand_k=0.5, expand_v=1,
               num_heads=4, num_kv_heads=2, use_gk=True, use_gv=False, use_output_gate=True, clamp_min=None)
    attn = {"q_proj.weight": (16, h), "k_proj.weight": (8, h), "v_proj.weight": (16, h), "g_proj.weight": (32, h),
            "gk_proj.0.weight": (16, h), "gk_proj.1.weight": (8, 16), "gk_proj.1.bias": (8,),
            "o_proj.weight": (h, 32), "g_norm_swish_gate.weight": (8,)}
    return cfg, {**_common(), **_per_layer(attn)}


def delta_net():
    # expand_k=expand_v=1, 4 heads: Dk=Dv=32, head_v=8; short conv W=4
    cfg = dict(model_type="delta_net", architectures=["DeltaNetForCausalLM"], attn_mode="chunk", num_heads=4,
               use_beta=True, use_gate=False, use_short_conv=True, conv_size=4, qk_norm="l2", qk_activation="silu",
               use_output_norm=True)
    attn = {"q_proj.weight": (32, h), "k_proj.weight": (32, h), "v_proj.weight": (32, h), "b_proj.weight": (4, h),
            "q_conv1d.weight": (32, 1, 4), "k_conv1d.weight": (32, 1, 4), "v_conv1d.weight": (32, 1, 4),
            "o_norm.weight": (8,), "o_proj.weight": (h, 32)}
    return cfg, {**_common(), **_per_layer(attn)}


def gated_deltanet():
    # head_dim=8, H=2, HV=4 (GVA), expand_v=2: Dv=16, value dim 64
    cfg = dict(model_type="gated_deltanet", architectures=["GatedDeltaNetForCausalLM"], attn_mode="chunk",
               head_dim=8, num_heads=2, num_v_heads=4, expand_v=2, use_gate=True, use_short_conv=True, conv_size=4)
    attn = {"q_proj.weight": (16, h), "k_proj.weight": (16, h), "v_proj.weight": (64, h), "a_proj.weight": (4, h),
            "b_proj.weight": (4, h), "A_log": (4,), "dt_bias": (4,), "q_conv1d.weight": (16, 1, 4),
            "k_conv1d.weight": (16, 1, 4), "v_conv1d.weight": (64, 1, 4), "g_proj.weight": (64, h),
            "o_norm.weight": (16,), "o_proj.weight": (h, 64)}
    return cfg, {**_common(), **_per_layer(attn)}


def retnet():
    # expand_k=1, expand_v=2, 4 heads: Dk=32, Dv=64, head_v=16
    cfg = dict(model_type="retnet", architectures=["RetNetForCausalLM"], attn_mode="chunk", expand_k=1, expand_v=2,
               num_heads=4, use_output_gate=True)
    attn = {"q_proj.weight": (32, h), "k_proj.weight": (32, h), "v_proj.weight": (64, h), "g_proj.weight": (64, h),
            "o_proj.weight": (h, 64), "g_norm_swish_gate.weight": (16,)}
    return cfg, {**_common(), **_per_layer(attn)}


def transformer():
    # 4 heads, 2 kv heads, head_dim 8, qk_norm, hybrid-free
    cfg = dict(model_type="transformer", architectures=["TransformerForCausalLM"], num_heads=4, num_kv_heads=2,
               qk_norm=True, qkv_bias=True, window_size=None, rope_theta=10000.0)
    attn = {"q_proj.weight": (h, h), "q_proj.bias": (h,), "k_proj.weight": (16, h), "k_proj.bias": (16,),
            "v_proj.weight": (16, h), "v_proj.bias": (16,), "o_proj.weight": (h, h), "q_norm.weight": (8,),
            "k_norm.weight": (8,)}
    return cfg, {**_common(), **_per_layer(attn)}


def gla_hybrid():
    cfg, keys = gla()
    cfg["attn"] = {"layers": [1], "num_heads": 4, "num_kv_heads": 2, "window_size": 8, "rope_theta": 10000.0}
    keys = {k: s for k, s in keys.items() if not k.startswith("model.layers.1.attn.")}
    keys.update({"model.layers.1.attn.q_proj.weight": (h, h), "model.layers.1.attn.k_proj.weight": (16, h),
                 "model.layers.1.attn.v_proj.weight": (16, h), "model.layers.1.attn.o_proj.weight": (h, h)})
    return cfg, keys


def mla():
    # 4 heads, q_lora_rank 16, kv_lora_rank 24, nope 8 + rope 4 = qk_head_dim 12, v_head_dim 6 (fla-facts §2:
    # q_proj low-rank as a Sequential (Linear, RMSNorm, Linear), shared k_rope, kv_proj (Linear, RMSNorm, Linear))
    cfg = dict(model_type="mla", architectures=["MLAForCausalLM"], num_heads=4, q_lora_rank=16, kv_lora_rank=24,
               qk_rope_head_dim=4, qk_nope_head_dim=8, qk_head_dim=12, v_head_dim=6, window_size=None,
               rope_theta=10000.0, rope_scaling=None, max_position_embeddings=2048)
    attn = {"q_proj.0.weight": (16, h), "q_proj.1.weight": (16,), "q_proj.2.weight": (4 * 12, 16),
            "k_rope.weight": (4, h), "kv_proj.0.weight": (24, h), "kv_proj.1.weight": (24,),
            "kv_proj.2.weight": (4 * (8 + 6), 24), "o_proj.weight": (h, 4 * 6)}
    return cfg, {**_common(), **_per_layer(attn)}


def mamba2():
    # head_dim 8, state 8, expand 2: d_inner 64, 8 heads, n_groups 1: conv_dim 64 + 16 = 80
    cfg = dict(model_type="mamba2", architectures=["Mamba2ForCausalLM"], head_dim=8, state_size=8, expand=2,
               n_groups=1, conv_kernel=4, chunk_size=256, residual_in_fp32=True, norm_eps=1e-5)
    keys = {"backbone.embeddings.weight": (V, h), "backbone.norm_f.weight": (h,), "lm_head.weight": (V, h)}
    for i in range(L):
        p = f"backbone.layers.{i}."
        keys.update({p + "norm.weight": (h,), p + "mixer.in_proj.weight": (64 + 80 + 8, h),
                     p + "mixer.conv1d.weight": (80, 1, 4), p + "mixer.conv1d.bias": (80,),
                     p + "mixer.dt_bias": (8,), p + "mixer.A_log": (8,), p + "mixer.D": (8,),
                     p + "mixer.norm.weight": (64,), p + "mixer.out_proj.weight": (h, 64)})
    return cfg, keys


FIXTURES = {f.__name__: f for f in (gla, delta_net, gated_deltanet, retnet, transformer, gla_hybrid, mla, mamba2)}


@pytest.mark.parametrize("name", list(FIXTURES))
def test_fla_layout_checkpoint_loads(name, tmp_path):
    cfg, shapes = FIXTURES[name]()
    cfg.update(hidden_size=h, num_hidden_layers=L, vocab_size=V, intermediate_size=I, hidden_act="swish",
               norm_eps=cfg.get("norm_eps", 1e-6), fuse_cross_entropy=True, tie_word_embeddings=False,
               transformers_version="4.53.3", torch_dtype="float32")
    g = torch.Generator().manual_seed(0)
    tensors = {k: (torch.randn(s, generator=g) * 0.1).contiguous() for k, s in shapes.items()}
    for k in tensors:  # realistic values where the model needs them (log-decays, norms)
        if k.endswith("A_log"):
            tensors[k] = torch.rand(shapes[k], generator=g).add(1).log()
        if k.endswith("norm.weight") or k.endswith("norm_f.weight") or k.endswith("gate.weight"):
            tensors[k] = 1 + 0.1 * torch.randn(shapes[k], generator=g)
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy fields (e.g. GLA's use_gk) warn by design
        model, info = AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"], info["missing_keys"]
    assert not info["unexpected_keys"], info["unexpected_keys"]
    assert not info.get("mismatched_keys"), info.get("mismatched_keys")
    sd = model.state_dict()
    assert set(sd) == set(tensors)
    for k, t in tensors.items():
        assert torch.equal(sd[k].float(), t), k
    with force_backend("torch"), torch.no_grad():
        logits = model.float().eval()(torch.randint(0, V, (1, 6))).logits
    assert logits.shape == (1, 6, V) and torch.isfinite(logits).all()
