"""Conversion reports (copied / new / missing / unexpected keys) and the logit parity check."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

# Short built-in text for parity checks: no download, a few dozen tokens of ordinary prose.
PARITY_TEXT = ("The river ran past the old mill, and the children counted the boats "
               "that drifted by in the late afternoon light.")


class ConversionError(RuntimeError):
    """A conversion that must not be written (strict key check, missing shards, ...)."""


@dataclass
class Report:
    kind: str
    source: str
    output: str
    copied: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)            # target keys initialised, not copied
    missing: list[str] = field(default_factory=list)        # target keys the source should have had
    unexpected: list[str] = field(default_factory=list)     # source keys with no place in the target
    shape_mismatch: list[str] = field(default_factory=list)  # "key: src shape -> dst shape"
    notes: list[str] = field(default_factory=list)
    parity: Optional[dict] = None

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self, limit: int = 12) -> str:
        lines = [f"{self.kind}: {self.source} -> {self.output}"]
        for name in ("copied", "new", "missing", "unexpected", "shape_mismatch"):
            items = getattr(self, name)
            if not items:
                continue
            shown = ", ".join(items[:limit]) + (f", ... (+{len(items) - limit})" if len(items) > limit else "")
            lines.append(f"  {name:<15} {len(items):>5}  {shown}")
        for n in self.notes:
            lines.append(f"  note: {n}")
        if self.parity:
            p = self.parity
            lines.append(
                f"  parity on built-in text ({p['tokens']} tokens): max |logit diff| {p['max_abs_diff']:.3e}, "
                f"argmax agreement {p['argmax_agree']:.3f}, ppl source {p['ppl_source']:.3f} / converted {p['ppl_converted']:.3f}"
            )
        return "\n".join(lines)


def parity(src_model, dst_model, tokenizer=None, vocab_size: Optional[int] = None) -> dict:
    """Compare logits of two models on :data:`PARITY_TEXT` (float32 on CPU)."""
    import torch
    import torch.nn.functional as F

    if tokenizer is not None:
        ids = tokenizer(PARITY_TEXT, return_tensors="pt", add_special_tokens=False)["input_ids"]
    else:  # no tokenizer: bytes as ids (still a deterministic, non-trivial input)
        v = vocab_size or src_model.config.vocab_size
        ids = torch.tensor([[b % v for b in PARITY_TEXT.encode()]])
    with torch.no_grad():
        a = src_model.float()(input_ids=ids).logits.float()
        b = dst_model.float()(input_ids=ids).logits.float()
    n = min(a.shape[-1], b.shape[-1])
    a, b = a[..., :n], b[..., :n]

    def ppl(x):
        return float(torch.exp(F.cross_entropy(x[0, :-1], ids[0, 1:].clamp_max(n - 1))))

    return {"tokens": int(ids.shape[1]), "max_abs_diff": float((a - b).abs().max()),
            "argmax_agree": float((a.argmax(-1) == b.argmax(-1)).float().mean()),
            "ppl_source": ppl(a), "ppl_converted": ppl(b)}
