"""Layer-level benchmark: a whole token-mixing layer (projections, short convs, gates, norm, op).

Providers: ``flactl`` (``flactl.layers.<Class>``), ``fla`` (``fla.layers.<Class>`` with the same
keyword arguments, only when importable: imported lazily here and nowhere else besides
``providers.py``) and ``sdpa`` (flactl's softmax ``Attention`` layer with the same width and heads:
the baseline for the crossover length). Input ``x`` is ``[B, T, hidden_size]``.
"""
from __future__ import annotations

import importlib
from dataclasses import asdict
from typing import Callable, Optional

LAYERS = {
    "gla": "GatedLinearAttention", "retnet": "MultiScaleRetention", "retention": "MultiScaleRetention",
    "delta_net": "DeltaNet", "delta_rule": "DeltaNet", "gated_deltanet": "GatedDeltaNet",
    "gated_delta_rule": "GatedDeltaNet", "linear_attn": "LinearAttention", "hgrn": "HGRNAttention",
    "hgrn2": "HGRN2Attention", "mamba2": "Mamba2", "gated_deltaproduct": "GatedDeltaProduct", "attn": "Attention",
    "comba": "Comba", "lightnet": "LightNetAttention", "mla": "MultiheadLatentAttention", "rwkv6": "RWKV6Attention",
    "forgetting_attn": "ForgettingAttention", "forgetting_transformer": "ForgettingAttention",
}
PROVIDERS = ("flactl", "fla", "sdpa")


def get_layer(name: str) -> Optional[str]:
    return LAYERS.get(name.removeprefix("layer:")) if name.startswith("layer:") else None


def _build(provider: str, cls_name: str, kwargs: dict, dtype, device):
    if provider == "sdpa":
        mod, cls_name = importlib.import_module("flactl.layers"), "Attention"
        kwargs = {"hidden_size": kwargs["hidden_size"], "num_heads": kwargs["num_heads"]}
    elif provider == "fla":
        mod = importlib.import_module("fla.layers")  # optional peer, lazily
    else:
        mod = importlib.import_module("flactl.layers")
    cls = getattr(mod, cls_name)
    return cls(**kwargs).to(device=device, dtype=dtype)


def run_layer(target: str, cfg, hidden_size: int, sets: dict, progress: Optional[Callable[[str], None]] = None) -> dict:
    import torch

    from flactl.convert.modeldir import parse_dtype

    from .runner import Row, _fill_speedups, crossover, environment, time_fn

    cls_name = get_layer(target)
    dtype = parse_dtype(cfg.dtype)
    kwargs = {"hidden_size": hidden_size, "num_heads": cfg.heads, "layer_idx": 0, **sets}
    rows: list[Row] = []
    layers = {}
    for p in cfg.providers:
        try:
            layers[p] = _build(p, cls_name, kwargs, dtype, cfg.device)
        except Exception as e:  # noqa: BLE001  (fla missing, or a kwarg one side lacks)
            layers[p] = f"{type(e).__name__}: {str(e).splitlines()[0][:100]}"
    for T in cfg.lengths:
        torch.manual_seed(cfg.seed)
        x = torch.randn(cfg.batch, T, hidden_size, device=cfg.device, dtype=dtype, requires_grad=cfg.mode in ("fwdbwd", "fwd_train"))
        do = torch.randn_like(x)
        for p in cfg.providers:
            if progress:
                progress(f"{cls_name} {cfg.mode} T={T} {p}")
            layer = layers[p]
            if isinstance(layer, str):
                rows.append(Row(T, p, None, note=layer))
                continue

            def fwd(layer=layer):
                out = layer(x)
                return out[0] if isinstance(out, tuple) else out

            if cfg.mode == "fwdbwd":
                def fn(fwd=fwd, layer=layer):
                    x.grad = None
                    layer.zero_grad(set_to_none=True)
                    fwd().backward(do)
            else:
                def fn(fwd=fwd):
                    with torch.set_grad_enabled(cfg.mode == "fwd_train"):
                        fwd()
            try:
                ms = time_fn(fn, cfg.device, cfg.warmup_ms, cfg.rep_ms)
            except Exception as e:  # noqa: BLE001
                rows.append(Row(T, p, None, note=f"{type(e).__name__}: {str(e).splitlines()[0][:100]}"))
                continue
            # no FLOP model for whole layers: report tokens/s in the GB/s column's place
            rows.append(Row(T, p, ms, note=f"{cfg.batch * T / ms * 1e3:,.0f} tok/s"))
    _fill_speedups(rows)
    return {"kind": "layer", "op": f"layer:{cls_name}", "config": {**asdict(cfg), "hidden_size": hidden_size, "layer_kwargs": kwargs},
            "env": environment(cfg.device), "rows": [asdict(r) for r in rows],
            "crossover_vs_sdpa": crossover(rows, cfg.lengths)}
