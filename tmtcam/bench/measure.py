"""Timing and memory measurement that survives a shared, noisy machine.

Every figure is a median over repeats with its spread (min..max), and ratios compare two things
measured in the same process, interleaved, so that a burst of load from a neighbour hits both.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass
class Timing:
    """Seconds per call: median and spread over ``repeats`` measurements."""

    median: float
    low: float
    high: float
    repeats: int

    def as_ms(self) -> dict[str, float]:
        return {key: round(value * 1000, 3) if isinstance(value, float) else value for key, value in asdict(self).items()}


def time_call(fn: Callable[[], object], repeats: int = 5, warmup: int = 1, inner: int = 1) -> Timing:
    """Median seconds per call of ``fn`` (each measurement averages ``inner`` calls)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - start) / inner)
    return Timing(statistics.median(samples), min(samples), max(samples), repeats)


def time_interleaved(
    first: Callable[[], object], second: Callable[[], object], repeats: int = 7, warmup: int = 2
) -> tuple[Timing, Timing]:
    """Time two callables alternately so machine noise affects both alike; returns both timings."""
    for _ in range(warmup):
        first()
        second()
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, bucket in ((first, samples[0]), (second, samples[1])):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return tuple(Timing(statistics.median(s), min(s), max(s), repeats) for s in samples)  # type: ignore[return-value]


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ratio(numerator: Timing, denominator: Timing) -> float:
    return numerator.median / denominator.median
