"""Compare explanations on images with known trait locations: Prompt-CAM vs Grad-CAM vs rollout.

Each explainer is scored on *its own* model (insertion/deletion ask "does the model's score follow
the map?"), for the image's true class: Prompt-CAM's map is the mean of the top-``k`` ranked heads
of the true class's prompt; Grad-CAM explains the true class's logit of the classifier it is given;
attention rollout is class-agnostic. Localisation (pointing game, mass inside the trait mask) is
measured against the synthetic species' trait mask: the parts that tell a species from its
nearest neighbour. The pointing game allows the usual tolerance of 15 px at 224 px (Zhang et al.,
2016), scaled to the image side (4 px at 64 px): a map peak on the patch next to a thin leg counts.

Two references keep the pointing game honest. *Peak on object* is the same game played against the
whole creature: a map can miss the trait because it misses the animal. *Chance* is what a map that
finds the creature but not the trait scores (:func:`~tmtcam.metrics.interpretability.object_chance`);
on the 64 px synthetic species it is about 0.5, because the dilated trait covers half a small
creature, so only a pointing game well above it shows trait localisation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from tmtcam.metrics.interpretability import (
    insertion_deletion_auc,
    mass_inside_mask,
    object_chance,
    pointing_game,
)
from tmtcam.promptcam.model import PromptCAM
from tmtcam.promptcam.saliency_baselines import attention_rollout_maps, grad_cam_maps
from tmtcam.promptcam.trait_maps import TraitExplanation, explain_batch

Explainer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (images, classes) -> (B, h, w)


@dataclass
class ExplainerScores:
    pointing_game: float
    mass_in_trait: float
    peak_on_object: float
    insertion: float
    deletion: float

    def as_dict(self) -> dict[str, float]:
        return {key: round(value, 4) for key, value in asdict(self).items()}


def gather_batches(
    batches: Iterable[dict], max_images: int, keys: tuple[str, ...]
) -> dict[str, torch.Tensor]:
    """Concatenate ``keys`` of the first ``max_images`` images; a missing key is an error naming it."""
    collected: dict[str, list[torch.Tensor]] = {key: [] for key in keys}
    count = 0
    for batch in batches:
        missing = [key for key in keys if key not in batch]
        if missing:
            raise KeyError(
                f"batches lack {missing}: trait metrics need a dataset with trait masks (synthetic species)"
            )
        for key in keys:
            collected[key].append(batch[key])
        count += len(batch[keys[0]])
        if count >= max_images:
            break
    return {key: torch.cat(values)[:max_images] for key, values in collected.items()}


@torch.no_grad()
def accuracy(model: nn.Module, batches: Iterable[dict], device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy of ``model`` (already on ``device``) over CPU batches moved there one at a time."""
    model.eval()
    correct = total = 0
    for batch in batches:
        logits = model(batch["image"].to(device))
        correct += int((logits.argmax(-1).cpu() == batch["label"]).sum())
        total += len(batch["label"])
    return correct / max(total, 1)


@torch.no_grad()
def rank_every_head(
    model: PromptCAM, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 32
) -> list[TraitExplanation]:
    """Trait maps of the true class with all heads ordered, in batches of ``batch_size``.

    A greedy ranking down to a single head orders every head, and the top k of that order are the
    heads a ``top_k=k`` ranking keeps, so one ranking serves the chosen k and every other k.
    """
    return [
        explain_batch(model, x, y, top_k=1)
        for x, y in zip(images.split(batch_size), labels.split(batch_size), strict=True)
    ]


def promptcam_maps(explanations: list[TraitExplanation], top_k: int) -> torch.Tensor:
    """(N, h, w) Prompt-CAM saliency: the mean map of the ``top_k`` top-ranked heads, per image."""
    return torch.cat([explanation.saliency(top_k) for explanation in explanations])


def localisation_by_head_count(
    explanations: list[TraitExplanation], trait_mask: torch.Tensor
) -> dict[str, dict[str, float]]:
    """Pointing game and trait mass of the mean map of the top k heads, for every k (1 .. all heads).

    Reported next to the chosen ``top_k`` so that the choice of k can be judged, not tuned on the
    test images.
    """
    tolerance = pointing_tolerance(trait_mask.shape[-1])
    result = {}
    for k in range(1, explanations[0].maps.shape[1] + 1):
        maps = promptcam_maps(explanations, k)
        result[str(k)] = {
            "pointing_game": round(float(pointing_game(maps, trait_mask, tolerance).nanmean()), 4),
            "mass_in_trait": round(float(mass_inside_mask(maps, trait_mask).nanmean()), 4),
        }
    return result


def choose_top_k(by_head_count: dict[str, dict[str, float]]) -> int:
    """The head count whose mean map points into the trait most often; ties go to fewer heads.

    Meant for :func:`localisation_by_head_count` on *validation* images, so the k used on the test
    images is a hyper-parameter chosen like any other, not read off the test set. Fewer heads win
    ties because a map of fewer heads is the more specific explanation.
    """
    if not by_head_count:
        raise ValueError("by_head_count is empty: rank heads on at least one validation image first")
    best = max(score["pointing_game"] for score in by_head_count.values())
    return min(int(k) for k, score in by_head_count.items() if score["pointing_game"] == best)


def grad_cam_explainer(model: nn.Module) -> Explainer:
    return lambda images, classes: grad_cam_maps(model, images, classes)


def rollout_explainer(model: nn.Module) -> Explainer:
    return lambda images, classes: attention_rollout_maps(model.backbone, images)


def pointing_tolerance(image_side: int) -> int:
    """15 px at 224 px, scaled to ``image_side``."""
    return round(15 * image_side / 224)


def explainer_maps(
    explainer: Explainer, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 32
) -> torch.Tensor:
    """(N, h, w) maps of ``explainer`` for the given classes, computed ``batch_size`` images at a time."""
    return torch.cat(
        [explainer(x, y) for x, y in zip(images.split(batch_size), labels.split(batch_size), strict=True)]
    )


def score_maps(
    maps: torch.Tensor,
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    trait_mask: torch.Tensor,
    object_mask: torch.Tensor,
    steps: int = 16,
    batch_size: int = 32,
) -> ExplainerScores:
    """Localisation against ``trait_mask`` (and ``object_mask``), insertion/deletion AUC on ``model``."""
    model.eval()
    with torch.no_grad():
        auc = insertion_deletion_auc(model, images, maps, labels, steps=steps, batch_size=4 * batch_size)
    tolerance = pointing_tolerance(images.shape[-1])
    return ExplainerScores(
        pointing_game=float(pointing_game(maps, trait_mask, tolerance).nanmean()),
        mass_in_trait=float(mass_inside_mask(maps, trait_mask).nanmean()),
        peak_on_object=float(pointing_game(maps, object_mask, tolerance).nanmean()),
        insertion=float(auc["insertion"].mean()),
        deletion=float(auc["deletion"].mean()),
    )


def object_only_reference(object_mask: torch.Tensor, trait_mask: torch.Tensor) -> dict[str, float]:
    """Pointing game and trait mass of a map that finds the object but not the trait (chance level)."""
    tolerance = pointing_tolerance(trait_mask.shape[-1])
    return {
        "pointing_game": round(float(object_chance(object_mask, trait_mask, tolerance).nanmean()), 4),
        "mass_in_trait": round(float(object_chance(object_mask, trait_mask).nanmean()), 4),
    }
