"""How prompt tokens enter a ViT: which block gets which prompts, and whether they are carried.

Kept separate from the backbone so the schedule is a small value object that tasks build and the
backbone only reads. Prompts are prepended *after* the positional embedding (they have no position),
so the sequence seen by a block is ``[P_1..P_C, prefix tokens (CLS, registers), patches]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

PromptMode = Literal["deep", "shallow"]


@dataclass(frozen=True)
class PromptInsertion:
    """Prompt tokens for one forward pass.

    tokens: ``(num_insertions, P, D)`` for ``deep`` (one fresh set per block from ``start_block`` on)
        or ``(1, P, D)`` / ``(P, D)`` for ``shallow`` (inserted once at ``start_block``, then carried).
    mode: ``deep`` drops the prompt outputs after every block and prepends the next block's set;
        ``shallow`` keeps the prompt outputs flowing through the following blocks.
    start_block: first block that sees prompts (``intermediate(i)`` = deep from block ``i``).
    """

    tokens: torch.Tensor
    mode: PromptMode = "deep"
    start_block: int = 0

    def validate(self, depth: int, dim: int) -> None:
        """Reject a schedule that does not fit the backbone, naming what is wrong."""
        tokens = self.tokens if self.tokens.dim() == 3 else self.tokens.unsqueeze(0)
        if tokens.shape[-1] != dim:
            raise ValueError(f"prompt width {tokens.shape[-1]} != backbone embed_dim {dim}")
        if not 0 <= self.start_block < depth:
            raise ValueError(f"prompt start_block={self.start_block} outside [0, {depth})")
        if self.mode == "deep" and tokens.shape[0] != depth - self.start_block:
            raise ValueError(
                f"deep prompts need one set per block from {self.start_block}: "
                f"expected {depth - self.start_block} sets, got {tokens.shape[0]}"
            )
        if self.mode not in ("deep", "shallow"):
            raise ValueError(f"prompt mode must be 'deep' or 'shallow', got {self.mode!r}")

    def for_block(self, block: int) -> torch.Tensor | None:
        """The (P, D) prompts to prepend before ``block``, or None when the block gets none new."""
        tokens = self.tokens if self.tokens.dim() == 3 else self.tokens.unsqueeze(0)
        if block < self.start_block:
            return None
        if self.mode == "shallow":
            return tokens[0] if block == self.start_block else None
        return tokens[block - self.start_block]

    def replaces_previous(self, block: int) -> bool:
        """Deep prompts from the previous block are dropped before the next block's are prepended."""
        return self.mode == "deep" and block > self.start_block
