"""How bench/setups.py measures a step: the clock, the step timing and the peak memory.

Kept apart from the setups themselves so that every setup, the synthetic steps and the
real-data training alike, is timed and measured by the same code: a ratio between two rows is
only fair if both were measured the same way. Imports torch lazily, like setups.py, so that
bench/bench.py can import the setup lists without it.
"""

from __future__ import annotations

import resource
import statistics
import time
from pathlib import Path


def _rss_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class Memory:
    def __init__(self, device):
        import torch

        self.torch = torch
        self.device = device

    def reset(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
            self.method = "torch.cuda.max_memory_allocated"
        else:
            self.method = "VmHWM after clear_refs" if _reset_peak_rss() else "ru_maxrss (lifetime)"
        self.before_mb = self.current_mb()

    def current_mb(self) -> float:
        if self.device.type == "cuda":
            return self.torch.cuda.memory_allocated() / 2**20
        kb = _rss_kb("VmRSS")
        return kb / 1024 if kb else float("nan")

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return self.torch.cuda.max_memory_allocated() / 2**20
        kb = _rss_kb("VmHWM") if self.method.startswith("VmHWM") else None
        if kb is None:
            kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / 1024


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def autocast(device):
    import contextlib

    import torch

    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def time_steps(step, spec: dict, device) -> dict:
    started = time.perf_counter()
    step()
    sync(device)
    first = time.perf_counter() - started
    for _ in range(max(0, spec["warmup"] - 1)):
        step()
    sync(device)
    memory = Memory(device)
    memory.reset()
    wall, cpu = [], []
    for _ in range(spec["steps"]):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        sync(device)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    out = {
        "first_step_s": first,
        "step_ms": [t * 1000 for t in wall],
        "step_cpu_ms": [t * 1000 for t in cpu],
        "wall_median_ms": statistics.median(wall) * 1000,
        "cpu_median_ms": statistics.median(cpu) * 1000,
        "mean_ms": statistics.fmean(wall) * 1000,
        "peak_mb": memory.peak_mb(),
        "mem_before_mb": memory.before_mb,
        "memory_method": memory.method,
    }
    return with_clock(out, spec)


def with_clock(out: dict, spec: dict) -> dict:
    """`median_ms`, the number every ratio uses, is wall time, or with `--clock cpu` the process's
    CPU time (robust on a machine shared with other jobs when the worker runs one thread)."""
    out["clock"] = spec.get("clock", "wall")
    out["median_ms"] = out["cpu_median_ms"] if out["clock"] == "cpu" else out["wall_median_ms"]
    return out
