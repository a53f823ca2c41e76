"""GPU checks for flactl's models against fla 0.6.0 (the optional peer in ``.peer/``), side by side.

    python scripts/gpu_models.py parity     --out $OUT   # fla checkpoint -> flactl, logits f32 / bf16
    python scripts/gpu_models.py throughput --out $OUT   # 340M train step tokens/s, flactl vs fla vs HF Llama
    python scripts/gpu_models.py generate   --out $OUT   # 340M greedy generation tokens/s at 2k prompts
    python scripts/gpu_models.py all        --out $OUT   # the three in turn
    python scripts/gpu_models.py generate --tiny --no-fla --out /tmp/gen   # smoke test, runs on CPU too

parity: for each family build fla's model (random init, small), ``save_pretrained``, load the directory
with ``AutoModelForCausalLM.from_pretrained`` after ``import flactl`` (flactl's classes win the Auto
registration), check no missing/unexpected keys, and compare logits: float32 at T=64 (both libraries
run their fused_recurrent path) and bf16 at T=200 (chunk path). Also greedy generate cached == uncached.

throughput: fwd + bwd + fused AdamW step, bf16 weights, 340M-class configs (flame recipes), B*T = 16k tokens
(8x2048 and 2x8192); median step time from ``triton.testing.do_bench`` after warm-up steps.

generate (issue 6: "tokens/s for batch 1 and 64 at 2k-token prompts, >= fla's"): same 340M configs, bf16,
eval; ``model.generate`` greedy with the cache, batch 1 and 64, 2048 random prompt tokens, exactly N new
tokens (``--gen-tokens``, 128). Per case: first-call time (compile / autotune included), then warm timings:
prefill = a generate with max_new_tokens=1, total = a generate of N tokens; decode tokens/s =
B*(N-1)/(total - prefill), end-to-end tokens/s = B*N/total, and the peak memory of the timed N-token call.

--tiny: every part on tiny configs (hidden 64, 2 layers, vocab 256) and tiny shapes, on CUDA if present
else on CPU in float32 (flactl's ops take their torch path there) -- a smoke test of the script itself.
FAMILIES=gla,gated_deltanet (environment): only those families, in every part; IMPLS=flactl,fla likewise.
fla autotunes every kernel on first use (minutes per family): with TRITON_CACHE_DIR inside the repo and the
*.autotune.json files carried to the next call (fla caches results by default), a later call skips it.
--no-fla: leave fla out of throughput / generate (a cold machine spends minutes in fla's autotuning).
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
TINY = False
# Set in main(): CUDA + bf16 normally; CPU + float32 when there is no GPU (only useful with --tiny).
DEVICE = "cuda"
DTYPE = torch.bfloat16


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
    "mla": ("MLA", dict(num_heads=4, q_lora_rank=64, kv_lora_rank=128, qk_rope_head_dim=32, qk_nope_head_dim=64,
                       qk_head_dim=96, v_head_dim=64)),
    "lightnet": ("LightNet", dict(expand_ratio=64, gate_low_rank_dim=32, use_short_conv=True)),
    "rwkv6": ("RWKV6", dict(num_heads=4, expand_k=0.5, expand_v=1, proj_low_rank_dim=32, gate_low_rank_dim=64)),
    "forgetting_transformer": ("ForgettingTransformer", dict(num_heads=4, num_kv_heads=2, qk_norm=True,
                                                             use_output_gate=True)),
}


def use_flash_attn_stand_in():
    """fla's Transformer / MLA import flash-attn; where it is absent, put the SDPA stand-in
    (scripts/peer_stubs/flash_attn, see its docstring) on the path. Parity runs only."""
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer_stubs"))


def compare(a, b):
    a, b = a.float(), b.float()
    return {"max_abs": (a - b).abs().max().item(), "rel_rms": ((a - b).pow(2).mean().sqrt() / a.pow(2).mean().sqrt()).item(),
            "ref_absmax": a.abs().max().item()}


def parity(out_dir, deadline):
    from transformers import AutoModelForCausalLM
    use_flash_attn_stand_in()
    try:
        import fla  # noqa: F401  (registers fla's classes first ...)
    except ImportError as e:  # parity is against fla: nothing to do without it
        return {"all": {"skipped": f"fla not importable ({e})"}}
    import flactl  # noqa: F401  (... then flactl's override them for the Auto classes)
    results = {}
    for name, (cls, kw) in selected(PARITY).items():
        if time.time() - START > deadline:
            results[name] = {"skipped": "time budget"}
            continue
        r = results[name] = {}
        try:
            Cfg, LM = fla_classes(cls)
            torch.manual_seed(0)
            ref = LM(Cfg(**SMALL, **kw)).to(DEVICE).eval()
            with tempfile.TemporaryDirectory() as d:
                ref.save_pretrained(d)
                ours, info = AutoModelForCausalLM.from_pretrained(d, output_loading_info=True)
            r["class"] = f"{type(ours).__module__}.{type(ours).__name__}"
            r["missing"], r["unexpected"] = list(info["missing_keys"]), list(info["unexpected_keys"])
            ours = ours.to(DEVICE).eval()
            g = torch.Generator(device=DEVICE).manual_seed(1)
            for tag, dtype, T in (("fp32_T64", torch.float32, 64), ("bf16_T200", torch.bfloat16, 200)):
                x = torch.randint(0, SMALL["vocab_size"], (2, T), device=DEVICE, generator=g)
                try:
                    ref.to(dtype), ours.to(dtype)
                    with torch.no_grad():
                        lr = ref(x).logits
                        lo = ours(x).logits
                    r[tag] = compare(lr, lo)
                except Exception as e:  # noqa: BLE001
                    r[tag] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
            with torch.no_grad():
                x = torch.randint(0, SMALL["vocab_size"], (2, 20), device=DEVICE, generator=g)
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
    if DEVICE == "cuda":
        torch.cuda.empty_cache()


# torch.cuda.* only where there is a GPU, so that --tiny runs on a CPU-only machine.
def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def reset_peak():
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_gib():
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if DEVICE == "cuda" else None


M340 = {
    "gla": ("GLA", dict(hidden_size=1024, num_hidden_layers=24, num_heads=4, expand_k=0.5, expand_v=1,
                        hidden_ratio=4, vocab_size=32000, attn_mode="chunk", fuse_cross_entropy=True)),
    "gated_deltanet": ("GatedDeltaNet", dict(hidden_size=1024, num_hidden_layers=21, num_heads=4, head_dim=256,
                                             expand_v=2, hidden_ratio=4, vocab_size=32000, fuse_cross_entropy=True)),
    "transformer": ("Transformer", dict(hidden_size=1024, num_hidden_layers=24, num_heads=16, hidden_ratio=4,
                                        vocab_size=32000, fuse_cross_entropy=True)),
    # fla can train DeltaNet on the H100 with Triton 3.6 (its gated backward refuses): the side-by-side row
    "delta_net": ("DeltaNet", dict(hidden_size=1024, num_hidden_layers=24, num_heads=8, hidden_ratio=4,
                                   vocab_size=32000, fuse_cross_entropy=True)),
}
# --tiny replaces M340's entries with these (head shapes as in tests/models/test_models.py).
TINY_COMMON = dict(hidden_size=64, num_hidden_layers=2, vocab_size=256, hidden_ratio=4, fuse_cross_entropy=True)
M_TINY = {
    "gla": ("GLA", dict(TINY_COMMON, num_heads=2, expand_k=0.5, expand_v=1, attn_mode="chunk")),
    "gated_deltanet": ("GatedDeltaNet", dict(TINY_COMMON, num_heads=2, head_dim=16, expand_v=2)),
    "transformer": ("Transformer", dict(TINY_COMMON, num_heads=4)),
    "delta_net": ("DeltaNet", dict(TINY_COMMON, num_heads=2)),
}


def mlp_size(kw):
    """flactl's / fla's GatedMLP width (2/3 * ratio * hidden, rounded up to 256): 2816 at 340M."""
    n = int(kw["hidden_size"] * kw.get("hidden_ratio", 4) * 2 / 3)
    return 256 * ((n + 255) // 256)


def llama_build(kw):
    """HF Llama (sdpa attention) of the same shape as the Transformer config ``kw``."""
    from transformers import LlamaConfig, LlamaForCausalLM
    return LlamaForCausalLM(LlamaConfig(
        hidden_size=kw["hidden_size"], num_hidden_layers=kw["num_hidden_layers"], num_attention_heads=kw["num_heads"],
        intermediate_size=mlp_size(kw), vocab_size=kw["vocab_size"], attn_implementation="sdpa",
        max_position_embeddings=8192))


def impls_for(name):
    """Implementations measured for family ``name`` (shared by throughput and generate)."""
    try:
        import flash_attn  # noqa: F401  (fla's Transformer needs it)
        fla_tf = True
    except ImportError:
        fla_tf = False
    impls = (("flactl", "fla", "hf-llama-sdpa") if fla_tf else ("flactl", "hf-llama-sdpa")) \
        if name == "transformer" else ("flactl", "fla")
    if NO_FLA:  # a cold machine spends minutes in fla's autotuning: measure ours + HF Llama only
        impls = tuple(i for i in impls if i != "fla")
    if os.environ.get("IMPLS"):  # e.g. IMPLS=fla: only those (a call that finishes what an earlier began)
        impls = tuple(i for i in impls if i in os.environ["IMPLS"].split(","))
    return impls


def builder(impl, name, cls, kw):
    """A zero-argument constructor of the model (random init) for one implementation."""
    if impl == "flactl":
        from flactl import models as fm
        C, L = getattr(fm, cls + "Config"), getattr(fm, cls + "ForCausalLM")
        return lambda: L(C(**kw))
    if impl == "fla":
        import fla  # noqa: F401
        C, L = fla_classes(cls)
        return lambda: L(C(**kw))
    return lambda: llama_build(kw)


def bench_cpu(fn, reps=3):
    """Median wall ms of ``fn`` (CPU stand-in for triton's do_bench; --tiny smoke tests only)."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2]


def train_step_tps(build, B, T):
    torch.manual_seed(0)
    model = build().to(DEVICE).to(DTYPE).train()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=DEVICE == "cuda")
    x = torch.randint(0, model.config.vocab_size, (B, T), device=DEVICE)

    def step():
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    sync()
    t0 = time.time()
    loss = step()
    sync()
    first = time.time() - t0
    step(), step()
    reset_peak()
    if DEVICE == "cuda":
        import triton
        ms = triton.testing.do_bench(step, warmup=100, rep=1200, return_mode="median")
    else:
        ms = bench_cpu(step)
    peak = peak_gib()
    del model, opt
    del_all()
    return {"B": B, "T": T, "params_M": round(params, 1), "step_ms": round(ms, 2), "tok_per_s": round(B * T / ms * 1e3),
            "peak_GiB": peak, "first_step_s": round(first, 1), "loss0": round(loss.item(), 3)}


def selected(table):
    """FAMILIES=a,b (environment) limits every part to those families."""
    only = os.environ.get("FAMILIES")
    return {k: v for k, v in table.items() if not only or k in only.split(",")}


def throughput(out_dir, deadline):
    import flactl  # noqa: F401
    results = {}
    shapes = ((2, 64), (1, 128)) if TINY else ((8, 2048), (2, 8192))
    for name, (cls, kw) in selected(M340).items():
        for B, T in shapes:
            for impl in impls_for(name):
                key = f"{name}/{impl}/{B}x{T}"
                if time.time() - START > deadline:
                    results[key] = {"skipped": "time budget"}
                    continue
                try:
                    results[key] = train_step_tps(builder(impl, name, cls, kw), B, T)
                except Exception as e:  # noqa: BLE001
                    results[key] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
                    del_all()
                log(key, results[key])
    return results


def timed_generate(model, ids, n):
    """Seconds for one greedy cached generate of exactly ``n`` new tokens, and its output."""
    sync()
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True, pad_token_id=0)
    sync()
    return time.perf_counter() - t0, out


def gen_speed(build, B, T, N):
    torch.manual_seed(0)
    model = build().to(DEVICE).to(DTYPE).eval()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    # Fixed-seed prompt on the CPU generator (same ids on every device). Ids start at 1: 0 is the pad id,
    # and a pad inside the prompt would make generate build an attention mask with holes.
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, model.config.vocab_size, (B, T), generator=g).to(DEVICE)
    # First call pays for compilation / autotuning at these shapes; reported, not used for the rates.
    first, out = timed_generate(model, ids, N)
    new = out.shape[1] - T  # min_new_tokens keeps EOS from stopping early; checked here
    # Warm timings: prefill (prompt + the first token) alone, then the whole N-token generate.
    prefill, _ = timed_generate(model, ids, 1)
    reset_peak()
    total, _ = timed_generate(model, ids, N)
    peak = peak_gib()
    del model, out
    del_all()
    decode = total - prefill
    return {"B": B, "T": T, "N": N, "new_tokens": new, "params_M": round(params, 1),
            "first_call_s": round(first, 2), "prefill_s": round(prefill, 4), "total_s": round(total, 4),
            "decode_tok_per_s": round(B * (N - 1) / decode, 1) if decode > 0 else None,
            "e2e_tok_per_s": round(B * N / total, 1), "peak_GiB": peak}


def generate(out_dir, deadline, n_new):
    import flactl  # noqa: F401
    results = {}
    T, batches = (32, (1, 4)) if TINY else (2048, (1, 64))
    for name, (cls, kw) in selected(M340).items():
        for B in batches:
            for impl in impls_for(name):
                key = f"{name}/{impl}/B{B}xT{T}+{n_new}"
                if time.time() - START > deadline:
                    results[key] = {"skipped": "time budget"}
                    continue
                try:
                    results[key] = gen_speed(builder(impl, name, cls, kw), B, T, n_new)
                except Exception as e:  # noqa: BLE001
                    results[key] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
                    traceback.print_exc()
                    del_all()
                log(key, results[key])
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("part", choices=["parity", "throughput", "generate", "all"])
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--deadline", type=float, default=400.0, help="stop starting new cases after this many s")
    ap.add_argument("--parity-deadline", type=float, default=200.0, help="with 'all': parity stops here")
    ap.add_argument("--no-fla", action="store_true",
                    help="throughput / generate without fla (flactl and HF Llama only)")
    ap.add_argument("--gen-tokens", type=int, default=None, help="generate: new tokens per call (128; 8 with --tiny)")
    ap.add_argument("--tiny", action="store_true",
                    help="tiny configs and shapes; runs on CPU (float32) when there is no GPU: a smoke test")
    a = ap.parse_args()
    global NO_FLA, TINY, DEVICE, DTYPE
    NO_FLA, TINY = a.no_fla, a.tiny
    DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
    DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float32
    if TINY:
        M340.update(M_TINY)
    n_new = a.gen_tokens or (8 if TINY else 128)
    env = {"gpu": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu", "torch": torch.__version__,
           "dtype": str(DTYPE).replace("torch.", ""), "tiny": TINY}
    for mod in ("triton", "transformers"):
        try:
            env[mod] = __import__(mod).__version__
        except ImportError:
            pass
    log(env)
    parts = ["parity", "throughput", "generate"] if a.part == "all" else [a.part]
    os.makedirs(a.out, exist_ok=True)
    for part in parts:
        if part == "parity":
            res = parity(a.out, a.parity_deadline if a.part == "all" else a.deadline)
        elif part == "throughput":
            res = throughput(a.out, a.deadline)
        else:
            res = generate(a.out, a.deadline, n_new)
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
        elif part == "generate":
            if "e2e_tok_per_s" not in v:
                print(f"{k:40s} {v.get('error', v.get('skipped'))}")
                continue
            print(f"{k:40s} decode {v['decode_tok_per_s']} tok/s | e2e {v['e2e_tok_per_s']} tok/s | "
                  f"prefill {v['prefill_s']} s | total {v['total_s']} s | {v['peak_GiB']} GiB | "
                  f"first {v['first_call_s']} s | new {v['new_tokens']}")
        else:
            print(f"{k:36s} {v.get('tok_per_s', v.get('error', v.get('skipped')))} "
                  f"{v.get('step_ms', '')} ms {v.get('peak_GiB', '')} GiB first {v.get('first_step_s', '')} s")


if __name__ == "__main__":
    sys.exit(main())
