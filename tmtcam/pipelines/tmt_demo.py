"""``tmtcam demo tmt`` (``make train-tmt``): TMT vs fine-tuning on an embedded pair, no download.

Pre-trains a small ViT segmenter on the pair's source domain (cached), adapts it to the target with
``finetune`` and with ``tmt`` under the same seed and budget, prints a target-mIoU table and writes
``<out>/summary.json``: ``{"pair", "miou": {"finetune", "tmt"}, "seconds", ...}``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from data_modules.segmentation import SYNTHETIC_PAIRS
from tmtcam.bench.report import write_json
from tmtcam.environment import add_accelerator_option, parse_on_this_machine
from tmtcam.option_types import output_dir, positive_int
from tmtcam.pipelines.quiet import quiet_lightning
from tmtcam.pipelines.tmt_runs import (
    Budget,
    adapt_and_test,
    budget_dict,
    pretrain_source,
    test_source_model,
)

DEFAULT_PAIR = "day_to_night"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tmtcam demo tmt", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=output_dir, default=Path("runs/train-tmt"), help="run directory")
    parser.add_argument("--pair", default=DEFAULT_PAIR, choices=sorted(SYNTHETIC_PAIRS), help="embedded pair")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--methods", nargs="+", default=["finetune", "tmt"], help="stage-2 methods to compare"
    )
    parser.add_argument("--source-steps", type=positive_int, default=Budget.source_steps)
    parser.add_argument("--adapt-steps", type=positive_int, default=Budget.adapt_steps)
    add_accelerator_option(parser, default=Budget.accelerator)
    return parse_on_this_machine(parser, argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_lightning()
    console = Console()
    budget = Budget(
        source_steps=args.source_steps, adapt_steps=args.adapt_steps, accelerator=args.accelerator
    )
    start = time.perf_counter()
    console.print(f"[bold]TMT demo[/bold] pair {args.pair}: {SYNTHETIC_PAIRS[args.pair].description}")
    console.print(f"stage 1: training on the source domain ({budget.source_steps} steps) ...")
    init = pretrain_source(args.pair, args.seed, args.out / "cache", budget)
    source_only = test_source_model(args.pair, args.seed, init, budget)
    results = {}
    for method in args.methods:
        console.print(f"stage 2: adapting with {method} ({budget.adapt_steps} steps, "
                      f"{budget.few_target_images} labelled target images) ...")  # fmt: skip
        results[method] = adapt_and_test(args.pair, method, args.seed, init, args.out, budget)
    seconds = time.perf_counter() - start
    table = Table(title=f"target mIoU, {args.pair} (test split, {budget.test_images} images)")
    table.add_column("method")
    table.add_column("mIoU", justify="right")
    table.add_column("seconds", justify="right")
    table.add_row("source only", f"{source_only:.2f}", "")
    for method, result in results.items():
        table.add_row(method, f"{result['miou']:.2f}", f"{result['seconds']:.0f}")
    console.print(table)
    summary = {
        "pair": args.pair,
        "miou": {method: result["miou"] for method, result in results.items()},
        "seconds": seconds,
        "source_only_miou": source_only,
        "per_class_iou": {method: result["per_class"] for method, result in results.items()},
        "seed": args.seed,
        "budget": budget_dict(budget),
    }
    write_json(args.out / "summary.json", summary)
    console.print(f"summary: {args.out / 'summary.json'}  ({seconds:.0f} s)")
    return 0
