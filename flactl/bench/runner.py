"""Op benchmark runner: length sweep × providers → rows with ms, TFLOP/s, GB/s, ratios, crossover.

Timing: on a GPU, ``triton.testing.do_bench`` (median of ~``rep_ms`` of repetitions after
``warmup_ms`` of warm-up; one untimed call first absorbs compilation and autotuning). On a CPU, a
wall-clock median of a few calls (the CPU path exists so CI can exercise the harness).
"""
from __future__ import annotations

import math
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

from . import providers as prov
from .registry import OpSpec, make_inputs, op_bytes, op_flops


@dataclass
class BenchConfig:
    op: str
    mode: str = "fwd"
    providers: tuple[str, ...] = ("flactl", "torch", "sdpa", "fla")
    lengths: tuple[int, ...] = (1024, 2048, 4096)
    batch: int = 4
    heads: int = 16
    head_dim: int = 128
    value_dim: Optional[int] = None
    dtype: str = "bfloat16"
    device: str = "cuda"
    warmup_ms: float = 25.0
    rep_ms: float = 100.0
    seed: int = 0


@dataclass
class Row:
    T: int
    provider: str
    ms: Optional[float]
    tflops: Optional[float] = None
    gbps: Optional[float] = None
    note: str = ""
    speedup: dict = field(default_factory=dict)  # other provider -> other_ms / ms (> 1: this one is faster)


def time_fn(fn: Callable, device: str, warmup_ms: float, rep_ms: float) -> float:
    """Median milliseconds of ``fn()``."""
    import torch

    fn()  # compile / autotune outside the timing
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))
    times = []
    budget = time.perf_counter() + max(rep_ms, 1.0) / 1000
    while len(times) < 3 or (time.perf_counter() < budget and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def environment(device: str) -> dict:
    import torch

    try:
        from importlib.metadata import version

        triton_v = version("triton")
    except Exception:  # noqa: BLE001
        triton_v = None
    import flactl

    env = {"flactl": flactl.__version__, "torch": torch.__version__, "triton": triton_v,
           "python": platform.python_version(), "fla": prov.fla_version(), "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
    else:
        env["gpu"] = None
        env["cpu"] = platform.processor() or platform.machine()
    try:
        import subprocess

        env["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                       cwd=__file__.rsplit("/flactl/", 1)[0], timeout=5).stdout.strip() or None
    except Exception:  # noqa: BLE001
        env["commit"] = None
    return env


def run_op(spec: OpSpec, cfg: BenchConfig, progress: Optional[Callable[[str], None]] = None) -> dict:
    """Sweep ``cfg.lengths`` for every provider; returns a JSON-ready dict."""
    import torch

    from flactl.convert.modeldir import parse_dtype

    dtype = parse_dtype(cfg.dtype)
    B, H, K = cfg.batch, cfg.heads, cfg.head_dim
    V = cfg.value_dim or K
    elt = torch.tensor([], dtype=dtype).element_size()
    rows: list[Row] = []
    for T in cfg.lengths:
        torch.manual_seed(cfg.seed)
        decode = cfg.mode == "decode"
        inputs = make_inputs(spec, B, 1 if decode else T, H, K, V, dtype, cfg.device, requires_grad=cfg.mode in ("fwdbwd", "fwd_train"))
        state = torch.randn(B, H, K, V, device=cfg.device, dtype=torch.float32) * 0.1 if decode else None
        kv = None
        if decode and "sdpa" in cfg.providers:
            kv = (torch.randn(B, H, T, K, device=cfg.device, dtype=dtype), torch.randn(B, H, T, V, device=cfg.device, dtype=dtype))
        for p in cfg.providers:
            if progress:
                progress(f"{spec.name} {cfg.mode} T={T} {p}")
            fn, note = prov.build(spec, p, cfg.mode, inputs, kv if p == "sdpa" else state)
            if fn is None:
                rows.append(Row(T, p, None, note=note))
                continue
            try:
                ms = time_fn(fn, cfg.device, cfg.warmup_ms, cfg.rep_ms)
            except Exception as e:  # noqa: BLE001  (one failing provider must not hide the others)
                rows.append(Row(T, p, None, note=f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"))
                if cfg.device.startswith("cuda"):
                    torch.cuda.synchronize()
                continue
            attn = p == "sdpa"
            flops = op_flops(None if attn else spec, cfg.mode, B, T, H, K, V, ctx=T)
            nbytes = op_bytes(inputs, cfg.mode, B, H, K, V, elt, ctx=T, attention=attn)
            rows.append(Row(T, p, ms, flops / ms / 1e9, nbytes / ms / 1e6))
        del inputs, state, kv
    _fill_speedups(rows)
    return {
        "kind": "op", "op": spec.name, "config": asdict(cfg), "env": environment(cfg.device),
        "rows": [asdict(r) for r in rows], "crossover_vs_sdpa": crossover(rows, cfg.lengths),
        "flop_model": "chunked linear attention matmul FLOPs (registry.op_flops); fwdbwd = 3x fwd",
    }


def _fill_speedups(rows: list[Row]) -> None:
    by_t: dict[int, dict[str, Row]] = {}
    for r in rows:
        by_t.setdefault(r.T, {})[r.provider] = r
    for group in by_t.values():
        for r in group.values():
            if r.ms is None:
                continue
            for other, o in group.items():
                if other != r.provider and o.ms is not None:
                    r.speedup[other] = o.ms / r.ms


def crossover(rows: list[Row], lengths) -> dict:
    """Per provider: the shortest swept length from which it stays faster than SDPA.

    ``None`` when it is never faster within the sweep; the interpolated length (log-linear in T
    between the two bracketing sweep points) is given as ``estimate``.
    """
    out = {}
    sdpa = {r.T: r.ms for r in rows if r.provider == "sdpa" and r.ms is not None}
    if not sdpa:
        return out
    for p in sorted({r.provider for r in rows} - {"sdpa"}):
        mine = {r.T: r.ms for r in rows if r.provider == p and r.ms is not None}
        ts = [t for t in sorted(lengths) if t in mine and t in sdpa]
        if not ts:
            continue
        faster = [mine[t] < sdpa[t] for t in ts]
        first = None
        for i in range(len(ts)):
            if all(faster[i:]):
                first = i
                break
        if first is None:
            out[p] = {"length": None, "estimate": None, "note": f"slower than SDPA up to T={ts[-1]}"}
        elif first == 0:
            out[p] = {"length": ts[0], "estimate": None, "note": f"faster than SDPA from the shortest length T={ts[0]}"}
        else:
            t0, t1 = ts[first - 1], ts[first]
            r0 = math.log(mine[t0] / sdpa[t0])
            r1 = math.log(mine[t1] / sdpa[t1])
            frac = r0 / (r0 - r1) if r0 != r1 else 0.5
            est = math.exp(math.log(t0) + frac * (math.log(t1) - math.log(t0)))
            out[p] = {"length": t1, "estimate": round(est), "note": f"faster than SDPA from T≈{round(est)}"}
    return out


def format_table(result: dict) -> str:
    rows = result["rows"]
    provs = list(dict.fromkeys(r["provider"] for r in rows))
    ratio_cols = [p for p in provs if any(r["provider"] == p and r["ms"] is not None for r in rows)]
    head = f"{'T':>7} {'provider':<8} {'ms':>10} {'TFLOP/s':>8} {'GB/s':>8}  " + " ".join(f"{'vs ' + p:>10}" for p in ratio_cols)
    lines = [head, "-" * len(head)]
    for r in rows:
        if r["ms"] is None:
            lines.append(f"{r['T']:>7} {r['provider']:<8} {'-':>10}  ({r['note']})")
            continue
        ratios = " ".join(
            f"{(format(r['speedup'][p], '.2f') + 'x') if p in r['speedup'] else '':>10}" for p in ratio_cols
        )
        tf = f"{r['tflops']:>8.3g}" if r["tflops"] is not None else f"{'-':>8}"
        gb = f"{r['gbps']:>8.4g}" if r["gbps"] is not None else f"{'-':>8}"
        lines.append(f"{r['T']:>7} {r['provider']:<8} {r['ms']:>10.3f} {tf} {gb}  {ratios}" + (f"  {r['note']}" if r["note"] else ""))
    lines.append("(vs X = X's time / this time: > 1 means this provider is faster)")
    for p, c in (result.get("crossover_vs_sdpa") or {}).items():
        lines.append(f"crossover {p} vs sdpa: {c['note']}")
    return "\n".join(lines)


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for p in dict.fromkeys(r["provider"] for r in result["rows"]):
        pts = [(r["T"], r["ms"]) for r in result["rows"] if r["provider"] == p and r["ms"] is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=p)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("ms (median)")
    cfg, env = result["config"], result["env"]
    ax.set_title(f"{result.get('op', result.get('model'))} {cfg['mode']} B={cfg['batch']} H={cfg['heads']} "
                 f"D={cfg['head_dim']} {cfg['dtype']}\n{env.get('gpu') or env.get('cpu')}, torch {env['torch']}", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
