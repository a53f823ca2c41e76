"""Built-in generated corpora, so a recipe can train with no data files and no download.

Both are pure functions of ``(seed, index)``: document ``i`` is the same on every machine, rank and
worker, which keeps sharding and resume trivially deterministic.

* ``grammar``: sentences from a small probabilistic grammar ("the big cat chases a dog ."). A model
  that learns the words and the grammar gets far below the byte unigram entropy.
* ``recall``: associative recall, the classic linear-attention probe: ``k:v`` pairs then queries
  whose answers are values seen earlier in the same document ("ab:17 xq:03 ... ? xq:03 ab:17").
"""
from __future__ import annotations

import random
from typing import Callable, Dict

_DET = ["the", "a", "every", "some"]
_ADJ = ["big", "small", "red", "old", "quick", "lazy"]
_NOUN = ["cat", "dog", "bird", "fox", "child", "farmer", "robot", "horse"]
_VERB = ["sees", "chases", "likes", "finds", "follows", "hears"]
_PREP = ["near", "behind", "under", "with"]


def _noun_phrase(rng: random.Random) -> str:
    words = [rng.choice(_DET)]
    if rng.random() < 0.4:
        words.append(rng.choice(_ADJ))
    words.append(rng.choice(_NOUN))
    if rng.random() < 0.15:
        words += [rng.choice(_PREP), rng.choice(_DET), rng.choice(_NOUN)]
    return " ".join(words)


def grammar_doc(rng: random.Random) -> str:
    sentences = []
    for _ in range(rng.randint(2, 6)):
        s = _noun_phrase(rng) + " " + rng.choice(_VERB)
        if rng.random() < 0.8:
            s += " " + _noun_phrase(rng)
        sentences.append(s + " .")
    return " ".join(sentences)


def recall_doc(rng: random.Random) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    n = rng.randint(4, 12)
    keys = rng.sample([a + b for a in letters for b in letters], n)
    vals = [f"{rng.randrange(100):02d}" for _ in keys]
    pairs = " ".join(f"{k}:{v}" for k, v in zip(keys, vals))
    order = rng.sample(range(n), min(n, 4))
    queries = " ".join(f"{keys[i]}:{vals[i]}" for i in order)
    return f"{pairs} ? {queries}"


TASKS: Dict[str, Callable[[random.Random], str]] = {"grammar": grammar_doc, "recall": recall_doc}


def generated_doc(task: str, seed: int, index: int) -> str:
    """Document ``index`` of corpus ``task`` under ``seed`` (deterministic, independent of the caller)."""
    # A string seed hashes stably across processes (unlike hash() of a tuple with PYTHONHASHSEED).
    return TASKS[task](random.Random(f"{task}:{seed}:{index}"))
