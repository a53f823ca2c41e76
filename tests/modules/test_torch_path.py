"""The same checks on the plain torch path (what CPU tensors use outside the interpreter, e.g. model tests
under ``force_backend('torch')``)."""
import pytest

from flactl.ops.utils import force_backend

import test_conv
import test_elementwise
import test_losses
import test_norms
import test_rotary

CASES = [
    (test_norms.test_norm_residual, dict(kind="layer", C=72, bias=True, groups=1, residual=True)),
    (test_norms.test_norm_residual, dict(kind="group", C=80, bias=True, groups=4, residual=False)),
    (test_norms.test_gated_norm, dict(cls=test_norms.FusedRMSNormGated, act="sigmoid", bias=False)),
    (test_norms.test_norm_linear, dict(cls=test_norms.FusedRMSNormGatedLinear)),
    (test_norms.test_l2_norm, {}),
    (test_conv.test_conv, dict(W=4, bias=True, act="silu", use_cache=True, varlen=True)),
    (test_conv.test_decode_steps_match_full, dict(varlen=True)),
    (test_rotary.test_rotary_offsets, dict(interleaved=True, dim=32, D=48)),
    (test_rotary.test_rotary_varlen_matches_per_sequence, {}),
    (test_elementwise.test_token_shift, dict(varlen=True, use_cache=True)),
    (test_elementwise.test_swiglu, {}),
    (test_losses.test_cross_entropy, dict(reduction="none", ls=0.1, scale=0.5)),
    (test_losses.test_fused_linear_cross_entropy, dict(reduction="mean", bias=True, ls=0.1, chunks=3)),
    (test_losses.test_fused_linear_cross_entropy, dict(reduction="none", bias=False, ls=0.0, chunks=8)),
]


@pytest.mark.parametrize("fn,kwargs", CASES, ids=[f"{f.__name__}-{i}" for i, (f, _) in enumerate(CASES)])
def test_torch_path(fn, kwargs):
    import inspect
    if "nan_poison" in inspect.signature(fn).parameters:
        kwargs = dict(kwargs, nan_poison=None)
    with force_backend("torch"):
        fn(**kwargs)
