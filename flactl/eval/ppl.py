"""Perplexity on local text (``flactl eval --ppl FILE``), for any causal LM directory.

Two modes:

* ``full``: every token is predicted from the *whole* document before it. The document is fed in
  chunks of ``chunk`` tokens that carry the model's cache (recurrent state / kv) from one chunk to the
  next, so memory stays bounded while the context is unbounded: this is how recurrent models are
  evaluated far past their training length. Results do not depend on ``chunk`` (tested).
* ``sliding``: windows of ``window`` tokens moved by ``stride``; each window scores only the tokens
  not scored by the previous one, with up to ``window - stride`` tokens of context (the classic
  fixed-context evaluation for softmax-attention models).

Per-position buckets (``bucket`` tokens wide) show how loss changes with position in the document.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional


@dataclass
class PplResult:
    mode: str
    documents: int
    tokens: int
    bytes: int
    nll_sum: float
    buckets: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        mean = self.nll_sum / max(self.tokens, 1)
        return {
            "mode": self.mode, "documents": self.documents, "tokens": self.tokens, "bytes": self.bytes,
            "nll_per_token": mean, "perplexity": math.exp(min(mean, 700.0)),
            "bits_per_byte": self.nll_sum / (math.log(2) * max(self.bytes, 1)),
            "buckets": self.buckets,
        }


def read_documents(path: str | Path, field_name: str = "text") -> list[str]:
    """``.jsonl``/``.json`` (JSON Lines) → one document per line's ``field_name``; any other file is
    one document (the whole text)."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    if p.suffix in (".jsonl", ".json"):
        docs = []
        for i, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                docs.append(json.loads(line)[field_name])
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{p}:{i + 1}: expected a JSON object with a {field_name!r} field ({e})") from None
        return docs
    return [text]


def _doc_nll(model, ids, mode: str, window: int, stride: int, chunk: int):
    """Per-token negative log-likelihoods (float64 on CPU) for ``ids[1:]`` given the prefix."""
    import torch
    import torch.nn.functional as F

    n = ids.numel()
    nll = torch.full((n - 1,), float("nan"), dtype=torch.float64)
    dev = model.device
    if mode == "full":
        past = None
        for start in range(0, n - 1, chunk):
            end = min(start + chunk, n - 1)
            x = ids[start:end].to(dev)[None]
            out = model(input_ids=x, past_key_values=past, use_cache=True)
            past = out.past_key_values
            tgt = ids[start + 1:end + 1].to(dev)
            nll[start:end] = F.cross_entropy(out.logits[0].float(), tgt, reduction="none").double().cpu()
        return nll
    # sliding window
    scored = 0  # tokens [1, scored] already have an nll
    begin = 0
    while scored < n - 1:
        end = min(begin + window, n)
        x = ids[begin:end].to(dev)[None]
        logits = model(input_ids=x, use_cache=False).logits[0].float()
        # position j in the window predicts token begin + j + 1; score targets scored+1 .. end-1
        first = scored + 1 - begin - 1
        tgt = ids[scored + 1:end].to(dev)
        nll[scored:end - 1] = F.cross_entropy(logits[first:first + tgt.numel()], tgt, reduction="none").double().cpu()
        scored = end - 1
        if end == n:
            break
        begin += stride
    return nll


def perplexity(model, tokenizer, docs: list[str], *, mode: str = "full", window: int = 2048,
               stride: Optional[int] = None, chunk: int = 2048, bucket: int = 2048,
               max_tokens: Optional[int] = None, progress: Optional[Callable[[int], None]] = None) -> PplResult:
    """Perplexity over ``docs``; a BOS token (when the tokenizer has one) starts every document."""
    import torch

    if mode not in ("full", "sliding"):
        raise ValueError(f"mode must be 'full' or 'sliding', got {mode!r}")
    stride = stride or window // 2
    if mode == "sliding" and not 0 < stride <= window - 1:
        raise ValueError(f"stride must be in [1, window-1], got stride={stride}, window={window}")
    if chunk < 1 or window < 2 or bucket < 1:
        raise ValueError("chunk, bucket must be >= 1 and window >= 2")
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    total_nll, total_tok, total_bytes = 0.0, 0, 0
    bucket_sum: dict[int, float] = {}
    bucket_cnt: dict[int, int] = {}
    with torch.inference_mode():
        for doc in docs:
            ids = tokenizer(doc, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
            if bos is not None:
                ids = torch.cat([torch.tensor([bos]), ids])
            if max_tokens:
                ids = ids[: max_tokens + 1]
            if ids.numel() < 2:
                continue
            nll = _doc_nll(model, ids, mode, window, stride, chunk)
            if torch.isnan(nll).any():
                raise RuntimeError("internal error: some tokens were not scored")
            total_nll += float(nll.sum())
            total_tok += nll.numel()
            total_bytes += len(tokenizer.decode(ids[1:], skip_special_tokens=True).encode("utf-8"))
            for b in range(0, nll.numel(), bucket):
                seg = nll[b:b + bucket]
                bucket_sum[b] = bucket_sum.get(b, 0.0) + float(seg.sum())
                bucket_cnt[b] = bucket_cnt.get(b, 0) + seg.numel()
            if progress:
                progress(1)
    buckets = [
        {"start": b, "end": b + bucket, "tokens": bucket_cnt[b],
         "perplexity": math.exp(min(bucket_sum[b] / bucket_cnt[b], 700.0))}
        for b in sorted(bucket_sum)
    ]
    return PplResult(mode, len(docs), total_tok, total_bytes, total_nll, buckets)
