"""GPU checks for flactl's models against fla 0.6.0 (the optional peer in ``.peer/``), side by side.

    python scripts/gpu_models.py parity     --out $OUT   # fla checkpoint -> flactl, logits f32 / bf16
    python scripts/gpu_models.py throughput --out $OUT   # 340M train step tokens/s, flactl vs fla vs HF Llama

parity: for each family build fla's model (random init, small), ``save_pretrained``, load the directory
with ``AutoModelForCausalLM.from_pretrained`` after ``import flactl`` (flactl's classes win the Auto
registration), check no missing/unexpected keys, and compare logits: float32 at T=64 (both libraries
run their fused_recurrent path) and bf16 at T=200 (chunk path). Also greedy generate cached == uncached.

throughput: fwd + bwd + fused AdamW step, bf16 weights, 340M-class configs (flame recipes), B*T = 16k tokens
(8x2048 and 2x8192); median step time from ``triton.testing.do_bench`` after warm-up steps.
Results go to ``<out>/models_<part>.json``; a short table is printed last.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback

import torch

START = time.time()
NO_FLA = False


def log(*a):
    print(f"[{time.time() - START:6.1f}s]", *a, flush=True)


def fla_classes(name):
    import fla.models as fm
    return getattr(fm, name + "Config"), getattr(fm, name + "ForCausalLM")


SMALL = dict(hidden_size=256, num_hidden_layers=2, vocab_size=1000, max_position_embeddings=4096)
PARITY = {
    "gla": ("GLA", dict(num_heads=4, expand_k=0.5, expand_v=1)),
    "gla_gqa_conv": ("GLA", dict(num_heads=4, num_kv_heads=2, use_short_conv=True)),
    "gated_deltanet": ("GatedDeltaNet", dict(head_dim=64, num_heads=2, num_v_heads=4, expand_v=1)),
    "retnet": ("RetNet", dict(num_heads=4)),
    "delta_net": ("DeltaNet", dict(num_heads=4)),
    "transformer": ("Transformer", dict(num_heads=4, num_kv_heads=2)),
    "mamba2": ("Mamba2", dict(head_dim=64, state_size=64, expand=2)),
    "hgrn": ("HGRN", dict(expand_ratio=1)),
    "hgrn2": ("HGRN2", dict(expand_ratio=64)),
    "linear_attn": ("LinearAttention", dict(num_heads=4)),
    "gated_deltaproduct": ("GatedDeltaProduct", dict(head_dim=64, num_heads=4, expand_v=1, num_householder=2,
                                                     use_forget_gate=True, allow_neg_eigval=True)),
    "comba": ("Comba", dict(head_dim=64, num_heads=4, expand_v=1)),
}


def compare(a, b):
    a, b = a.float(), b.float()
    return {"max_abs": (a - b).abs().max().item(), "rel_rms": ((a - b).pow(2).mean().sqrt() / a.pow(2).mean().sqrt()).item(),
            "ref_absmax": a.abs().max().item()}


def parity(out_dir, deadline):
    from transformers import AutoModelForCausalLM
    import fla  # noqa: F401  (registers fla's classes first ...)
    import flactl  # noqa: F401  (... then flactl's override them for the Auto classes)
    results = {}
    only = os.environ.get("FAMILIES")
    for name, (cls, kw) in PARITY.items():
        if only and name not in only.split(","):
            continue
        if time.time() - START > deadline:
            results[name] = {"skipped": "time budget"}
            continue
        r = results[name] = {}
        try:
            Cfg, LM = fla_classes(cls)
            torch.manual_seed(0)
            ref = LM(Cfg(**SMALL, **kw)).cuda().eval()
            with tempfile.TemporaryDirectory() as d:
                ref.save_pretrained(d)
                ours, info = AutoModelForCausalLM.from_pretrained(d, output_loading_info=True)
            r["class"] = f"{type(ours).__module__}.{type(ours).__name__}"
            r["missing"], r["unexpected"] = list(info["missing_keys"]), list(info["unexpected_keys"])
            ours = ours.cuda().eval()
            g = torch.Generator(device="cuda").manual_seed(1)
            for tag, dtype, T in (("fp32_T64", torch.float32, 64), ("bf16_T200", torch.bfloat16, 200)):
                x = torch.randint(0, SMALL["vocab_size"], (2, T), device="cuda", generator=g)
                try:
                    ref.to(dtype), ours.to(dtype)
                    with torch.no_grad():
                        lr = ref(x).logits
                        lo = ours(x).logits
                    r[tag] = compare(lr, lo)
                except Exception as e:  # noqa: BLE001
                    r[tag] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
            with torch.no_grad():
                x = torch.randint(0, SMALL["vocab_size"], (2, 20), device="cuda", generator=g)
                g1 = ours.generate(x, max_new_tokens=8, do_sample=False, pad_token_id=0)
                g2 = ours.generate(x, max_new_tokens=8, do_sample=False, use_cache=False, pad_token_id=0)
                r["generate_cached_eq_uncached"] = bool(torch.equal(g1, g2))
        except Exception as e:  # noqa: BLE001
            r["error"] = f"{type(e).__name__}: {str(e)[:400]}"
            traceback.print_exc()
        log(name, json.dumps(r)[:600])
        del_all()
    return results


def del_all():
    import gc
    gc.collect()
    torch.cuda.empty_cache()


M340 = {
    "gla": ("GLA", dict(hidden_size=1024, num_hidden_layers=24, num_heads=4, expand_k=0.5, expand_v=1,
                        hidden_ratio=4, vocab_size=32000, attn_mode="chunk", fuse_cross_entropy=True)),
    "gated_deltanet": ("GatedDeltaNet", dict(hidden_size=1024, num_hidden_layers=21, num_heads=4, head_dim=256,
                                             expand_v=2, hidden_ratio=4, vocab_size=32000, fuse_cross_entropy=True)),
    "transformer": ("Transformer", dict(hidden_size=1024, num_hidden_layers=24, num_heads=16, hidden_ratio=4,
                                        vocab_size=32000, fuse_cross_entropy=True)),
}


def train_step_tps(build, B, T):
    import triton
    torch.manual_seed(0)
    model = build().cuda().to(torch.bfloat16).train()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x = torch.randint(0, 32000, (B, T), device="cuda")

    def step():
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    torch.cuda.synchronize()
    t0 = time.time()
    loss = step()
    torch.cuda.synchronize()
    first = time.time() - t0
    step(), step()
    torch.cuda.reset_peak_memory_stats()
    ms = triton.testing.do_bench(step, warmup=100, rep=1200, return_mode="median")
    peak = torch.cuda.max_memory_allocated() / 2**30
    del model, opt
    del_all()
    return {"B": B, "T": T, "params_M": round(params, 1), "step_ms": round(ms, 2), "tok_per_s": round(B * T / ms * 1e3),
            "peak_GiB": round(peak, 2), "first_step_s": round(first, 1), "loss0": round(loss.item(), 3)}


def throughput(out_dir, deadline):
    import flactl  # noqa: F401
    from flactl import models as fm
    results = {}
    ours = {"gla": (fm.GLAConfig, fm.GLAForCausalLM), "gated_deltanet": (fm.GatedDeltaNetConfig, fm.GatedDeltaNetForCausalLM),
            "transformer": (fm.TransformerConfig, fm.TransformerForCausalLM)}
    try:
        import flash_attn  # noqa: F401  (fla's Transformer needs it)
        fla_tf = True
    except ImportError:
        fla_tf = False
    for name, (cls, kw) in M340.items():
        for B, T in ((8, 2048), (2, 8192)):
            impls = (("flactl", "fla", "hf-llama-sdpa") if fla_tf else ("flactl", "hf-llama-sdpa")) \
                if name == "transformer" else ("flactl", "fla")
            if NO_FLA:  # a cold machine spends minutes in fla's autotuning: measure ours + HF Llama only
                impls = tuple(i for i in impls if i != "fla")
            for impl in impls:
                key = f"{name}/{impl}/{B}x{T}"
                if time.time() - START > deadline:
                    results[key] = {"skipped": "time budget"}
                    continue
                try:
                    if impl == "flactl":
                        C, L = ours[name]
                        build = lambda C=C, L=L: L(C(**kw))  # noqa: E731
                    elif impl == "fla":
                        import fla  # noqa: F401
                        C, L = fla_classes(cls)
                        build = lambda C=C, L=L: L(C(**kw))  # noqa: E731
                    else:
                        from transformers import LlamaConfig, LlamaForCausalLM
                        build = lambda: LlamaForCausalLM(LlamaConfig(  # noqa: E731
                            hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=2816,
                            vocab_size=32000, attn_implementation="sdpa", max_position_embeddings=8192))
                    results[key] = train_step_tps(build, B, T)
                except Exception as e:  # noqa: BLE001
                    results[key] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
                    del_all()
                log(key, results[key])
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("part", choices=["parity", "throughput", "all"])
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--deadline", type=float, default=400.0, help="stop starting new cases after this many s")
    ap.add_argument("--parity-deadline", type=float, default=200.0, help="with 'all': parity stops here")
    ap.add_argument("--no-fla", action="store_true", help="throughput without fla (flactl and HF Llama only)")
    a = ap.parse_args()
    global NO_FLA
    NO_FLA = a.no_fla
    import triton
    env = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__}
    try:
        import transformers
        env["transformers"] = transformers.__version__
    except ImportError:
        pass
    log(env)
    parts = ["parity", "throughput"] if a.part == "all" else [a.part]
    os.makedirs(a.out, exist_ok=True)
    for part in parts:
        if part == "parity":
            res = parity(a.out, a.parity_deadline if a.part == "all" else a.deadline)
        else:
            res = throughput(a.out, a.deadline)
        with open(os.path.join(a.out, f"models_{part}.json"), "w") as f:
            json.dump({"env": env, "results": res}, f, indent=1)
        summary(part, res, env)


def summary(part, res, env):
    print("\n==== summary", part, env)
    for k, v in res.items():
        if part == "parity":
            cells = [f"{t}: " + (f"max {v[t]['max_abs']:.2e} rel {v[t]['rel_rms']:.1e}" if "max_abs" in v.get(t, {})
                                 else str(v.get(t, {}).get("error", "-"))[:80]) for t in ("fp32_T64", "bf16_T200")]
            extra = v.get("error") or v.get("skipped") or f"missing={len(v.get('missing', []))} " \
                f"unexpected={len(v.get('unexpected', []))} gen_ok={v.get('generate_cached_eq_uncached')}"
            print(f"{k:16s} | {' | '.join(cells)} | {extra}")
        else:
            print(f"{k:36s} {v.get('tok_per_s', v.get('error', v.get('skipped')))} "
                  f"{v.get('step_ms', '')} ms {v.get('peak_GiB', '')} GiB first {v.get('first_step_s', '')} s")


if __name__ == "__main__":
    sys.exit(main())
