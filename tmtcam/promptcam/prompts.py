"""Class prompts: one learnable token per class, and where in the ViT they enter.

Prompt-CAM reads each class's score off that class's own prompt, so a prompt is the only place
class-specific information can live. The *variant* decides how deep the prompts reach:

* ``deep`` (default): every block gets a fresh set of C prompts; the previous block's prompt
  outputs are dropped. Only the last set is read out.
* ``shallow``: one set enters block 0 and its outputs are carried through every block.
* ``intermediate(i)``: deep from block ``i`` on; blocks before ``i`` run exactly as the frozen ViT.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn

from tmtcam.backbones import PromptInsertion

_INTERMEDIATE = re.compile(r"^intermediate\((\d+)\)$")


@dataclass(frozen=True)
class PromptVariant:
    """Parsed variant: the backbone's insertion mode, the first block with prompts, how many sets."""

    mode: str
    start_block: int

    def num_sets(self, depth: int) -> int:
        return 1 if self.mode == "shallow" else depth - self.start_block


def parse_prompt_variant(text: str, depth: int) -> PromptVariant:
    """``"deep"`` | ``"shallow"`` | ``"intermediate(i)"`` with ``0 <= i < depth``, else ValueError naming the key."""
    name = text.strip().lower()
    if name == "deep":
        return PromptVariant("deep", 0)
    if name == "shallow":
        return PromptVariant("shallow", 0)
    match = _INTERMEDIATE.match(name)
    if match is None:
        raise ValueError(f"prompt_variant={text!r}: expected 'deep', 'shallow' or 'intermediate(i)'")
    start = int(match.group(1))
    if not 0 <= start < depth:
        raise ValueError(
            f"prompt_variant={text!r}: block index must be in [0, {depth}) for this {depth}-block backbone"
        )
    return PromptVariant("deep", start)


def prompt_init_bound(patch_size: int, dim: int) -> float:
    """VPT/Prompt-CAM's Xavier-style bound: a prompt is initialised like a patch-embedding output."""
    return math.sqrt(6.0 / (3 * patch_size**2 + dim))


class ClassPrompts(nn.Module):
    """``num_sets`` x ``num_prompts`` x ``dim`` learnable tokens with prompt dropout.

    Also used for VPT's class-agnostic prompts (the baseline), where ``num_prompts`` is not C.
    """

    def __init__(
        self,
        num_prompts: int,
        dim: int,
        patch_size: int,
        variant: PromptVariant,
        depth: int,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if num_prompts < 1:
            raise ValueError(f"num_prompts must be >= 1, got {num_prompts}")
        self.variant = variant
        bound = prompt_init_bound(patch_size, dim)
        self.tokens = nn.Parameter(
            torch.empty(variant.num_sets(depth), num_prompts, dim).uniform_(-bound, bound)
        )
        self.dropout = nn.Dropout(dropout)

    @property
    def num_prompts(self) -> int:
        return int(self.tokens.shape[1])

    def insertion(self) -> PromptInsertion:
        """The schedule the backbone reads; dropout is applied here so it follows ``train()``/``eval()``."""
        return PromptInsertion(
            self.dropout(self.tokens), mode=self.variant.mode, start_block=self.variant.start_block
        )
