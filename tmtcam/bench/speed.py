"""``tmtcam bench speed``: every speed and cost benchmark, into docs/benchmarks.md and bench.json.

Order matters on a shared machine: the peak-memory children run first and side by side (memory
does not depend on load), then the timed benchmarks run one at a time in this process. The JSON
is rewritten after each benchmark, so an interrupted run keeps what it measured. ``--quick`` runs
every benchmark on small sizes with few repeats (a smoke test of the whole path, not a result).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from tmtcam.bench import dataloader_speed, head_ranking_speed, kmeans_speed, lightning_overhead, tmt_profile
from tmtcam.bench.isolated import measure_peak_rss
from tmtcam.bench.report import machine_line, write_json, write_section
from tmtcam.bench.speed_report import speed_markdown
from tmtcam.bench.training_steps import compare_steps, promptcam_img_per_s
from tmtcam.environment import busy_cores

SECTION = "speed"
MEMORY_STEPS: dict[str, tuple[str, dict[str, Any]]] = {
    "tmt": ("tmtcam.bench.training_steps:tmt_step", {"method": "tmt"}),
    "finetune": ("tmtcam.bench.training_steps:tmt_step", {"method": "finetune"}),
    "promptcam": ("tmtcam.bench.training_steps:promptcam_step", {}),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tmtcam bench speed", description="Speed and cost benchmarks -> docs/benchmarks.md, bench.json"
    )
    add_common_arguments(parser)
    return parser


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/bench"), help="folder for bench.json")
    parser.add_argument(
        "--doc", type=Path, default=Path("docs/benchmarks.md"), help="markdown file to update"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats: a smoke test")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the project's CPU target)")


def run_speed(out: Path, doc: Path, quick: bool, threads: int = 2) -> dict[str, Any]:
    """Run every benchmark, write ``out/bench.json`` as it goes and the doc section at the end."""
    from tmtcam.pipelines.quiet import quiet_lightning

    quiet_lightning()
    torch.set_num_threads(threads)
    start = time.perf_counter()
    results: dict[str, Any] = {
        "quick": quick,
        "machine": machine_line(),
        "load_average": {"start": _load()},
        "busy_cores_at_start": round(busy_cores(1.0), 2),
    }
    json_path = out / "bench.json"

    def record(key: str, measure: Callable[[], Any]) -> Any:
        began = time.perf_counter()
        print(f"bench: {key} ...", flush=True)
        results[key] = measure()
        results.setdefault("seconds_per_benchmark", {})[key] = round(time.perf_counter() - began, 1)
        write_json(json_path, results)
        return results[key]

    record("peak_rss", lambda: measure_peak_rss(MEMORY_STEPS, steps=2 if quick else 3, threads=threads))
    steps = record("steps", lambda: compare_steps(quick))
    results["tmt_step_ratio"] = steps["ratio_to_finetune"]["tmt"]["median"]
    promptcam = record("promptcam_step", lambda: promptcam_img_per_s(quick))
    record("profile", lambda: tmt_profile.profile_step("tmt", steps=2 if quick else 5))
    record("kmeans", lambda: kmeans_speed.run(quick))
    headrank = record("headrank", lambda: head_ranking_speed.run(quick))
    results["headrank_ratio"] = headrank["headrank_ratio"]
    with tempfile.TemporaryDirectory(prefix="tmtcam-bench-lightning-") as scratch:  # logs and checkpoints
        lightning = record(
            "lightning",
            lambda: lightning_overhead.run(scratch, steps=7 if quick else 40, skip=2 if quick else 3),
        )
    results["lightning_ratio"] = lightning["lightning_ratio"]
    training = {
        "tmt": steps["training_img_per_s"]["tmt"],
        "finetune": steps["training_img_per_s"]["finetune"],
        "promptcam": promptcam["img_per_s"],
    }
    record("dataloader", lambda: dataloader_speed.run(training, quick))
    results["seconds"] = round(time.perf_counter() - start, 1)
    results["load_average"]["end"] = _load()
    write_json(json_path, results)
    write_section(doc, SECTION, speed_markdown(results))
    return results


def _load() -> float:
    """1-minute load average: how busy the shared machine was (2 means both cores fully used)."""
    return round(os.getloadavg()[0], 2)


def headline(results: dict[str, Any], out: Path, doc: Path) -> str:
    return (
        f"bench: tmt_step_ratio {results['tmt_step_ratio']}, headrank_ratio {results['headrank_ratio']}, "
        f"lightning_ratio {results['lightning_ratio']} ({results['seconds']:.0f} s) -> {out / 'bench.json'}, {doc}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(headline(run_speed(args.out, args.doc, args.quick, args.threads), args.out, args.doc))
    return 0
