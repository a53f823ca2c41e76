"""Autotuning policy shared by every kernel.

* ``FLACTL_AUTOTUNE=0`` (and always under the interpreter): only the first config is used, for
  reproducible runs and fast tests. Put the best general-purpose config first.
* Results are cached on disk when the installed Triton supports ``cache_results`` so the first
  training step of a second run does not re-tune.
"""
from __future__ import annotations

import inspect
import os

import triton

from .backend import interpreter_on


def autotune_enabled() -> bool:
    return os.environ.get("FLACTL_AUTOTUNE", "1") != "0" and not interpreter_on()


def _supports_cache_results() -> bool:
    try:
        return "cache_results" in inspect.signature(triton.autotune).parameters
    except (TypeError, ValueError):
        return False


def autotune(configs, key, **kwargs):
    """``triton.autotune`` with the project policy applied (pinned config, disk cache)."""
    if not autotune_enabled():
        configs = configs[:1]
    if _supports_cache_results() and autotune_enabled():
        kwargs.setdefault("cache_results", True)
    return triton.autotune(configs=configs, key=key, **kwargs)
