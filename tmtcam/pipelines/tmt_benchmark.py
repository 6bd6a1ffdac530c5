"""``tmtcam bench tmt``: every adaptation method on every embedded pair, mean ± std over seeds.

For each pair and seed the source model is trained once (cached) and every method adapts it with
the same budget. Writes a table to the ``tmt-accuracy`` section of docs/benchmarks.md and JSON
``{"pairs": {pair: {method: [miou per seed]}}, "mean_gain_tmt_vs_finetune": float, ...}``.

Ablations run through the same harness: ``--variant NAME='{"method": "tmt", "acte": {"alpha": 1.0}}'``
adds a column NAME trained with those TMTSegmentation arguments.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from data_modules.segmentation import SYNTHETIC_PAIRS
from tmtcam.bench.report import machine_line, markdown_table, write_json, write_section
from tmtcam.environment import add_accelerator_option, parse_on_this_machine
from tmtcam.option_types import non_negative_int, output_dir, positive_int
from tmtcam.pipelines.quiet import quiet_lightning
from tmtcam.pipelines.tmt_runs import (
    BACKBONES,
    Budget,
    adapt_and_test,
    budget_dict,
    pretrain_source,
    test_source_model,
)
from tmtcam.tmt import METHODS
from tmtcam.tmt.decoders import DECODERS


def parse_variants(items: list[str]) -> dict[str, dict[str, Any]]:
    """``NAME=JSON`` strings -> {name: TMTSegmentation keyword arguments}; plain method names allowed.

    Raises ValueError naming the variant, which ``parse_args`` turns into an argparse error.
    """
    variants: dict[str, dict[str, Any]] = {}
    for item in items:
        name, _, options = item.partition("=")
        try:
            variants[name] = json.loads(options) if options else {"method": name}
        except json.JSONDecodeError as error:
            raise ValueError(f"--variant {name}: not valid JSON ({error}): {options}") from None
        if variants[name].get("method", "tmt") not in METHODS:
            raise ValueError(f"--variant {name}: method must be one of {METHODS}")
    return variants


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tmtcam bench tmt", description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=["all"], help="pair names or 'all'")
    parser.add_argument("--seeds", type=positive_int, default=3, help="how many seeds, one source model each")
    parser.add_argument(
        "--first-seed",
        type=non_negative_int,
        default=0,
        help="seeds run from here (to split seeds over processes or array jobs)",
    )
    parser.add_argument(
        "--methods", nargs="+", default=list(METHODS), choices=METHODS, help="adaptation methods"
    )
    parser.add_argument("--variant", action="append", default=[], help="NAME=JSON of extra model arguments")
    parser.add_argument(
        "--out",
        type=output_dir,
        default=Path("runs/bench/tmt"),
        help="models and logs (cached source models)",
    )
    doc_help = "markdown file whose --section is replaced by the table (for trials: a file of your own)"
    parser.add_argument("--doc", type=Path, default=Path("docs/benchmarks.md"), help=doc_help)
    parser.add_argument(
        "--json", type=Path, default=Path("runs/bench/tmt_accuracy.json"), help="results file"
    )
    parser.add_argument(
        "--source-steps", type=positive_int, default=Budget.source_steps, help="stage-1 steps"
    )
    parser.add_argument(
        "--adapt-steps", type=positive_int, default=Budget.adapt_steps, help="stage-2 steps per method"
    )
    add_accelerator_option(parser, default=Budget.accelerator)
    parser.add_argument(
        "--backbone", default=Budget.backbone, choices=sorted(BACKBONES), help="ViT shape (vit-s: for a GPU)"
    )
    parser.add_argument(
        "--decoder", default=Budget.decoder, choices=DECODERS, help="segmentation head of every stage"
    )
    parser.add_argument(
        "--crop-size", type=positive_int, default=Budget.crop_size, help="image side in pixels"
    )
    parser.add_argument(
        "--target-images",
        type=positive_int,
        default=Budget.few_target_images,
        help="target images to adapt on",
    )
    parser.add_argument(
        "--unlabelled-target", action="store_true", help="unsupervised adaptation: no target masks"
    )
    parser.add_argument("--section", default="tmt-accuracy", help="section of --doc to replace")
    args = parse_on_this_machine(parser, argv)
    check_choices(parser, args)
    return args


def check_choices(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse what argparse's types cannot see (exit 2 with the usage line, as for any bad option):
    unknown pairs, a malformed ``--variant``, a crop off the backbone's patch grid."""
    pairs = sorted(SYNTHETIC_PAIRS) if args.pairs == ["all"] else args.pairs
    if unknown := [pair for pair in pairs if pair not in SYNTHETIC_PAIRS]:
        parser.error(f"--pairs: unknown {unknown}; choose from {sorted(SYNTHETIC_PAIRS)} or 'all'")
    args.pairs = pairs
    try:
        args.variants = {method: {"method": method} for method in args.methods} | parse_variants(args.variant)
    except ValueError as error:
        parser.error(str(error))
    patch = BACKBONES[args.backbone]["patch_size"]
    if args.crop_size % patch:
        parser.error(f"--crop-size {args.crop_size}: must be a multiple of the patch size {patch}")


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def seed_text(args: argparse.Namespace) -> str:
    """The report's seed phrase: "3 seed(s)" for seeds 0..2, "1 seed(s) from 1" after ``--first-seed 1``."""
    start = f" from {args.first_seed}" if args.first_seed else ""
    return f"{args.seeds} seed(s){start}"


def mean_gain(results: dict[str, dict[str, list[float]]], method: str, baseline: str) -> float | None:
    """Average over pairs of (mean over seeds of method) - (mean over seeds of baseline)."""
    gains = [
        statistics.mean(by_method[method]) - statistics.mean(by_method[baseline])
        for by_method in results.values()
        if method in by_method and baseline in by_method
    ]
    return statistics.mean(gains) if gains else None


def paired_gain(results: dict[str, dict[str, list[float]]], method: str, baseline: str) -> str:
    """``method - baseline`` per (pair, seed) run, which shares source model and data order:
    mean ± std over all runs and how many runs the method wins. Seed noise shows up here, not in
    the per-pair means alone."""
    diffs = [
        a - b
        for by_method in results.values()
        if method in by_method and baseline in by_method
        for a, b in zip(by_method[method], by_method[baseline], strict=True)
    ]
    if not diffs:
        return "n/a"
    spread = f" ± {statistics.stdev(diffs):.2f}" if len(diffs) > 1 else ""
    wins = sum(diff > 0 for diff in diffs)
    return f"{statistics.mean(diffs):+.2f}{spread} (wins {wins}/{len(diffs)})"


def report_markdown(
    results: dict,
    source_only: dict,
    columns: list[str],
    args: argparse.Namespace,
    budget: Budget,
    seconds: float,
) -> str:
    rows = []
    for pair, by_method in results.items():
        rows.append([pair, mean_std(source_only[pair]), *(mean_std(by_method[c]) for c in columns)])
    rows.append(
        ["**mean**", f"{statistics.mean(statistics.mean(v) for v in source_only.values()):.2f}"]
        + [f"{statistics.mean(statistics.mean(r[c]) for r in results.values()):.2f}" for c in columns]
    )
    gains = {c: mean_gain(results, c, "finetune") for c in columns if c != "finetune"}
    gain_text = ", ".join(f"{c} {g:+.2f}" for c, g in gains.items() if g is not None)
    paired_text = "; ".join(f"{c} {paired_gain(results, c, 'finetune')}" for c in gains)
    target = "labelled" if budget.target_labelled else "unlabelled"
    return (
        f"## TMT accuracy on the embedded pairs (`tmtcam bench tmt`)\n\n{machine_line()}\n\n"
        f"Command: `{args.command}`\n\n"
        f"Target test mIoU (%), mean ± std over {seed_text(args)}; {budget.describe()}, "
        f"source stage {budget.source_steps} steps, adaptation {budget.adapt_steps} steps "
        f"with {budget.few_target_images} {target} target images, same budget for every method. "
        f"Run time {seconds / 60:.0f} min.\n\n"
        + markdown_table(["pair", "source only", *columns], rows)
        + f"\n\nMean gain over `finetune` (mIoU points): {gain_text or 'n/a'}.\n"
        + f"Per run (pair × seed, same source model and data order): {paired_text or 'n/a'}.\n"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.command = "python -m tmtcam bench tmt " + shlex.join(sys.argv[1:] if argv is None else argv)
    quiet_lightning()
    pairs, variants = args.pairs, args.variants
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    budget = Budget(
        source_steps=args.source_steps,
        adapt_steps=args.adapt_steps,
        few_target_images=args.target_images,
        target_labelled=not args.unlabelled_target,
        accelerator=args.accelerator,
        backbone=args.backbone,
        crop_size=args.crop_size,
        decoder=args.decoder,
    )
    console, start = Console(), time.perf_counter()
    results: dict[str, dict[str, list[float]]] = {pair: {name: [] for name in variants} for pair in pairs}
    source_only: dict[str, list[float]] = {pair: [] for pair in pairs}
    for pair in pairs:
        for seed in seeds:
            init = pretrain_source(pair, seed, args.out / "cache", budget)
            source_only[pair].append(test_source_model(pair, seed, init, budget))
            for name, options in variants.items():
                options = dict(options)
                method = options.pop("method", "tmt")
                run = adapt_and_test(pair, method, seed, init, args.out / name, budget, model_options=options)
                results[pair][name].append(run["miou"])
                console.print(f"{pair} seed {seed} {name}: mIoU {run['miou']:.2f} ({run['seconds']:.0f} s)")
    seconds = time.perf_counter() - start
    columns = list(variants)
    payload = {
        "pairs": results,
        "source_only": source_only,
        "mean_gain_tmt_vs_finetune": mean_gain(results, "tmt", "finetune"),
        "mean_gain_vs_finetune": {c: mean_gain(results, c, "finetune") for c in columns if c != "finetune"},
        "variants": variants,
        "seeds": seeds,
        "budget": budget_dict(budget),
        "seconds": seconds,
        "command": args.command,
    }
    write_json(args.json, payload)
    report = report_markdown(results, source_only, columns, args, budget, seconds)
    write_section(args.doc, args.section, report)
    console.print(report)
    return 0
