"""Facts about the device a kernel will run on, cached (launch heuristics read them on every call)."""
from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=16)
def _cuda_sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device. Off CUDA (the Triton interpreter) 132, an H100's
    count, so that CPU tests take the same launch routes as the GPU the heuristics were tuned on."""
    if device.type != "cuda":
        return 132
    return _cuda_sm_count(device.index if device.index is not None else torch.cuda.current_device())
