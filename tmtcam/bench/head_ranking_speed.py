"""Prompt-CAM head ranking: batched (cached last-block input) vs one full forward pass per mask.

Both rankers run the same greedy search to ``top_k`` heads, so the ratio is the cost of evaluating
the same masks two ways. Shapes: the project's small CPU ViT widened to 12 heads (the head count
of ViT-B, which sets the number of masks: 12 heads to top-4 is 68 greedy evaluations + 4 final
ones per image), and in the full run also a randomly initialised ViT-B/16 (the paper's backbone) at
112 px: at 224 px one naive ranking takes minutes on 2 CPU cores. The rankings of the timed runs
are checked to agree, so the ratio compares two ways of computing the same answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tmtcam.backbones import ViTBackbone
from tmtcam.bench.measure import paired_ratio, time_interleaved
from tmtcam.promptcam import HeadRanking, PromptCAM, rank_heads_batched, rank_heads_naive

SHAPES: dict[str, dict[str, Any]] = {
    "small_12_heads_64px": {
        "backbone": {
            "model_name": "vit_tiny_patch16_224",
            "img_size": 64,
            "patch_size": 8,
            "embed_dim": 192,
            "depth": 6,
            "num_heads": 12,
        },
        "images": 4,
        "size": 64,
    },
    "vit_base_16_112px": {
        "backbone": {"model_name": "vit_base_patch16_224", "img_size": 112},
        "images": 1,
        "size": 112,
    },
}


def _model(backbone: dict[str, Any], num_classes: int = 10) -> PromptCAM:
    torch.manual_seed(0)
    return PromptCAM(ViTBackbone(**backbone), num_classes=num_classes).eval()


def measure(shape: str, top_k: int = 4, repeats: int = 3, images: int | None = None) -> dict[str, Any]:
    """ms per image of both rankers on ``shape`` (``images`` overrides its count) and their paired ratio."""
    result = measure_config(SHAPES[shape], top_k, repeats, images)
    if not result["same_ranking"]:
        raise RuntimeError(f"head ranking {shape}: batched and naive rankings disagree; the ratio is moot")
    return result


def measure_config(
    config: dict[str, Any],
    top_k: int = 4,
    repeats: int = 3,
    images: int | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """:func:`measure` of a shape given as a config, on ``device``; reports whether the rankings agree.

    On a GPU the two rankers run different batch shapes, whose kernels may round differently, so a
    near tie between two heads can order them differently: reported, not raised.
    """
    model = _model(config["backbone"]).to(device)
    count, size = images or config["images"], config["size"]
    batch = torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    rankings: dict[str, HeadRanking] = {}

    def ranked(name: str, ranker: Callable[..., HeadRanking]) -> Callable[[], None]:
        return lambda: rankings.__setitem__(name, ranker(model, batch, top_k=top_k))

    ranked("batched", rank_heads_batched)()  # warm-up of the cheap one; the naive one needs none
    timings = time_interleaved(
        ranked("batched", rank_heads_batched), ranked("naive", rank_heads_naive), repeats=repeats, warmup=0
    )
    return {
        "heads": model.backbone.num_heads,
        "top_k": top_k,
        "images": count,
        "batched_ms_per_image": timings[0].scaled(1000 / count).as_dict(),
        "naive_ms_per_image": timings[1].scaled(1000 / count).as_dict(),
        "ratio": paired_ratio(*timings),
        "same_ranking": torch.equal(rankings["batched"].kept, rankings["naive"].kept),
    }


def run(quick: bool = False) -> dict[str, Any]:
    """The small shape always; ViT-B/16 only in the full run (its naive ranking takes a minute)."""
    shapes = ["small_12_heads_64px"] if quick else list(SHAPES)
    repeats = {"small_12_heads_64px": 2 if quick else 5, "vit_base_16_112px": 2}
    results = {shape: measure(shape, repeats=repeats[shape], images=2 if quick else None) for shape in shapes}
    headline = results.get("vit_base_16_112px", results["small_12_heads_64px"])
    return {"shapes": results, "headrank_ratio": headline["ratio"]["median"]}
