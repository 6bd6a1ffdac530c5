"""Markdown for the ``speed`` section of docs/benchmarks.md, from the results ``bench speed`` measured.

Pure formatting: every number comes from the results dict (the same one written to bench.json),
so the document and the JSON never disagree. Figures read ``median (low–high)`` over repeats.
"""

from __future__ import annotations

from typing import Any

from tmtcam.bench.report import markdown_table

KMEANS_COLUMNS = ("faiss", "torch", "naive_numpy")


def spread(values: dict[str, float], digits: int = 2) -> str:
    """``median (low–high)`` of a summary or Timing dict."""
    return f"{values['median']:.{digits}f} ({values['low']:.{digits}f}–{values['high']:.{digits}f})"


def _verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def summary_table(r: dict[str, Any]) -> str:
    steps, light, loader = r["steps"], r["lightning"], r["dataloader"]
    cpu = steps["cpu_time_ratio_to_finetune"]
    kmeans_ok = all(row["auto_is_fastest"] for row in r["kmeans"].values())
    auto_line = ", ".join(
        f"{name}: {row['auto_picks']} vs {row['fastest_backend']}" for name, row in r["kmeans"].items()
    )
    rows = [
        ["TMT step / fine-tune step (wall time)", spread(steps["ratio_to_finetune"]["tmt"], 3), "≤ 1.15",
         _verdict(r["tmt_step_ratio"] <= 1.15)],
        ["TMT step / fine-tune step (CPU time)", spread(cpu["tmt"], 3), "≤ 1.15", _verdict(cpu["tmt"]["median"] <= 1.15)],
        ["head ranking, batched / naive", f"{r['headrank_ratio']:.3f}", "≤ 0.1", _verdict(r["headrank_ratio"] <= 0.1)],
        ["Lightning / plain loop img/s (pipeline trainer)", spread(light["pipeline"]["ratio"], 3), "≥ 0.95",
         _verdict(r["lightning_ratio"] >= 0.95)],
        ["Lightning / plain loop img/s (CLI trainer)", spread(light["cli"]["ratio"], 3), "≥ 0.95",
         _verdict(light["cli"]["ratio"]["median"] >= 0.95)],
        ["k-means `auto` = fastest backend", auto_line, "all", _verdict(kmeans_ok)],
        ["slowest data source / fastest training img/s", f"{loader['slowest_over_fastest_training']:.2f}", "> 1",
         _verdict(loader["slowest_over_fastest_training"] > 1)],
    ]  # fmt: skip
    return markdown_table(["measure", "median (low–high)", "target", "met"], rows)


def steps_table(r: dict[str, Any]) -> str:
    steps = r["steps"]
    rows = []
    for name, timing in steps["step_ms"].items():
        ratio = steps["ratio_to_finetune"].get(name)
        cpu_ratio = steps["cpu_time_ratio_to_finetune"].get(name)
        rows.append(
            [
                name,
                spread(timing, 0),
                steps["training_img_per_s"][name],
                spread(ratio, 3) if ratio else "1",
                spread(cpu_ratio, 3) if cpu_ratio else "1",
            ]
        )
    return markdown_table(
        ["method", "ms per step", "img/s", "step / fine-tune step (wall)", "same, CPU time"], rows
    )


def memory_table(r: dict[str, Any]) -> str:
    rows = [
        [name, m["rss_built_mib"], m["peak_rss_mib"], m["step_adds_mib"]] for name, m in r["peak_rss"].items()
    ]
    return markdown_table(
        ["training step", "RSS after building model + batch (MiB)", "peak RSS (MiB)", "steps add (MiB)"], rows
    )


def profile_table(r: dict[str, Any]) -> str:
    components = dict(r["profile"]["components_ms"])
    total = components.pop("total (profiled)")
    rows = [[name, f"{ms:.1f}", f"{100 * ms / total:.1f} %"] for name, ms in components.items()]
    rows.append(["**total (profiled)**", f"{total:.1f}", "100 %"])
    ops = [[name, f"{ms:.1f}"] for name, ms in r["profile"]["top_ops_self_ms"]]
    return (
        markdown_table(["component", "ms per step", "share"], rows)
        + "\n\nTop ATen ops by self time (forward + backward + optimiser):\n\n"
        + markdown_table(["op", "ms per step"], ops)
    )


def kmeans_table(r: dict[str, Any]) -> str:
    rows = []
    for name, row in r["kmeans"].items():
        cells = [spread(row[column], 3) if column in row else "–" for column in KMEANS_COLUMNS]
        rows.append([f"{name} ({row['shape']})", *cells, row["auto_picks"], row["fastest_overall"]])
    return markdown_table(["problem", *KMEANS_COLUMNS, "`auto` picks", "fastest"], rows)


def headrank_table(r: dict[str, Any]) -> str:
    rows = [
        [name, s["heads"], s["top_k"], spread(s["batched_ms_per_image"], 1), spread(s["naive_ms_per_image"], 0),
         spread(s["ratio"], 3)]
        for name, s in r["headrank"]["shapes"].items()
    ]  # fmt: skip
    return markdown_table(
        ["model", "heads", "top-k", "batched ms/image", "naive ms/image", "batched / naive"], rows
    )


def lightning_table(r: dict[str, Any]) -> str:
    light = r["lightning"]
    rows = [
        [setup, spread(light[setup]["lightning_img_per_s"], 1), spread(light[setup]["plain_img_per_s"], 1),
         spread(light[setup]["ratio"], 3), spread(light[setup]["overhead_ms_per_step"], 1), light[setup]["paired_steps"],
         light[setup]["setup_seconds"]]
        for setup in ("pipeline", "cli")
    ]  # fmt: skip
    return markdown_table(
        [
            "Lightning set-up",
            "Lightning img/s",
            "plain img/s",
            "ratio (per step)",
            "Lightning − plain (ms/step)",
            "paired steps",
            "fit set-up (s, once)",
        ],
        rows,
    )


def dataloader_table(r: dict[str, Any]) -> str:
    loader = r["dataloader"]
    rows = [[name, spread(rate, 0)] for name, rate in loader["generators_img_per_s"].items()]
    rows += [[name, spread(rate, 0)] for name, rate in loader["folder_readers_img_per_s"].items()]
    training = ", ".join(f"{name} {rate}" for name, rate in loader["training_img_per_s"].items())
    return (
        markdown_table(["source (training augmentation, main-process DataLoader)", "img/s"], rows)
        + f"\n\nTraining throughput of the models they feed (img/s): {training}. Slowest source: "
        f"{loader['slowest_source']}, {loader['slowest_over_fastest_training']:.2f}x the fastest model."
    )


# other work holding at least half a core when the benchmark starts inflates absolute times on a
# 2-core machine (ratios, timed interleaved, less so)
BUSY_CORES = 0.5


def load_note(load: dict[str, float], busy_at_start: float | None = None) -> str:
    """What the machine's load says about the figures: busy with other jobs at the start, or idle.

    ``busy_at_start`` (cores kept busy by other processes, sampled just before the first
    measurement) decides; the 1-minute load average lags a minute behind and at the end includes
    the benchmark's own threads, so it is printed but only judged when no sample exists.
    """
    start, end = load.get("start"), load.get("end")
    note = (
        f"Load average (1 min) of the machine: {'?' if start is None else start} at the start, "
        f"{'?' if end is None else end} at the end (the end includes the benchmark's own threads)"
    )
    busy = start if busy_at_start is None else busy_at_start
    if busy_at_start is not None:
        note += f"; cores busy with other work at the start: {busy_at_start:.2f}"
    if busy is None:
        return note + "."
    if busy >= BUSY_CORES:
        return note + "; other jobs were running, so absolute times are inflated and noisy."
    return note + "; no other job was running at the start."


def speed_markdown(r: dict[str, Any]) -> str:
    """The whole ``speed`` section."""
    return f"""## Speed and cost (`make bench`)

{r["machine"]}

{load_note(r.get("load_average", {}), r.get("busy_cores_at_start"))} Every figure is
`median (low–high)` over repeats; compared variants were timed interleaved, and ratios are taken
per round (per step for the Lightning loop) before the median. {"**Quick run: smoke-test sizes, not results.**" if r["quick"] else ""}
Total: {r["seconds"]:.0f} s.

### Summary

{summary_table(r)}

### One training step per method

{r["steps"]["batch"]}; small CPU ViT (width 192, depth 6, patch 8), linear decoder, AdamW.

{steps_table(r)}

### Peak memory (RSS) per training step

Each measured in its own fresh process over a few steps (the optimiser allocates its state in the
first). TMT / fine-tune: 8 + 8 images at 64 px; Prompt-CAM: batch 32, frozen 6-head ViT. Most of the
RSS is the interpreter with torch, timm, Lightning and albumentations loaded; the last column is
what the training steps themselves add.

{memory_table(r)}

### Where one TMT step goes (`torch.profiler`)

{r["profile"]["batch"]}; un-profiled step {r["profile"]["step_ms_unprofiled"]:.0f} ms. Backward is not
split by module (autograd does not attribute it).

{profile_table(r)}

### k-means (ms per image; `large` is one image)

10 Lloyd iterations each; faiss runs small per-image problems on one OpenMP thread. Both backends seed
with k-means++ (`tmtcam.clustering.torch_kmeans.kmeans_plus_plus`, k sequential passes over the
points); the naive baseline starts from k random points, so its figure carries no seeding cost.

{kmeans_table(r)}

### Prompt-CAM head ranking

Greedy ranking to the top-4 of 12 heads; both rankers return the same ranking (checked).

{headrank_table(r)}

### Lightning vs a plain PyTorch loop (TMT, same batches and optimiser)

{lightning_table(r)}

### Data loading

{dataloader_table(r)}
"""
