"""argparse value types shared by the demos, the benchmarks and ``tmtcam explain``.

A count of zero or less (steps, epochs, seeds, a batch size) would otherwise get past argparse and
fail later with a traceback, or, for a step count, train without end. As argparse ``type=``
functions they are refused like a mistyped value: exit 2, the option named.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def positive_int(text: str) -> int:
    """An int >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An int >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def output_dir(text: str) -> Path:
    """A folder to write into: missing (it is created) or a folder, not an existing file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a folder")
    return path
