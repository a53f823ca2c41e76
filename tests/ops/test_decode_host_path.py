"""The T=1 decode calls of the fused recurrent ops take a short host path (cheap validation, no
autograd, cached launch configs; see flactl/ops/common/fused_recurrent.py and delta_api.py).
It must reject every bad input the full checks reject, give the same results as the full path,
and the backend environment variables must still act when set at runtime.
"""
from __future__ import annotations

import pytest
import torch
from helpers import DEVICE, assert_close, randn

from flactl.ops.gated_delta_rule import fused_recurrent_gated_delta_rule
from flactl.ops.simple_gla import fused_recurrent_simple_gla
from flactl.ops.utils import use_triton
from flactl.ops.utils.index import next_power_of_2

B, H, HV, K, V = 2, 2, 4, 16, 32


def _gla_inputs():
    return dict(q=randn(B, 1, H, K), k=randn(B, 1, H, K), v=randn(B, 1, H, V), g=-torch.rand(B, 1, H, device=DEVICE),
                initial_state=randn(B, H, K, V, dtype=torch.float32), output_final_state=True)


def _gdn_inputs():
    return dict(q=randn(B, 1, H, K), k=randn(B, 1, H, K), v=randn(B, 1, HV, V), g=randn(B, 1, HV),
                beta=randn(B, 1, HV), initial_state=randn(B, HV, K, V, dtype=torch.float32),
                output_final_state=True, use_qk_l2norm_in_kernel=True, use_gate_in_kernel=True,
                A_log=torch.rand(HV, device=DEVICE).log(), dt_bias=randn(HV, dtype=torch.float32),
                use_beta_sigmoid_in_kernel=True)


GLA_BAD = {
    "q": lambda x: x["q"][..., :8],
    "k": lambda x: x["k"].to(torch.int32),
    "v": lambda x: x["v"][:, :, :1],
    "g": lambda x: x["g"][..., :1],
    "initial_state": lambda x: x["initial_state"][..., :8],
}
GDN_BAD = {
    "v": lambda x: randn(B, 1, 3, V),  # heads not a multiple of q/k heads
    "beta": lambda x: x["beta"][..., :2],
    "g": lambda x: None,
    "A_log": lambda x: x["A_log"][:2],
    "dt_bias": lambda x: x["dt_bias"][:2],
    "initial_state": lambda x: x["initial_state"][:, :2],
    "head_first": lambda x: False,
}


@pytest.mark.parametrize("name", sorted(GLA_BAD))
def test_simple_gla_decode_rejects(name):
    x = _gla_inputs()
    with torch.no_grad():
        fused_recurrent_simple_gla(**x)  # the unchanged inputs are fine
        x[name] = GLA_BAD[name](x)
        with pytest.raises(ValueError):
            fused_recurrent_simple_gla(**x)


@pytest.mark.parametrize("name", sorted(GDN_BAD))
def test_gated_delta_rule_decode_rejects(name):
    x = _gdn_inputs()
    with torch.no_grad():
        fused_recurrent_gated_delta_rule(**x)
        x[name] = GDN_BAD[name](x)
        with pytest.raises(ValueError, match="heads" if name == "v" else name):
            fused_recurrent_gated_delta_rule(**x)


def test_decode_fast_path_matches_full_path():
    """B=1 with cu_seqlens [0, 1] runs the full validation path; without, the fast one."""
    cu = torch.tensor([0, 1], device=DEVICE)
    with torch.no_grad():
        x = {n: (t[:1] if isinstance(t, torch.Tensor) and t.dim() > 1 else t) for n, t in _gdn_inputs().items()}
        o1, h1 = fused_recurrent_gated_delta_rule(**x)
        o2, h2 = fused_recurrent_gated_delta_rule(**x, cu_seqlens=cu)
        assert_close("gdn o", o2, o1, 1e-6)
        assert_close("gdn state", h2, h1, 1e-6)
        x = {n: (t[:1] if isinstance(t, torch.Tensor) else t) for n, t in _gla_inputs().items()}
        o1, h1 = fused_recurrent_simple_gla(**x)
        o2, h2 = fused_recurrent_simple_gla(**x, cu_seqlens=cu)
        assert_close("gla o", o2, o1, 1e-6)
        assert_close("gla state", h2, h1, 1e-6)


def test_backend_env_read_at_call_time(monkeypatch):
    x = torch.zeros(1)  # a CPU tensor: the variables decide
    monkeypatch.setenv("FLACTL_OPS_BACKEND", "torch")
    assert not use_triton(x)
    monkeypatch.setenv("FLACTL_OPS_BACKEND", "bogus")
    with pytest.raises(ValueError, match="FLACTL_OPS_BACKEND"):
        use_triton(x)
    monkeypatch.delenv("FLACTL_OPS_BACKEND")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not use_triton(x)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert use_triton(x)


def test_next_power_of_2_matches_triton():
    import triton

    assert all(next_power_of_2(n) == triton.next_power_of_2(n) for n in range(1, 2049))
