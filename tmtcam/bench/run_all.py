"""``tmtcam bench all`` (``make bench``): the speed benchmarks, and on request the accuracy benchmark.

On a machine with a CUDA GPU it also runs ``tmtcam bench gpu`` (the real recipes' shapes on the GPU),
so ``make bench`` on a cluster node documents that node too.

The accuracy benchmark (``tmtcam bench tmt``: every method on every embedded pair, several seeds)
trains dozens of models and takes far longer than the speed benchmarks, so it only runs with
``--with-accuracy``; it writes its own section of the same document.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

import torch

from tmtcam.bench import gpu_speed
from tmtcam.bench.speed import add_common_arguments, headline, run_speed

ACCURACY_MODULE = "tmtcam.pipelines.tmt_benchmark"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tmtcam bench all", description="make bench: speed benchmarks (+ accuracy with --with-accuracy)"
    )
    add_common_arguments(parser)
    parser.add_argument(
        "--with-accuracy",
        action="store_true",
        help=f"also run the TMT accuracy benchmark ({ACCURACY_MODULE})",
    )
    return parser


def run_accuracy(args: argparse.Namespace) -> int:
    """``tmtcam bench tmt`` into the same document, its JSON next to bench.json."""
    try:
        module = importlib.import_module(ACCURACY_MODULE)
    except ModuleNotFoundError as err:
        if err.name != ACCURACY_MODULE:
            raise
        raise SystemExit(f"--with-accuracy: {ACCURACY_MODULE} is not available in this install") from None
    argv = [
        "--doc",
        str(args.doc),
        "--out",
        str(args.out / "tmt"),
        "--json",
        str(args.out / "tmt_accuracy.json"),
    ]
    if args.quick:
        argv += ["--pairs", "day_to_night", "--seeds", "1", "--methods", "finetune", "tmt",
                 "--source-steps", "20", "--adapt-steps", "10"]  # fmt: skip
    return int(module.main(argv) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(headline(run_speed(args.out, args.doc, args.quick, args.threads), args.out, args.doc))
    if torch.cuda.is_available():
        gpu_speed.run(torch.device("cuda"), args.out, args.doc, args.quick)
    return run_accuracy(args) if args.with_accuracy else 0
