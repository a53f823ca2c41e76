"""Layer-level tests (CPU, float32).

* The real Triton kernels (Triton interpreter) and the ops' torch path give the same layer output and
  input gradient, in chunk mode (training) and fused_recurrent mode (eval, short input): this checks
  how each layer calls its ops (argument order, gates, GVA, varlen) — the kernels themselves are tested
  under tests/ops.
* A standalone layer given a padded ``attention_mask`` unpads itself: each sample equals the sample alone.
* A layer called with a cache continues exactly where the uncached layer would be.
"""
from __future__ import annotations

import warnings

import pytest
import torch
from helpers import ON_GPU, assert_close

from flactl.layers import (Attention, Comba, DeltaNet, GatedDeltaNet, GatedDeltaProduct, GatedLinearAttention, HGRN2Attention,
                           HGRNAttention, LightNetAttention, LinearAttention, Mamba2, MultiScaleRetention)
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
    "gated_deltaproduct": lambda: GatedDeltaProduct(hidden_size=h, head_dim=16, num_heads=2, expand_v=1,
                                                    num_householder=2, layer_idx=0),
    "linear_attn": lambda: LinearAttention(hidden_size=h, num_heads=2, feature_map="hedgehog",
                                           do_feature_map_norm=True, layer_idx=0),
    "hgrn": lambda: HGRNAttention(hidden_size=h, layer_idx=0),
    "hgrn2": lambda: HGRN2Attention(hidden_size=h, expand_ratio=16, layer_idx=0),
    "comba": lambda: Comba(hidden_size=h, head_dim=16, num_heads=1, num_v_heads=2, expand_v=1, correction_factor=0.7,
                           layer_idx=0),
    "lightnet": lambda: LightNetAttention(hidden_size=h, num_heads=2, expand_ratio=8, gate_low_rank_dim=8,
                                          use_short_conv=True, layer_idx=0),
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
    """CPU only: the interpreted Triton kernels against the torch path that CPU tensors take."""
    if ON_GPU:
        pytest.skip("compares the CPU torch path with the interpreted kernels; the GPU tests cover the kernels")
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


@pytest.mark.parametrize("name", [n for n in LAYERS if n != "attn"])
def test_chunk_mode_equals_recurrent_mode(name):
    """training (chunk kernels) and eval on a short input (fused_recurrent kernels) agree, varlen included."""
    layer = make(name)
    x = torch.randn(1, 23, h)
    cu = torch.tensor([0, 9, 23])
    with force_backend("torch"), torch.no_grad():
        o_chunk = layer.train()(x, cu_seqlens=cu)[0]
        o_rec = layer.eval()(x, cu_seqlens=cu)[0]
    assert_close("o", o_chunk, o_rec, 1e-5)


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


def test_gated_deltaproduct_matches_householder_reference():
    """Interleaved-sequence implementation == n_h explicit delta-rule steps per token (float64 loop)."""
    layer = make("gated_deltaproduct").eval()
    layer.use_forget_gate = False  # exercised separately below via the gate path
    torch.manual_seed(0)
    x = torch.randn(1, 7, h, dtype=torch.float32)
    with force_backend("torch"), torch.no_grad():
        o = layer(x)[0]
        q, k, v = layer.q_proj(x), layer.k_proj(x), layer.v_proj(x)
        (q, k, v), _ = layer.run_convs((layer.q_conv1d, layer.k_conv1d, layer.v_conv1d), (q, k, v), None, False, None)
        n, H, K, V = layer.num_householder, layer.num_heads, layer.head_k_dim, layer.head_v_dim
        q = torch.nn.functional.normalize(q.view(7, H, K).double(), dim=-1)
        k = torch.nn.functional.normalize(k.view(7, n, H, K).double(), dim=-1)
        v = v.view(7, n, H, V).double()
        beta = layer.b_proj(x).sigmoid().view(7, n, H).double() * 2  # allow_neg_eigval default
        S = torch.zeros(H, K, V, dtype=torch.float64)
        outs = []
        for t in range(7):
            for j in range(n):
                kt = k[t, j]
                err = v[t, j] - torch.einsum("hk,hkv->hv", kt, S)
                S = S + beta[t, j][:, None, None] * kt[:, :, None] * err[:, None, :]
            outs.append(torch.einsum("hk,hkv->hv", q[t] * K ** -0.5, S))
        ref = torch.stack(outs).float()
        ref = layer.o_proj(layer.o_norm(ref, layer.g_proj(x).view(7, H, V)).reshape(1, 7, -1))
    assert_close("o", ref, o, 1e-5)


def test_mamba2_matches_ssd_reference():
    """SSD through simple_gla == the Mamba2 recurrence h = exp(A dt) h + dt B x^T, y = C h + D x (float64 loop)."""
    layer = make("mamba2").eval()
    x = torch.randn(1, 9, h)
    with force_backend("torch"), torch.no_grad():
        o = layer(x)[0]
        z, xBC, dt = torch.split(layer.in_proj(x), [layer.intermediate_size, layer.conv_dim, layer.num_heads], -1)
        (xBC,), _ = layer.run_convs((layer.conv1d,), (xBC,), None, False, None)
        N, H, P = layer.ssm_state_size, layer.num_heads, layer.head_dim
        xs, Bm, Cm = torch.split(xBC[0].double(), [layer.intermediate_size, N, N], -1)
        dt = torch.nn.functional.softplus(dt[0].double() + layer.dt_bias.double())
        A = -layer.A_log.double().exp()
        S = torch.zeros(H, N, P, dtype=torch.float64)
        ys = []
        for t in range(9):
            xt = xs[t].view(H, P)
            S = torch.exp(A * dt[t])[:, None, None] * S + dt[t][:, None, None] * Bm[t][None, :, None] * xt[:, None, :]
            ys.append(torch.einsum("n,hnp->hp", Cm[t], S) + layer.D.double()[:, None] * xt)
        y = torch.stack(ys).reshape(1, 9, -1).float()
        ref = layer.out_proj(layer.norm(y, z))
    assert_close("o", ref, o, 1e-5)


def test_comba_matches_reference():
    """Layer == p = k sigmoid(decay), q - D p, then the float64 Comba recurrence (GVA, in-kernel gates)."""
    from flactl.ops.comba.naive import naive_recurrent_comba
    layer = make("comba").eval()
    with torch.no_grad():  # per-head D and decay away from their constant init
        layer.D.add_(torch.randn_like(layer.D))
        layer.decay.add_(torch.randn_like(layer.decay))
    x = torch.randn(1, 9, h)
    F = torch.nn.functional
    with force_backend("torch"), torch.no_grad():
        o = layer(x)[0]
        q, k, v = layer.q_proj(x), layer.k_proj(x), layer.v_proj(x)
        (q, k, v), _ = layer.run_convs((layer.q_conv1d, layer.k_conv1d, layer.v_conv1d), (q, k, v), None, False, None)
        H, HV, K, V = layer.num_heads, layer.num_v_heads, layer.head_k_dim, layer.head_v_dim
        q, k, v = q.view(1, 9, H, K).double(), k.view(1, 9, H, K).double(), v.view(1, 9, HV, V).double()
        p = k * layer.decay.double().sigmoid()[:, None]
        q = q - layer.D.double()[:, None] * p
        g = -layer.A_log.double().exp() * F.softplus(layer.a_proj(x).double() + layer.dt_bias.double())
        beta = layer.b_proj(x).double().sigmoid()
        ref, _ = naive_recurrent_comba(q, k, v, p, g, beta, use_qk_l2norm_in_kernel=True, dtype=torch.float64)
        # output: per-head RMSNorm gated by *sigmoid* (fla's Comba; the other delta layers use swish)
        ref = ref.float()
        normed = ref * torch.rsqrt(ref.pow(2).mean(-1, keepdim=True) + layer.o_norm.eps) * layer.o_norm.weight
        ref = layer.o_proj((normed * torch.sigmoid(layer.g_proj(x).view(1, 9, HV, V))).reshape(1, 9, -1))
    assert_close("o", ref, o, 1e-5)


def test_hgrn2_output_norm_uses_fla_effective_eps():
    """fla's HGRN2 applies g_norm through its fused norm+linear without passing eps, so 1e-5 is used
    whatever norm_eps is; checkpoints trained with fla need the same (1e-6 gave ~1e-2 logit diffs)."""
    from flactl.layers import HGRN2Attention
    layer = HGRN2Attention(hidden_size=h, num_heads=2, expand_ratio=8, norm_eps=1e-6, layer_idx=0)
    assert layer.g_norm.eps == 1e-5


def test_lightnet_key_normaliser_matches_running_logsumexp():
    """normalise_keys (vectorised, varlen by padded rows) == the token-by-token definition in float64:
    z_t = logaddexp(z_{t-1}, x_t), k_t = exp(x_t - z_t), gk_t = z_{t-1} - z_t (0 with nothing before);
    per sequence, from a cached z0, an empty sequence included; and its gradients are finite."""
    from flactl.layers.lightnet import normalise_keys
    torch.manual_seed(0)
    cu = torch.tensor([0, 3, 3, 7, 8])
    x = (3 * torch.randn(1, 8, 2, 4, dtype=torch.float64)).requires_grad_()
    for z0 in (None, torch.randn(4, 1, 2, 4, dtype=torch.float64, requires_grad=True)):
        k, gk, zt = normalise_keys(x, z0, cu)
        for n in range(4):
            zp = z0[n, 0] if z0 is not None else torch.full((2, 4), float("-inf"), dtype=torch.float64)
            for t in range(int(cu[n]), int(cu[n + 1])):
                z = torch.logaddexp(zp, x[0, t])
                assert_close(f"k seq {n} t {t}", torch.exp(x[0, t] - z), k[0, t], 1e-12)
                assert_close(f"gk seq {n} t {t}", torch.where(torch.isinf(zp), 0.0, zp - z), gk[0, t], 1e-12)
                zp = z
            if torch.isinf(zp).all():  # empty sequence without a cached z: stays -inf
                assert torch.isneginf(zt[n, 0]).all()
            else:
                assert_close(f"z seq {n}", zp, zt[n, 0], 1e-12)
        (k.sum() + gk.sum() + zt[torch.isfinite(zt)].sum()).backward()
        assert torch.isfinite(x.grad).all() and (z0 is None or torch.isfinite(z0.grad).all())
        x.grad = None
    y, z0 = torch.randn(1, 8, 2, 4, dtype=torch.float64, requires_grad=True), torch.randn(4, 1, 2, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: normalise_keys(a, z0, cu)[:2], (y,))


def test_lightnet_output_norm_uses_fla_effective_eps():
    """fla's LightNet applies g_norm (one RMSNorm over all heads) through its fused norm+gate+linear without
    passing eps, so 1e-6 is used whatever norm_eps says (the layer default is 1e-5)."""
    layer = LightNetAttention(hidden_size=h, num_heads=2, expand_ratio=8, gate_low_rank_dim=8, layer_idx=0)
    assert layer.g_norm.eps == 1e-6 and layer.g_norm.weight.shape == (h,)


@pytest.mark.parametrize("window", [None, 3], ids=["causal", "window"])
def test_attention_packed_batched_equals_per_document_loop(window):
    """The batched packed path (one SDPA call with a block-diagonal causal mask; FlexAttention's
    BlockMask on CUDA) == one SDPA call per document, uneven lengths incl. 1, GQA, with gradients."""
    from flactl.layers.attn import _document_block_mask
    torch.manual_seed(0)
    layer = Attention(hidden_size=h, num_heads=4, num_kv_heads=2, window_size=window, layer_idx=0)
    cu = torch.tensor([0, 1, 6, 7, 19, 20, 33])
    T = 33
    q = torch.randn(1, T, 4, 8, requires_grad=True)
    k = torch.randn(1, T, 2, 8, requires_grad=True)
    v = torch.randn(1, T, 2, 8, requires_grad=True)
    do = torch.randn(1, T, 4, 8)
    res = {}
    for name, fn in (("loop", layer._packed_loop), ("batched", layer._packed)):
        o = fn(q, k, v, cu)
        grads = torch.autograd.grad((o * do).sum(), (q, k, v))
        res[name] = (o.detach(), *grads)
    for i, n in enumerate(("o", "dq", "dk", "dv")):
        # not bitwise: the masked call reduces over longer (zero-padded) rows; float32 rounding only
        assert_close(n, res["loop"][i], res["batched"][i], 1e-6)
    # the FlexAttention mask_mod (eager flex on CPU = reference semantics of the CUDA kernel's mask)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "flex_attention called without torch.compile" (intended here)
        bm = _document_block_mask(cu, T, window, "cpu", compiled=False)
        o_flex = layer._flex(q.detach(), k.detach(), v.detach(), bm, compiled=False)
    assert_close("flex", res["loop"][0], o_flex, 1e-6)
    # the layer itself on a packed input (cu_seqlens) runs the batched path
    x = torch.randn(1, T, h)
    with torch.no_grad():
        full = layer(x, cu_seqlens=cu)[0]
        bounds = cu.tolist()
        alone = torch.cat([layer(x[:, a:b])[0] for a, b in zip(bounds[:-1], bounds[1:])], 1)
    assert_close("layer", alone, full, 1e-6)
