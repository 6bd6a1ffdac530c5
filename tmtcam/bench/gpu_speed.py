"""``tmtcam bench gpu``: the real recipes' shapes on one CUDA GPU, where the CPU benchmarks cannot go.

``make bench`` times the small CPU models of the embedded demos. This benchmark times what a cluster
user runs: TMT as ``experiments/tmt/gta5_to_cityscapes.yaml`` configures it (ViT-B/16 at 512 px
crops, mask-transformer decoder, 19 classes, k in {8, 12, 16}, 4 source + 4 target images per
step) and Prompt-CAM as ``experiments/promptcam/cub.yaml`` does (frozen ViT-B/16 at 224 px, 200 class
prompts, batch 16). Each in ``bf16-mixed`` (``torch.autocast``, what Lightning's precision plugin
wraps the forward in) and in float32, plus the bf16 error against float32 on the same weights, the
peak GPU memory of each step, k-means on CUDA tensors (does ``auto`` pick the fastest backend
there?) and batched vs naive head ranking at 224 px.

Weights and images are random: step time and memory do not depend on the values (k-means runs a
fixed number of Lloyd iterations), and nothing has to be downloaded. The timers of
:mod:`tmtcam.bench.measure` wait for queued CUDA work before they stop, so they measure finished work.
"""

from __future__ import annotations

import argparse
import gc
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import torch

from tmtcam.bench.head_ranking_speed import measure_config
from tmtcam.bench.kmeans_speed import measure_shape
from tmtcam.bench.measure import Timing, paired_ratio, time_interleaved
from tmtcam.bench.report import machine_line, markdown_table, write_json, write_section
from tmtcam.clustering import faiss_available
from tmtcam.tasks.promptcam_classifier import PromptCAMClassifier
from tmtcam.tasks.tmt_segmentation import TMTSegmentation

SECTION = "gpu"
SEGMENTER = {"model_name": "vit_base_patch16_224", "img_size": 512}
SEGMENTATION = {"num_classes": 19, "decoder": "mask_transformer", "acte": {"k_choices": [8, 12, 16]}}
PROMPTCAM_BACKBONE = {"model_name": "vit_base_patch16_224", "img_size": 224}
PRECISIONS = ("bf16", "fp32")
SEGMENTATION_HEADER = ["method / precision", "ms per step", "img/s",
                       "step / fine-tune step (same precision)", "peak GPU MiB"]  # fmt: skip
PROMPTCAM_HEADER = ["method / precision", "ms per step", "img/s", "peak GPU MiB"]
KMEANS_HEADER = ["problem", "shape", "torch (CUDA)", "faiss", "`auto` picks", "fastest"]


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def segmentation_step(
    method: str, precision: str, device: torch.device, crop: int, per_domain: int
) -> Callable[[], float]:
    """One TMT (or baseline) optimisation step at the GTA5 -> Cityscapes recipe's shapes."""
    torch.manual_seed(0)
    task = TMTSegmentation(backbone=dict(SEGMENTER, img_size=crop), method=method, **SEGMENTATION)
    task = task.to(device).train()
    optimizer = task.build_optimizer()
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2 * per_domain, 3, crop, crop, generator=generator).to(device)
    masks = torch.randint(0, 19, (2 * per_domain, crop, crop), generator=generator).to(device)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, precision):
            total = task.step_loss(images, masks, (per_domain, per_domain), [1.0, 1.0])
        total.backward()
        optimizer.step()
        return float(total.detach())

    return step


def promptcam_step(
    method: str, precision: str, device: torch.device, size: int, batch: int
) -> Callable[[], float]:
    """One Prompt-CAM (or baseline) step at the CUB recipe's shapes: prompts and head learn."""
    torch.manual_seed(0)
    task = PromptCAMClassifier(
        backbone=dict(PROMPTCAM_BACKBONE, img_size=size), num_classes=200, method=method
    )
    task = task.to(device).train()
    parameters = [p for p in task.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(parameters, lr=0.005, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=generator).to(device)
    labels = torch.randint(0, 200, (batch,), generator=generator).to(device)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, precision):
            loss = torch.nn.functional.cross_entropy(task(images).float(), labels)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def _peak_mib(build: Callable[[], Callable[[], float]], device: torch.device) -> float:
    """Peak GPU memory of two steps of a freshly built model (weights + optimiser state + activations).

    Counted from what was allocated before the build, so nothing left over from an earlier
    measurement inflates it.
    """
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step = build()
    step()
    step()
    return round((torch.cuda.max_memory_allocated(device) - before) / 2**20, 1)


def _measure_steps(
    builders: dict[str, Callable[[], Callable[[], float]]], images: int, repeats: int, device: torch.device
) -> tuple[dict[str, Timing], dict[str, dict[str, Any]]]:
    """Interleaved step times of every variant (rows of ms per step and img/s), then on CUDA each
    variant's peak memory, built again on its own once the timed models are dropped."""
    steps = {name: build() for name, build in builders.items()}
    timings = dict(zip(steps, time_interleaved(*steps.values(), repeats=repeats, warmup=2), strict=True))
    del steps
    rows = {
        name: {"step_ms": timing.as_ms(), "img_per_s": round(images / timing.median, 1)}
        for name, timing in timings.items()
    }
    if device.type == "cuda":
        for name, build in builders.items():
            rows[name]["peak_mib"] = _peak_mib(build, device)
    return timings, rows


def compare_segmentation(device: torch.device, quick: bool) -> dict[str, Any]:
    crop, per_domain = (64, 1) if quick else (512, 4)
    builders = {
        f"{method}/{precision}": partial(segmentation_step, method, precision, device, crop, per_domain)
        for precision in PRECISIONS
        for method in ("finetune", "tmt", "global", "patch", "grid")
        if precision == "bf16" or method in ("finetune", "tmt")
    }
    timings, rows = _measure_steps(builders, 2 * per_domain, 3 if quick else 20, device)
    for precision in PRECISIONS:
        base = timings[f"finetune/{precision}"]
        for name, timing in timings.items():
            if name.endswith(precision) and not name.startswith("finetune"):
                rows[name]["ratio_to_finetune"] = paired_ratio(timing, base)
    return {
        "shape": f"{per_domain} + {per_domain} images, {crop} px, ViT-B/16, mask transformer",
        "steps": rows,
    }


def compare_promptcam(device: torch.device, quick: bool) -> dict[str, Any]:
    size, batch = (32, 2) if quick else (224, 16)
    builders = {
        f"{method}/{precision}": partial(promptcam_step, method, precision, device, size, batch)
        for precision in PRECISIONS
        for method in ("promptcam", "vpt", "linear_probe")
        if precision == "bf16" or method == "promptcam"
    }
    _, rows = _measure_steps(builders, batch, 3 if quick else 20, device)
    return {"shape": f"batch {batch}, {size} px, ViT-B/16 frozen, 200 classes", "steps": rows}


def bf16_error(device: torch.device, quick: bool) -> dict[str, float]:
    """‖bf16 − fp32‖ / ‖fp32‖ of the outputs of the same weights on the same images (eval mode)."""
    crop, size = (64, 32) if quick else (512, 224)
    torch.manual_seed(0)
    segmenter = TMTSegmentation(backbone=dict(SEGMENTER, img_size=crop), method="tmt", **SEGMENTATION)
    classifier = PromptCAMClassifier(backbone=dict(PROMPTCAM_BACKBONE, img_size=size), num_classes=200)
    cases = {
        "tmt_logits": (lambda x: segmenter.segmenter(x).logits, segmenter, crop),
        "promptcam_logits": (classifier, classifier, size),
    }
    errors = {}
    for name, (forward, module, side) in cases.items():
        module.to(device).eval()
        images = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(1)).to(device)
        with torch.no_grad():
            reference = forward(images).float()
            with _autocast(device, "bf16"):
                low = forward(images).float()
        errors[name] = float((low - reference).norm() / reference.norm())
        module.cpu()
    return errors


def compare_kmeans(device: torch.device, quick: bool) -> dict[str, Any]:
    """ms per image of each backend on CUDA tensors, and whether ``auto`` picks the fastest."""
    generator = torch.Generator().manual_seed(0)
    shapes = {
        "tmt_vit_b_512": (torch.randn(8, 1024, 770, generator=generator), 12),
        "vit_s_224": (torch.randn(8, 196, 386, generator=generator), 8),
        "large": (torch.randn(1, 10_000 if quick else 100_000, 384, generator=generator), 64),
    }
    return {
        name: measure_shape(points.to(device), k, repeats=3 if quick else 7)
        for name, (points, k) in shapes.items()
    }


def compare_head_ranking(device: torch.device, quick: bool) -> dict[str, Any]:
    """Batched vs naive ranking at the paper's 224 px (the CPU benchmark stops at 112 px)."""
    size = 32 if quick else 224
    config = {"backbone": dict(PROMPTCAM_BACKBONE, img_size=size), "images": 2 if quick else 8, "size": size}
    return {"size": size, **measure_config(config, top_k=4, repeats=2 if quick else 5, device=device)}


def run(device: torch.device, out: Path, doc: Path, quick: bool) -> dict[str, Any]:
    """Every measurement; the JSON is rewritten after each, so a crash keeps what was measured."""
    results: dict[str, Any] = {"quick": quick, "machine": machine_line()}
    measurements = {
        "segmentation": compare_segmentation,
        "promptcam": compare_promptcam,
        "bf16_error": bf16_error,
        "kmeans": compare_kmeans,
        "head_ranking": compare_head_ranking,
    }
    for name, measure in measurements.items():
        print(f"bench gpu: {name} ...", flush=True)
        results[name] = measure(device, quick)
        write_json(out / "bench_gpu.json", results)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    write_section(doc, SECTION, gpu_markdown(results))
    return results


def _ms(timing: dict[str, Any]) -> str:
    return f"{timing['median']:.1f} ({timing['low']:.1f}–{timing['high']:.1f})"


def _ratio(row: dict[str, Any]) -> str:
    ratio = row.get("ratio_to_finetune")
    return f"{ratio['median']:.3f} ({ratio['low']:.3f}–{ratio['high']:.3f})" if ratio else "1"


def gpu_markdown(r: dict[str, Any]) -> str:
    """The ``gpu`` section of docs/benchmarks.md."""
    seg, prompt, heads = r["segmentation"], r["promptcam"], r["head_ranking"]
    seg_rows = [[name, _ms(row["step_ms"]), row["img_per_s"], _ratio(row), row.get("peak_mib", "–")]
                for name, row in seg["steps"].items()]  # fmt: skip
    prompt_rows = [[name, _ms(row["step_ms"]), row["img_per_s"], row.get("peak_mib", "–")]
                   for name, row in prompt["steps"].items()]  # fmt: skip
    kmeans_rows = [
        [name, row["shape"], _ms(row["torch"]), _ms(row["faiss"]) if "faiss" in row else "–",
         row["auto_picks"], row["fastest_backend"]]
        for name, row in r["kmeans"].items()
    ]  # fmt: skip
    errors = ", ".join(f"{name} {value:.2e}" for name, value in r["bf16_error"].items())
    return f"""## GPU: the real recipes' shapes (`tmtcam bench gpu`)

{r["machine"]}

Random weights and images (time and memory do not depend on them); bf16 = `torch.autocast` bf16,
as Lightning's `bf16-mixed`. Every figure is `median (low–high)` over interleaved repeats; peak
memory is measured per variant on its own (weights, optimiser state, activations of two steps).

### TMT training step ({seg["shape"]})

{markdown_table(SEGMENTATION_HEADER, seg_rows)}

### Prompt-CAM training step ({prompt["shape"]})

{markdown_table(PROMPTCAM_HEADER, prompt_rows)}

bf16 vs float32 outputs, same weights and images (‖bf16 − fp32‖ / ‖fp32‖): {errors}.

### k-means on CUDA tensors (ms per image, 10 Lloyd iterations)

{markdown_table(KMEANS_HEADER, kmeans_rows)}

faiss here is {"installed" if faiss_available() else "not installed"}; it is the CPU build unless
faiss-gpu is installed, so its figure includes the copy to the host.

### Head ranking ({heads["images"]} images at {heads["size"]} px, ViT-B/16, top-{heads["top_k"]} of {heads["heads"]} heads)

Batched {_ms(heads["batched_ms_per_image"])} ms per image, naive {_ms(heads["naive_ms_per_image"])}:
ratio {heads["ratio"]["median"]:.3f}; same ranking: {heads["same_ranking"]}.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tmtcam bench gpu", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench"), help="folder for bench_gpu.json")
    parser.add_argument(
        "--doc", type=Path, default=Path("docs/benchmarks.md"), help="markdown file to update"
    )
    parser.add_argument("--quick", action="store_true", help="tiny shapes, few repeats: a smoke test")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (only with --quick)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("tmtcam bench gpu: no CUDA GPU visible (torch.cuda.is_available() is False)")
    if device.type != "cuda" and not args.quick:
        raise SystemExit(
            "tmtcam bench gpu: the full shapes need a CUDA GPU; use --quick for a CPU smoke test"
        )
    results = run(device, args.out, args.doc, args.quick)
    ratio = results["segmentation"]["steps"]["tmt/bf16"]["ratio_to_finetune"]["median"]
    print(f"bench gpu: TMT / fine-tune step (bf16) {ratio} -> {args.out / 'bench_gpu.json'}, {args.doc}")
    return 0
