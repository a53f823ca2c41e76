"""GPU kernel time of a step, from torch.profiler (shared by the benchmark scripts).

Wall-clock timings of an eager forward+backward on the device machine carry 0.1-0.9 ms of host time that
varies run to run; the summed device time of the kernels a step launches is the number that compares
kernels (ours vs fla's) and the one to hold against the memory floor.
"""
from __future__ import annotations

from collections import defaultdict

import torch


def kernel_times(step, steps: int = 5, before=None):
    """{kernel name: [ms per step, launches per step]} over ``steps`` calls of ``step()``
    (``before()``, e.g. clearing .grad, runs ahead of each call inside the profile)."""
    from torch.profiler import ProfilerActivity, profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            if before is not None:
                before()
            step()
        torch.cuda.synchronize()
    kernels = defaultdict(lambda: [0.0, 0])
    for ev in prof.key_averages():
        dev_us = getattr(ev, "self_device_time_total", None)
        if dev_us is None:
            dev_us = getattr(ev, "self_cuda_time_total", 0)
        if dev_us and ev.device_type == torch.autograd.DeviceType.CUDA:
            kernels[ev.key][0] += dev_us / steps / 1e3
            kernels[ev.key][1] += ev.count // steps
    return dict(kernels), prof


def kernel_sum_ms(step, steps: int = 5, before=None) -> float:
    return sum(v[0] for v in kernel_times(step, steps, before)[0].values())
