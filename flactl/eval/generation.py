"""Generation helpers for ``flactl generate``: timing streamer, batched generate, cached-vs-full check."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Optional


class TimingStreamer:
    """A transformers streamer that records prefill/decode timing and optionally prints text.

    transformers calls ``put`` once with the prompt ids, then once per generated token (all batch
    rows at once), then ``end``. Printing is only done for batch size 1.
    """

    def __init__(self, tokenizer=None, echo: bool = False, out=None):
        self.tokenizer, self.echo, self.out = tokenizer, echo, out or sys.stdout
        self.t_start = time.perf_counter()
        self.t_first: Optional[float] = None
        self.t_end: Optional[float] = None
        self.steps = 0
        self._prompt_seen = False
        self._ids: list[int] = []
        self._printed = 0

    def put(self, value) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        if self.t_first is None:
            self.t_first = time.perf_counter()
        self.steps += 1
        if self.echo and value.numel() == 1:
            self._ids.append(int(value.reshape(-1)[0]))
            text = self.tokenizer.decode(self._ids, skip_special_tokens=True)
            # Print only complete characters: a byte-level tokenizer may be mid-way through one.
            if not text.endswith("\ufffd"):
                self.out.write(text[self._printed:])
                self.out.flush()
                self._printed = len(text)

    def end(self) -> None:
        self.t_end = time.perf_counter()
        if self.echo:
            text = self.tokenizer.decode(self._ids, skip_special_tokens=True)
            self.out.write(text[self._printed:] + "\n")
            self.out.flush()


@dataclass
class GenResult:
    prompts: list[str]
    completions: list[str]
    prompt_tokens: int
    new_tokens: int
    prefill_s: float
    decode_s: float
    check: Optional[dict] = field(default=None)

    @property
    def prefill_tok_s(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s > 0 else float("nan")

    @property
    def decode_tok_s(self) -> float:
        return self.new_tokens / self.decode_s if self.decode_s > 0 else float("nan")


def generate(model, tokenizer, prompts: list[str], *, max_new_tokens: int, do_sample: bool,
             temperature: float, top_p: float, top_k: int, repetition_penalty: float,
             use_cache: bool = True, stream: bool = False, check: bool = False,
             add_special_tokens: bool = True) -> GenResult:
    """Run ``model.generate`` on a (left-padded) batch of prompts and time it."""
    import torch

    tokenizer.padding_side = "left"
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens)
    if enc["input_ids"].shape[1] == 0:
        raise ValueError("prompt is empty after tokenisation")
    enc = {k: v.to(model.device) for k, v in enc.items()}
    streamer = TimingStreamer(tokenizer, echo=stream and len(prompts) == 1)
    kw = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, use_cache=use_cache, streamer=streamer,
              pad_token_id=tokenizer.pad_token_id, return_dict_in_generate=True, output_logits=check)
    if do_sample:
        kw.update(temperature=temperature, top_p=top_p, top_k=top_k)
    if repetition_penalty != 1.0:
        kw["repetition_penalty"] = repetition_penalty
    if stream and len(prompts) == 1:
        sys.stdout.write(prompts[0])
        sys.stdout.flush()
    streamer.t_start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**enc, **kw)
    seqs = out.sequences
    plen = enc["input_ids"].shape[1]
    new = seqs[:, plen:]
    completions = [tokenizer.decode(row, skip_special_tokens=True) for row in new]
    t_first = streamer.t_first or streamer.t_end or time.perf_counter()
    t_end = streamer.t_end or time.perf_counter()
    n_prompt = int(enc["attention_mask"].sum())
    res = GenResult(
        prompts, completions, n_prompt, max(streamer.steps - 1, 0) * len(prompts),
        t_first - streamer.t_start, t_end - t_first,
    )
    if check:
        res.check = check_against_full_forward(model, seqs, enc["attention_mask"], out.logits, plen)
    return res


def check_against_full_forward(model, seqs, prompt_mask, step_logits, plen: int) -> dict:
    """Compare the logits produced step by step (with the cache) against one full forward pass.

    ``step_logits[i]`` is the distribution that chose token ``plen + i``; the full forward's logits at
    position ``plen + i - 1`` must match it. Returns max |diff|, the logit scale and argmax agreement.
    """
    import torch

    n = len(step_logits)
    mask = torch.cat([prompt_mask, torch.ones_like(seqs[:, plen:])], dim=1)
    with torch.inference_mode():
        full = model(input_ids=seqs, attention_mask=mask, use_cache=False).logits.float()
    ref = full[:, plen - 1: plen - 1 + n]
    got = torch.stack([x.float() for x in step_logits], dim=1)
    diff = (ref - got).abs()
    return {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "logit_scale": float(ref.abs().max()),
        "argmax_agree": float((ref.argmax(-1) == got.argmax(-1)).float().mean()),
        "steps": n,
    }
