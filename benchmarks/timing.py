"""Timing and machine description shared by the benchmark sections."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable


def time_calls(fn: Callable[[], object], *, reps: int, warmup: int = 1) -> dict:
    """Wall time of ``fn()`` (which must block until its work is done), in seconds.

    Returns ``{"best", "median", "all"}``. Other processes on a shared machine only add
    time, so ``best`` is the figure least disturbed by them.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return summarize(times)


def time_interleaved(contenders: dict[str, Callable[[], object]], *, rounds: int,
                     warmup: int = 1) -> dict[str, list[float]]:
    """Wall time of each contender's call, ``rounds`` times, one call of each per round.

    Each callable must block until its work is done. Interleaving puts every contender
    under the same slice of a shared machine's load, so per-round ratios between them
    are far steadier than figures taken minutes apart. Returns ``{name: [seconds per
    round]}``; ``warmup`` untimed rounds come first (compilation, caches).
    """
    for _ in range(warmup):
        for fn in contenders.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def summarize(times: list[float]) -> dict:
    """``{"best", "median", "all"}`` of a list of timings."""
    return {"best": min(times), "median": statistics.median(times), "all": list(times)}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_info() -> dict:
    import jax

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "load_average_1_5_15": load_average(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
    }
    try:
        import flax
        import optax

        info["flax"] = flax.__version__
        info["optax"] = optax.__version__
    except ImportError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = None
    return info
