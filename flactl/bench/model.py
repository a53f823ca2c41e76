"""Model-level benchmark: training tokens/s (forward + backward + AdamW step) and generation
tokens/s (prefill and decode with transformers' ``generate`` and the model's cache).

The model is a model directory (weights ignored: random init from its config) or a flactl family
name with ``--set`` overrides / a preset, so a 340M-class config can be benchmarked without weights.
Tokens/s is always reported; no MFU (a softmax-attention FLOP formula is wrong for these models).
"""
from __future__ import annotations

import time
from typing import Callable, Optional


def load_config(target: str, sets: dict, preset: Optional[str]):
    from flactl.convert import build
    from flactl.convert.modeldir import is_model_dir

    if is_model_dir(target):
        import flactl.models  # noqa: F401
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(target)
        for k, v in sets.items():
            if not hasattr(cfg, k):
                raise build.ConfigError(f"{cfg.model_type!r} config has no field {k!r}")
            setattr(cfg, k, v)
        return cfg
    fam = target.removeprefix("model:")
    fields = None
    if preset:
        pfam, fields = build.load_preset(preset, fam)
        fam = pfam or fam
    return build.build_config(fam, {}, sets, fields)


def run_model(target: str, config, *, mode: str, lengths, batch: int, dtype: str, device: str,
              steps: int = 5, warmup: int = 2, gen_tokens: int = 32,
              progress: Optional[Callable[[str], None]] = None) -> dict:
    from flactl.convert.build import build_model
    from flactl.convert.modeldir import count_params, parse_dtype

    from .runner import environment

    tdtype = parse_dtype(dtype)
    model = build_model(config, seed=0).to(device)
    n_params = count_params(model)
    rows = []
    for T in lengths:
        if mode in ("train", "all"):
            if progress:
                progress(f"train T={T}")
            rows.append({"T": T, "what": "train", **_train(model, config, batch, T, tdtype, device, steps, warmup)})
        if mode in ("generate", "all"):
            if progress:
                progress(f"generate T={T}")
            rows.append({"T": T, "what": "generate", **_generate(model, config, batch, T, tdtype, device, gen_tokens)})
    return {"kind": "model", "model": target, "params": n_params, "model_type": config.model_type,
            "config": {"mode": mode, "batch": batch, "lengths": list(lengths), "dtype": dtype, "device": device,
                       "steps": steps, "gen_tokens": gen_tokens, "heads": getattr(config, "num_heads", None),
                       "head_dim": None},
            "env": environment(device), "rows": rows}


def _sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _train(model, config, B, T, dtype, device, steps, warmup) -> dict:
    import torch

    model.train()
    fused = str(device).startswith("cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused) if fused else torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, config.vocab_size, (B, T), device=device)
    ac = torch.autocast(device_type=torch.device(device).type, dtype=dtype) if dtype in (torch.bfloat16, torch.float16) else _null()
    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    try:
        times = []
        for i in range(warmup + steps):
            _sync(device)
            t0 = time.perf_counter()
            with ac:
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    except torch.OutOfMemoryError:
        return {"tokens_per_s": None, "note": "out of memory"}
    finally:
        model.eval()
    step = sorted(times)[len(times) // 2]
    out = {"tokens_per_s": B * T / step, "step_ms": step * 1000, "loss": float(loss.detach())}
    if str(device).startswith("cuda"):
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def _generate(model, config, B, T, dtype, device, n_new) -> dict:
    import torch

    from flactl.eval.generation import TimingStreamer

    m = model.to(dtype) if dtype is not None else model
    ids = torch.randint(3, config.vocab_size, (B, T), device=device)
    kw = dict(max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False, use_cache=True,
              pad_token_id=0, eos_token_id=None)
    try:
        with torch.inference_mode():
            m.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **{**kw, "max_new_tokens": 2, "min_new_tokens": 2})
            _sync(device)
            st = TimingStreamer()
            st.t_start = time.perf_counter()
            m.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=st, **kw)
            _sync(device)
    except torch.OutOfMemoryError:
        return {"prefill_tokens_per_s": None, "decode_tokens_per_s": None, "note": "out of memory"}
    finally:
        if dtype is not None:
            model.float()
    prefill = (st.t_first or st.t_end) - st.t_start
    decode = st.t_end - (st.t_first or st.t_end)
    return {"prefill_tokens_per_s": B * T / prefill if prefill > 0 else None,
            "decode_tokens_per_s": B * (st.steps - 1) / decode if decode > 0 else None,
            "new_tokens": st.steps}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def format_table(result: dict) -> str:
    lines = [f"{result['model']} ({result['model_type']}, {result['params'] / 1e6:.2f}M params), "
             f"batch {result['config']['batch']}, {result['config']['dtype']} on {result['env'].get('gpu') or result['config']['device']}"]
    lines.append(f"{'T':>7} {'what':<9} {'tokens/s':>12} {'detail'}")
    for r in result["rows"]:
        if r["what"] == "train":
            tps = r.get("tokens_per_s")
            det = f"step {r['step_ms']:.1f} ms" + (f", peak {r['peak_mem_gib']:.2f} GiB" if "peak_mem_gib" in r else "") if tps else r.get("note", "")
            lines.append(f"{r['T']:>7} {'train':<9} {tps or 0:>12,.0f} {det}")
        else:
            d = r.get("decode_tokens_per_s")
            p = r.get("prefill_tokens_per_s")
            lines.append(f"{r['T']:>7} {'generate':<9} {d or 0:>12,.1f} decode; prefill {p or 0:,.0f} tok/s ({r.get('new_tokens', 0)} new tokens)")
    return "\n".join(lines)
