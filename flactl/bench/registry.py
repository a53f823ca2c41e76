"""What ``flactl bench`` can measure: ops (one entry per op family) and whole models.

An :class:`OpSpec` says how to build random inputs for a shape, which keyword names the chunk and
recurrent (decode) kernels take, and where the optional fla peer keeps the same op. Providers
(``providers.py``) turn a spec into callables. FLOP and byte counts are the *model* of the work used
to report TFLOP/s and GB/s (see :func:`op_flops`, :func:`op_bytes`); they are stated, not measured.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

CHUNK = 64  # chunk length the FLOP model assumes (flactl and fla both use 64)


@dataclass(frozen=True)
class OpSpec:
    name: str
    module: str                  # flactl.ops.<module>
    chunk_fn: str                # chunk_<x>: training / prefill
    decode_fn: Optional[str]     # fused_recurrent_<x>: one-token decode with a state
    gates: tuple[str, ...] = ()  # extra inputs: 'g' [B,T,H] log decay, 'gk' [B,T,H,K] log decay, 'beta' [B,T,H]
    decode_gate_names: dict = field(default_factory=dict)  # input name → keyword of the recurrent kernel
    l2norm_qk: bool = False      # delta rules expect unit-norm keys
    delta: bool = False          # extra WY-representation work in the FLOP model
    fla_module: Optional[str] = None
    doc: str = ""


OPS: dict[str, OpSpec] = {s.name: s for s in [
    OpSpec("retention", "retention", "chunk_retention", "fused_recurrent_retention",
           fla_module="fla.ops.retention", doc="RetNet: fixed per-head decay"),
    OpSpec("simple_gla", "simple_gla", "chunk_simple_gla", "fused_recurrent_simple_gla", gates=("g",),
           fla_module="fla.ops.simple_gla", doc="scalar data-dependent decay per head"),
    OpSpec("gla", "gla", "chunk_gla", "fused_recurrent_gla", gates=("gk",), decode_gate_names={"g": "gk"},
           fla_module="fla.ops.gla", doc="GLA: vector (per-key) decay"),
    OpSpec("linear_attn", "linear_attn", "chunk_linear_attn", "fused_recurrent_linear_attn",
           fla_module="fla.ops.linear_attn", doc="plain linear attention (no decay)"),
    OpSpec("delta_rule", "delta_rule", "chunk_delta_rule", "fused_recurrent_delta_rule", gates=("beta",),
           l2norm_qk=True, delta=True, fla_module="fla.ops.delta_rule", doc="DeltaNet"),
    OpSpec("gated_delta_rule", "gated_delta_rule", "chunk_gated_delta_rule", "fused_recurrent_gated_delta_rule",
           gates=("g", "beta"), l2norm_qk=True, delta=True, fla_module="fla.ops.gated_delta_rule",
           doc="Gated DeltaNet"),
]}
ALIASES = {"gdn": "gated_delta_rule", "deltanet": "delta_rule", "delta_net": "delta_rule", "retnet": "retention",
           "gated_deltanet": "gated_delta_rule", "linear": "linear_attn"}

# fwd: no grad (inference / prefill); fwd_train: the forward of a training step (inputs require grad, the
# graph and what the backward needs are kept, no backward); fwdbwd: forward + backward; decode: one token
MODES = ("fwd", "fwd_train", "fwdbwd", "decode")


def get_op(name: str) -> Optional[OpSpec]:
    name = name.removeprefix("op:")
    return OPS.get(ALIASES.get(name, name))


def make_inputs(spec: OpSpec, B: int, T: int, H: int, K: int, V: int, dtype, device, requires_grad: bool) -> dict:
    """Random inputs (never zeros) in fla's layout: q/k ``[B,T,H,K]``, v ``[B,T,H,V]``, gates in log space."""
    import torch
    import torch.nn.functional as F

    def leaf(t):
        return t.to(dtype).detach().requires_grad_(requires_grad)

    q = torch.randn(B, T, H, K, device=device)
    k = torch.randn(B, T, H, K, device=device)
    if spec.l2norm_qk:
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    inputs = {"q": leaf(q), "k": leaf(k), "v": leaf(torch.randn(B, T, H, V, device=device))}
    if "g" in spec.gates:  # scalar log decay in (-inf, 0), mostly close to 0
        inputs["g"] = leaf(F.logsigmoid(torch.randn(B, T, H, device=device) + 4.0))
    if "gk" in spec.gates:  # fla-style GLA gates: logsigmoid / 16
        inputs["g"] = leaf(F.logsigmoid(torch.randn(B, T, H, K, device=device)) / 16)
    if "beta" in spec.gates:
        inputs["beta"] = leaf(torch.rand(B, T, H, device=device).sigmoid())
    return inputs


def op_flops(spec: Optional[OpSpec], mode: str, B: int, T: int, H: int, K: int, V: int, ctx: int = 0) -> float:
    """Matmul FLOPs of the algorithm (``spec=None``: causal softmax attention).

    Chunked linear attention per token and head: intra-chunk scores (C·K) and their product with V
    (C·V), the state read q·S (K·V) and the state update kᵀv (K·V), ×2 for multiply-add; the delta
    rule adds the WY representation (≈ C·K + C·V more). Causal attention: 2·T²·(K+V)/2 per head.
    Backward ≈ 2× forward, so fwdbwd = 3× fwd. Decode: one token against a state of K·V
    (linear) or a cache of ``ctx`` tokens (attention).
    """
    if mode == "decode":
        per = 4 * K * V if spec is not None else 2 * ctx * (K + V)
        return float(B * H * per)
    if spec is None:
        fwd = B * H * T * T * (K + V)  # causal: half of 2·T²·(K+V)
    else:
        c = min(CHUNK, T)
        per_tok = 2 * (c * K + c * V + 2 * K * V) + (2 * (c * K + c * V) if spec.delta else 0)
        fwd = B * H * T * per_tok
    return float(fwd * (3 if mode == "fwdbwd" else 1))


def op_bytes(inputs: dict, mode: str, B: int, H: int, K: int, V: int, elt: int, ctx: int = 0, attention: bool = False) -> float:
    """Minimum bytes moved: every input read once and the output written once (fwd); fwdbwd adds
    reading the output gradient and writing one gradient per input. Decode: the recurrent state
    (float32, read + write) or the kv cache (read) plus q/k/v/o."""
    if mode == "decode":
        io = B * H * (2 * K + 2 * V) * elt
        return float(io + (2 * B * ctx * H * (K + V) * elt if attention else 2 * B * H * K * V * 4))
    n_in = sum(t.numel() * t.element_size() for t in inputs.values())
    out = inputs["v"].numel() * inputs["v"].element_size()
    if mode in ("fwd", "fwd_train"):
        return float(n_in + out)
    return float(2 * n_in + 2 * out)


def describe() -> list[dict]:
    return [{"name": s.name, "kind": "op", "chunk": f"flactl.ops.{s.module}.{s.chunk_fn}",
             "decode": s.decode_fn and f"flactl.ops.{s.module}.{s.decode_fn}", "doc": s.doc} for s in OPS.values()]


Runner = Callable[[], object]
