"""A byte-level tokenizer built at run time: no download, no files needed.

Ids: ``<pad>`` = 0, ``<s>`` (BOS) = 1, ``</s>`` (EOS) = 2 — the same BOS/EOS ids as fla's configs —
then the 256 byte values at ids 3..258. Vocabulary size 259. Any UTF-8 text round-trips exactly.

It is a ``transformers.PreTrainedTokenizerFast``, so ``save_pretrained`` writes an ordinary
``tokenizer.json`` that ``AutoTokenizer.from_pretrained`` loads back anywhere (generate/eval read the
exported run directory like any HF model).

Example::

    >>> from flactl.train.tokenizer import byte_tokenizer
    >>> tok = byte_tokenizer()
    >>> tok("hi")["input_ids"]          # BOS is prepended, like Llama's tokenizer
    [1, 107, 108]
    >>> tok.decode([107, 108])
    'hi'
"""
from __future__ import annotations

from typing import Optional

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
NUM_SPECIAL = 3
BYTE_VOCAB_SIZE = 256 + NUM_SPECIAL


def byte_tokenizer(add_bos: bool = True):
    """Return a byte-level ``PreTrainedTokenizerFast`` (259 ids; pad 0, bos 1, eos 2)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    # ByteLevel maps each byte to one printable unicode character; with an empty merge table the
    # BPE model then emits exactly one token per byte.
    byte_chars = sorted(pre_tokenizers.ByteLevel.alphabet(), key=_byte_of)
    vocab = {PAD: 0, BOS: 1, EOS: 2}
    for i, ch in enumerate(byte_chars):
        vocab[ch] = i + NUM_SPECIAL
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None, fuse_unk=False))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens([PAD, BOS, EOS])
    if add_bos:
        tk.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, 1)]
        )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token=BOS, eos_token=EOS, pad_token=PAD, model_max_length=1 << 30
    )
    tok.add_bos_token = add_bos
    return tok


def _byte_of(ch: str) -> int:
    """Inverse of GPT-2's bytes→unicode table: the byte value a ByteLevel character stands for."""
    o = ord(ch)
    if 33 <= o <= 126 or 161 <= o <= 172 or 174 <= o <= 255:
        return o
    # The remaining bytes (0-32, 127-160, 173) are shifted to 256+ in order.
    rest = [b for b in range(256) if not (33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255)]
    return rest[o - 256]


def load_tokenizer(spec: Optional[str]):
    """``"byte"`` (or None) → the built-in byte tokenizer; anything else → a local directory.

    Hub names are refused on purpose: training must not depend on a download at start-up.
    """
    import os

    if spec in (None, "", "byte"):
        return byte_tokenizer()
    if not os.path.isdir(spec):
        raise ValueError(
            f"tokenizer.path: {spec!r} is not a local directory (use 'byte' for the built-in "
            "byte-level tokenizer, or download a tokenizer once and point at its folder)"
        )
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(spec)
