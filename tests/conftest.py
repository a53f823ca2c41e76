"""Test configuration.

* CPU (default): sets ``TRITON_INTERPRET=1`` *before* any kernel module is imported, so the
  Triton kernels run in the interpreter (float32 only).
* ``FLACTL_TEST_DEVICE=cuda``: runs the same tests on the GPU in bf16; ``@pytest.mark.gpu`` tests
  run only there.
* ``FLACTL_AUTOTUNE=0``: one pinned config per kernel keeps tests fast and reproducible.
"""
from __future__ import annotations

import os
import random
import sys

if os.environ.get("FLACTL_TEST_DEVICE", "cpu") == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("FLACTL_AUTOTUNE", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402

from helpers import ON_GPU  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if ON_GPU:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: run with FLACTL_TEST_DEVICE=cuda")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    """Deterministic seeds for every test (fresh random inputs, never zeros)."""
    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture
def nan_poison(monkeypatch):
    """Make freshly allocated floating outputs NaN, so an element a kernel forgot to write fails.

    Patches ``torch.empty``/``torch.empty_like``/``Tensor.new_empty`` for the duration of a test.
    """
    import torch

    real_empty, real_empty_like, real_new_empty = torch.empty, torch.empty_like, torch.Tensor.new_empty

    def _fill(t):
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()):
            t.fill_(float("nan"))
        return t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: _fill(real_empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: _fill(real_empty_like(*a, **k)))
    monkeypatch.setattr(torch.Tensor, "new_empty", lambda self, *a, **k: _fill(real_new_empty(self, *a, **k)))
    yield
