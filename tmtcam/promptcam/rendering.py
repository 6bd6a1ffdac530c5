"""Turn a :class:`TraitExplanation` into heatmap-grid rows: the image, then its top-ranked heads.

Shared by the training task (logged images), the demo and ``tmtcam explain`` so all three show
the same picture: tile titles name the predicted / explained class and, per head, the class-logit
drop its blurring caused (the head's importance).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from data_modules.normalization import Normalization
from tmtcam.promptcam.trait_maps import TraitExplanation
from tmtcam.viz.heatmaps import denormalize, heatmap_row


def class_name(names: Sequence[str] | None, index: int) -> str:
    return names[index] if names is not None and 0 <= index < len(names) else str(index)


def explanation_caption(
    explanation: TraitExplanation, image: int, names: Sequence[str] | None, label: int | None = None
) -> str:
    """One line: predicted class, explained class, true class (when known), kept heads."""
    predicted = int(explanation.predicted[image])
    explained = int(explanation.class_index[image])
    parts = [f"pred {class_name(names, predicted)}", f"explained {class_name(names, explained)}"]
    if label is not None:
        parts.append(f"true {class_name(names, label)}")
    parts.append(f"top heads {explanation.ranking.top_heads(image)}")
    return ", ".join(parts)


def explanation_rows(
    images: torch.Tensor,
    explanation: TraitExplanation,
    names: Sequence[str] | None = None,
    heads_shown: int = 3,
    tile_size: int = 128,
    normalization: Normalization | None = None,
) -> list[np.ndarray]:
    """One grid row per image: [image | top ``heads_shown`` heads' trait maps | their mean].

    ``normalization``: the data's ``(mean, std)`` (``None``: ImageNet's), to show the input as it was.
    """
    heads_shown = min(heads_shown, explanation.maps.shape[1])
    combined = explanation.saliency(heads_shown)
    rows = []
    for index in range(images.shape[0]):
        heads = explanation.ranking.order[index, :heads_shown].tolist()
        drops = explanation.ranking.score_drop[index]
        maps = [explanation.maps[index, head] for head in heads] + [combined[index]]
        titles = [f"head {head} drop {float(drops[head]):.2f}" for head in heads] + [
            f"mean top-{heads_shown}"
        ]
        predicted, explained = int(explanation.predicted[index]), int(explanation.class_index[index])
        image_title = class_name(names, explained)
        if predicted != explained:
            image_title = f"{image_title} (pred {class_name(names, predicted)})"
        rows.append(
            heatmap_row(denormalize(images[index], normalization), maps, titles, image_title, tile_size)
        )
    return rows
