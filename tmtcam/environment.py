"""Offline-safe process defaults, applied by the entry points (never at import).

albumentations checks PyPI for updates at import and W&B asks for a login on first use; on a
cluster node or a laptop on a plane both would hang or fail. The entry points call
:func:`apply_offline_defaults` first; an explicit user setting always wins.

``OMP_WAIT_POLICY=PASSIVE``: faiss-cpu ships its own OpenMP runtime beside torch's, so after a
faiss call two thread pools spin-wait for work on the same cores. Measured on 2 busy cores, one
eval forward of the small TMT segmenter took 2.46 s with spinning threads and 0.10 s with passive
ones. It must be set before torch or faiss is loaded, which is why the entry points set it first.

:func:`idle_cores` tells a CPU demo how many torch threads it can use without fighting other jobs.
:func:`parse_on_this_machine` refuses a demo's ``--accelerator gpu`` before it builds anything when no GPU is visible.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def wandb_key_configured() -> bool:
    """True when the user gave W&B credentials (env var or ~/.netrc entry)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def traceback_requested() -> bool:
    """``TMTCAM_TRACEBACK=1``: the commands raise their one-line user errors with the traceback, to
    trace a check that names the wrong thing, or a bug's error that reads like bad input."""
    return os.environ.get("TMTCAM_TRACEBACK", "") not in ("", "0")


def apply_offline_defaults() -> None:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not wandb_key_configured():
        os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def add_accelerator_option(
    parser: argparse.ArgumentParser, default: str = "cpu", help: str = "one GPU or the CPU"
) -> None:
    """The demos' and benchmarks' ``--accelerator {cpu,gpu}``; parse with :func:`parse_on_this_machine`."""
    parser.add_argument("--accelerator", default=default, choices=("cpu", "gpu"), help=help)


def parse_on_this_machine(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, then refuse ``--accelerator gpu`` without a GPU as argparse refuses a
    bad value (exit 2, the option named), before anything is built."""
    args = parser.parse_args(argv)
    if reason := gpu_unavailable(args.accelerator):
        parser.error(reason)
    return args


def gpu_unavailable(accelerator: str) -> str | None:
    """Why ``--accelerator`` cannot run here, or None: ``gpu`` needs a visible CUDA GPU.

    The demos check this before building any data: Lightning would say so only when the first
    Trainer is made, after the data is rendered, and with a traceback.
    """
    import torch

    if accelerator == "gpu" and not torch.cuda.is_available():
        return "--accelerator gpu: no CUDA GPU is visible (torch.cuda.is_available() is False); use --accelerator cpu"
    return None


def cpu_times() -> tuple[int, int]:
    """(total, idle) jiffies of all CPUs since boot, from Linux's /proc/stat."""
    with open("/proc/stat") as stat:
        values = [int(value) for value in stat.readline().split()[1:]]
    return sum(values), values[3] + values[4]  # idle + iowait


def busy_cores(interval: float = 0.5, sample: Callable[[], tuple[int, int]] = cpu_times) -> float:
    """How many cores other processes keep busy now, from two samples ``interval`` s apart (0 if unknown).

    Not the load average: it lags by a minute, so right after another job ends it still reads
    about 2 and a demo started then would run on one thread, twice as slow.
    """
    try:
        total_before, idle_before = sample()
        time.sleep(interval)
        total_after, idle_after = sample()
    except (OSError, ValueError, IndexError):  # no /proc/stat (macOS, Windows)
        return 0.0
    total = total_after - total_before
    return 0.0 if total <= 0 else (os.cpu_count() or 1) * (1.0 - (idle_after - idle_before) / total)


def idle_cores(busy: float | None = None) -> int:
    """CPU cores not busy with other work (at least 1).

    On a shared 2-core machine a second torch thread competing with another process makes every
    step wait for the slower thread: measured 3x slower than one thread. So use only idle cores.
    """
    cores = os.cpu_count() or 1
    return max(1, cores - round(busy_cores() if busy is None else busy))
