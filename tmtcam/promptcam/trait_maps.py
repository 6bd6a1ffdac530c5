"""Trait maps: where class c's prompt looks in the last block, per attention head.

The last block's attention row of prompt c over the patch columns is a distribution over the image
for each head, shape (H, h, w). Heads specialise (one finds the wing, another the tail), so the maps
are shown per head, ordered by the greedy head ranking; a single saliency map (for metrics) is the
mean of the top-ranked heads' maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tmtcam.promptcam.head_ranking import HeadRanking, rank_heads_from_run
from tmtcam.promptcam.model import PromptCAM


def prompt_attention_maps(
    attention: torch.Tensor, class_index: torch.Tensor, first_patch: int, grid: tuple[int, int]
) -> torch.Tensor:
    """(B, H, S, S) last-block attention -> (B, H, h, w): row ``class_index[b]`` over the patch columns.

    Prompt c sits at row c because the sequence is ``[P_1..P_C, prefix, patches]``.
    """
    batch, heads = attention.shape[:2]
    if attention.shape[-1] - first_patch != grid[0] * grid[1]:
        raise ValueError(
            f"attention has {attention.shape[-1] - first_patch} patch columns after index {first_patch}, "
            f"grid {grid} needs {grid[0] * grid[1]}"
        )
    rows = attention[torch.arange(batch, device=attention.device), :, class_index]  # (B, H, S)
    return rows[..., first_patch:].reshape(batch, heads, *grid)


def top_head_map(maps: torch.Tensor, order: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of the ``k`` most important heads' maps: (B, H, h, w), (B, H) -> (B, h, w)."""
    if not 1 <= k <= maps.shape[1]:
        raise ValueError(f"k must be in [1, {maps.shape[1]}], got {k}")
    index = order[:, :k, None, None].expand(-1, -1, *maps.shape[-2:])
    return maps.gather(1, index).mean(1)


@dataclass
class TraitExplanation:
    """Everything a heatmap grid or a metric needs for a batch of images."""

    logits: torch.Tensor  # (B, C)
    class_index: torch.Tensor  # (B,) explained class
    maps: torch.Tensor  # (B, H, h, w) explained class's prompt attention per head
    ranking: HeadRanking

    @property
    def predicted(self) -> torch.Tensor:
        return self.logits.argmax(-1)

    def saliency(self, k: int) -> torch.Tensor:
        """(B, h, w) mean map of the ``k`` top-ranked heads."""
        return top_head_map(self.maps, self.ranking.order, k)


@torch.no_grad()
def explain_batch(
    model: PromptCAM,
    images: torch.Tensor,
    class_index: torch.Tensor | int | None = None,
    top_k: int = 1,
    until_misclassified: bool = False,
) -> TraitExplanation:
    """Trait maps of ``class_index`` (default: the predicted class) and the head ranking for it."""
    model.eval()
    run = model.run(images, return_attention=True, return_last_block_input=True)
    ranking = rank_heads_from_run(
        model, run, class_index, top_k=top_k, until_misclassified=until_misclassified
    )
    maps = prompt_attention_maps(run.last_attention, ranking.class_index, model.num_leading_tokens, run.grid)
    return TraitExplanation(logits=run.logits, class_index=ranking.class_index, maps=maps, ranking=ranking)
