"""`flactl check-env`: report the environment, known-bad combinations, and run numeric kernel probes."""
from __future__ import annotations

import json
from enum import Enum

import typer


class ProbeDevice(str, Enum):
    auto = "auto"
    cuda = "cuda"
    cpu = "cpu"


def check_env(
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document (facts, findings, probe) for bug reports."),
    probe: bool = typer.Option(True, "--probe/--no-probe", help="Run each op family fwd+bwd at a tiny size against its float32 reference."),
    probe_device: ProbeDevice = typer.Option(ProbeDevice.auto, help="Where probes run: auto (the GPU if present, else skip), cuda, or cpu (float32)."),
) -> None:
    """Check Python, torch, Triton, GPU and packages for known problems, and probe the kernels numerically.

    A version table cannot catch a miscompiled kernel, so on a GPU every registered op family is run
    forward and backward at a tiny size against its float32 reference (PASS/FAIL with the error).

    Exit code: 0 healthy (warnings allowed), 1 when an error finding or a failed probe is present.

    Examples:

        flactl check-env

        flactl check-env --json > env.json

        flactl check-env --no-probe
    """
    from flactl.utils.env_facts import collect_facts
    from flactl.utils.env_rules import ERROR, evaluate, probe_findings

    facts = collect_facts()
    findings = evaluate(facts)
    probe_report = _run_probes(facts, probe, probe_device.value)
    if probe_report.get("results"):
        findings += probe_findings(probe_report["results"])
    healthy = not any(f.severity == ERROR for f in findings)

    if json_out:
        doc = {"healthy": healthy, "facts": facts, "findings": [f.to_dict() for f in findings], "probe": probe_report}
        typer.echo(json.dumps(doc, indent=2, default=str))
    else:
        _print_report(facts, findings, probe_report, healthy)
    raise typer.Exit(0 if healthy else 1)


def _run_probes(facts: dict, enabled: bool, device: str) -> dict:
    if not enabled:
        return {"status": "skipped", "reason": "--no-probe"}
    has_gpu = bool(facts["torch"].get("gpus"))
    if device == "auto":
        if not has_gpu:
            return {"status": "skipped", "reason": "no GPU visible (use --probe-device cpu to probe the CPU paths)"}
        device = "cuda"
    if device == "cuda" and not has_gpu:
        return {"status": "skipped", "reason": "--probe-device cuda but no GPU is visible"}
    if facts["torch"].get("import_error") or facts["torch"].get("version") is None:
        return {"status": "skipped", "reason": "torch is not importable"}
    try:
        import torch

        from flactl.ops.probes import run_probes
    except Exception as e:
        return {"status": "error", "reason": f"could not load the ops: {type(e).__name__}: {e}"}
    if device == "cpu":
        dtype = torch.float32
    else:
        dtype = torch.bfloat16 if facts["torch"].get("bf16_supported") else torch.float16
    results = run_probes(device=device, dtype=dtype)
    return {"status": "ran", "device": device, "dtype": str(dtype).replace("torch.", ""), "results": results}


def _print_report(facts: dict, findings, probe_report: dict, healthy: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title="flactl check-env", show_header=False, title_justify="left")
    t.add_column("item", style="bold")
    t.add_column("value")
    osf = facts["os"]
    t.add_row("OS", f"{osf['system']} {osf['release']} ({osf['machine']})")
    t.add_row("Python", f"{facts['python']} ({facts['python_executable']})")
    tf = facts["torch"]
    flavour = f"CUDA {tf['cuda']}" if tf.get("cuda") else f"ROCm {tf['hip']}" if tf.get("hip") else \
        "XPU" if tf.get("xpu_available") else "CPU-only"
    t.add_row("torch", f"{tf.get('version') or 'not importable: ' + str(tf.get('import_error'))} [{flavour}]")
    tr = facts["triton"]
    pin = tf.get("required_triton")
    t.add_row("Triton", f"{tr.get('version') or 'not importable: ' + str(tr.get('import_error'))}"
              + (f" (torch requires {pin})" if pin else " (torch pins no Triton)")
              + (f", backend {tr['backend']}" if tr.get("backend") else ""))
    for name in ("transformers", "accelerate", "lm_eval", "datasets", "safetensors", "flactl"):
        t.add_row(name, facts["packages"].get(name) or "not installed")
    t.add_row("NVIDIA driver", facts["hardware"].get("nvidia_driver") or "none")
    t.add_row("TRITON_INTERPRET", "on" if facts["interpreter"] else "off")
    cache = facts["triton_cache"]
    t.add_row("Triton cache", f"{cache['dir']} ({'writable' if cache['writable'] else 'NOT writable'}, "
              f"{cache['free_gib']} GiB free)")
    if tf.get("gpus"):
        t.add_row("bf16 / tf32", f"{tf.get('bf16_supported')} / {tf.get('tf32_supported')}")
    env = facts["env"]
    t.add_row("env", ", ".join(f"{k}={v}" for k, v in env.items()) or "(no FLACTL_/TRITON_/CUDA_/HF_ variables)")
    console.print(t)

    if tf.get("gpus"):
        g = Table(title="GPUs", title_justify="left")
        for col in ("#", "vendor", "name", "capability", "SMs", "memory GiB", "smem/block KiB"):
            g.add_column(col)
        for d in tf["gpus"]:
            smem = d.get("shared_mem_per_block_optin")
            g.add_row(str(d["index"]), d["vendor"], d["name"], ".".join(map(str, d["capability"])),
                      str(d["sm_count"]), str(d["memory_gib"]), str(smem // 1024) if smem else "?")
        console.print(g)
    else:
        console.print("GPUs: none visible")

    if probe_report.get("status") == "ran":
        p = Table(title=f"Numeric probe ({probe_report['device']}, {probe_report['dtype']})", title_justify="left")
        for col in ("op", "result", "worst rel. error", "tol", "seconds"):
            p.add_column(col)
        for r in probe_report["results"]:
            res = "[green]PASS[/green]" if r["ok"] else "[red]FAIL[/red]"
            worst = "-" if r["max_err"] is None else f"{r['max_err']:.2e}"
            p.add_row(r["name"], res + ("" if not r["error"] else f" {r['error'][:80]}"), worst, f"{r['tol']:.0e}",
                      f"{r['seconds']:.1f}")
        if not probe_report["results"]:
            p.add_row("(no op families registered probes)", "-", "-", "-", "-")
        console.print(p)
    else:
        console.print(f"Numeric probe: {probe_report.get('status')} ({probe_report.get('reason')})")

    if findings:
        fnd = Table(title="Findings", title_justify="left")
        for col in ("severity", "id", "message", "fix"):
            fnd.add_column(col, overflow="fold")
        colours = {"error": "red", "warning": "yellow", "info": "cyan"}
        for f in findings:
            fnd.add_row(f"[{colours[f.severity]}]{f.severity}[/]", f.id, f.message, f.fix)
        console.print(fnd)
    else:
        console.print("Findings: none")
    console.print("[green]healthy[/green]" if healthy else "[red]problems found[/red] (exit code 1)")


def register(app: typer.Typer) -> None:
    app.command(name="check-env")(check_env)
