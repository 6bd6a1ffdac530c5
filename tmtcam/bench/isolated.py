"""Peak memory of a training step, each measured in a fresh process so the peak is its own.

``ru_maxrss`` only ever grows within a process: measuring several steps in one process would report
the largest so far for all of them. Each step therefore runs in a spawned child that builds it from
an importable factory (``"module:function"``), notes its resident memory once the model and batch
exist, runs a few steps (the optimiser allocates its state on the first) and reports its peak.

The children only measure memory, which does not depend on timing, so they run side by side to
save wall time; step *times* are measured in the parent, interleaved (see ``training_steps``).
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
from typing import Any

from tmtcam.bench.measure import peak_rss_mib


def current_rss_mib() -> float:
    """Resident set size of this process now, in MiB (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _child(
    factory: str, kwargs: dict[str, Any], steps: int, threads: int, queue: multiprocessing.Queue
) -> None:
    try:
        import torch

        torch.set_num_threads(threads)
        module_name, function = factory.split(":")
        step = getattr(importlib.import_module(module_name), function)(**kwargs)
        built = current_rss_mib()
        for _ in range(steps):
            step()
        queue.put({"rss_built_mib": round(built, 1), "peak_rss_mib": round(peak_rss_mib(), 1)})
    except Exception as err:  # reported to the parent, which raises with the factory's name
        queue.put({"error": f"{type(err).__name__}: {err}"})


def measure_peak_rss(
    factories: dict[str, tuple[str, dict[str, Any]]],
    steps: int = 3,
    threads: int = 1,
    timeout_s: float = 1800,
) -> dict[str, dict[str, float]]:
    """name -> ``{"rss_built_mib", "peak_rss_mib", "step_adds_mib"}`` for each ``(factory, kwargs)``."""
    context = multiprocessing.get_context("spawn")
    running = {}
    for name, (factory, kwargs) in factories.items():
        queue = context.Queue()
        process = context.Process(target=_child, args=(factory, kwargs, steps, threads, queue))
        process.start()
        running[name] = (process, queue)
    results = {}
    for name, (process, queue) in running.items():
        result = queue.get(timeout=timeout_s)
        process.join()
        if "error" in result:
            raise RuntimeError(f"peak-memory step {name} ({factories[name][0]}) failed: {result['error']}")
        result["step_adds_mib"] = round(result["peak_rss_mib"] - result["rss_built_mib"], 1)
        results[name] = result
    return results
