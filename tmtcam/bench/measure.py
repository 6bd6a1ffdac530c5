"""Timing and memory measurement that survives a shared, noisy machine.

Every figure is a median over repeats with its spread (min..max). Ratios compare two things
measured in the same process, interleaved round by round, and are taken per round before the
median: a burst of load from a neighbour slows both halves of a round alike and cancels out.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Timing:
    """Seconds per call, one sample per repeat (in the order they were measured).

    ``samples`` is wall-clock time, what a user waits for. ``cpu_samples`` (when recorded) is this
    process's CPU time over the same calls: on a machine shared with other jobs it leaves out the
    time the process waited for a core, so ratios of CPU times scatter less than ratios of wall
    times; it does count threads that spin, and it is not what a user waits for.
    """

    samples: tuple[float, ...]
    cpu_samples: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.samples:
            raise ValueError("a Timing needs at least one sample")
        if self.cpu_samples and len(self.cpu_samples) != len(self.samples):
            raise ValueError("cpu_samples must pair one to one with samples")

    def cpu(self) -> Timing:
        """The CPU-time samples as a Timing of their own."""
        if not self.cpu_samples:
            raise ValueError("this Timing recorded no CPU time")
        return Timing(self.cpu_samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)

    @property
    def repeats(self) -> int:
        return len(self.samples)

    def scaled(self, factor: float) -> Timing:
        """The same samples times ``factor`` (e.g. 1000 for ms, or 1000 / images for ms per image)."""
        return Timing(
            tuple(sample * factor for sample in self.samples),
            tuple(sample * factor for sample in self.cpu_samples),
        )

    def as_dict(self, digits: int = 3) -> dict[str, float | int]:
        return {
            "median": round(self.median, digits),
            "low": round(self.low, digits),
            "high": round(self.high, digits),
            "repeats": self.repeats,
        }

    def as_ms(self) -> dict[str, float | int]:
        return self.scaled(1000).as_dict()


def wait_for_gpu() -> None:
    """Block until queued CUDA work is done, so a host timer measures finished work (no-op on CPU).

    CUDA kernels run asynchronously: without this, a timed call that ends in kernel launches would
    count only the launches.
    """
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()


def time_call(fn: Callable[[], object], repeats: int = 5, warmup: int = 1, inner: int = 1) -> Timing:
    """Seconds per call of ``fn`` (each sample averages ``inner`` calls)."""
    for _ in range(warmup):
        fn()
    samples, cpu_samples = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(inner):
            fn()
        wait_for_gpu()
        samples.append((time.perf_counter() - start) / inner)
        cpu_samples.append((time.process_time() - cpu_start) / inner)
    return Timing(tuple(samples), tuple(cpu_samples))


def time_interleaved(*fns: Callable[[], object], repeats: int = 7, warmup: int = 1) -> tuple[Timing, ...]:
    """Time several callables round-robin so machine noise affects all alike; one Timing each.

    The order within a round alternates, so none of them always runs right after another one
    (caches, allocator state and CPU frequency then favour no variant).
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    wall: list[list[float]] = [[] for _ in fns]
    cpu: list[list[float]] = [[] for _ in fns]
    for round_index in range(repeats):
        order = range(len(fns)) if round_index % 2 == 0 else reversed(range(len(fns)))
        for index in order:
            start, cpu_start = time.perf_counter(), time.process_time()
            fns[index]()
            wait_for_gpu()
            wall[index].append(time.perf_counter() - start)
            cpu[index].append(time.process_time() - cpu_start)
    return tuple(Timing(tuple(w), tuple(c)) for w, c in zip(wall, cpu, strict=True))


def paired_ratio(numerator: Timing, denominator: Timing, digits: int = 3) -> dict[str, float]:
    """Median and spread of the per-round ratios of two interleaved timings."""
    if numerator.repeats != denominator.repeats:
        raise ValueError(
            f"paired ratio needs equal repeats, got {numerator.repeats} and {denominator.repeats}"
        )
    ratios = [a / b for a, b in zip(numerator.samples, denominator.samples, strict=True)]
    return summary(ratios, digits)


def summary(values: Sequence[float], digits: int = 3) -> dict[str, float]:
    """``{"median", "low", "high"}`` of a list of measurements."""
    return {
        "median": round(statistics.median(values), digits),
        "low": round(min(values), digits),
        "high": round(max(values), digits),
    }


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ratio(numerator: Timing, denominator: Timing) -> float:
    """Ratio of the medians (for timings that were not interleaved round by round)."""
    return numerator.median / denominator.median
