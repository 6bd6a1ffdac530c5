"""One ViT core for both methods, wrapping (never copying) a timm VisionTransformer.

What TMT and Prompt-CAM need beyond ``timm``'s ``forward_features``:

* an additive attention bias per block (TMA), given as a tensor per block or computed on the fly
  from the tokens entering a block (so regions found at a middle block can steer later blocks in
  the *same* pass). It goes through ``Block(attn_mask=...)``, which timm hands to fused SDPA;
* prompt tokens, deep or shallow (Prompt-CAM), see :mod:`tmtcam.backbones.prompts`;
* the last block's explicit attention probabilities, optionally with some heads "blurred" (their
  prompt rows made uniform over patches) for head ranking. Only that block leaves the fused path:
  timm's non-fused branch passes the probabilities through ``attn_drop``, and a forward hook on it
  reads (and, for blurring, replaces) them, so timm's attention code is reused as is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from tmtcam.backbones.loading import build_timm_vit
from tmtcam.backbones.prompts import PromptInsertion

AttentionBias = Mapping[int, torch.Tensor] | Callable[[int, torch.Tensor], torch.Tensor | None]


@dataclass
class BackboneOutput:
    """Everything a head may want from one pass. Tokens are after the final LayerNorm."""

    patch_tokens: torch.Tensor  # (B, N, D)
    prefix_tokens: torch.Tensor  # (B, num_prefix, D): CLS and register tokens
    prompt_tokens: torch.Tensor | None  # (B, P, D): prompt outputs of the last block
    grid: tuple[int, int]  # patch grid (h, w), h * w == N
    features: dict[int, torch.Tensor] = field(
        default_factory=dict
    )  # block i -> (B, N, D) patch tokens, pre-norm
    last_attention: torch.Tensor | None = None  # (B, H, S, S) probabilities of the last block
    last_block_input: torch.Tensor | None = (
        None  # (B, S, D) tokens entering the last block (prompts included)
    )


class ViTBackbone(nn.Module):
    """timm ViT with attention-bias, prompt and last-block-attention hooks.

    Args:
        model_name: any timm ``vit_*`` name (DINO ``vit_base_patch16_224.dino``, DINOv2, register variants).
        pretrained: load the model's pretrained weights (needs network unless ``weights`` is given).
        weights: local weights file; implies pretrained, never downloads.
        img_size: nominal input size (inputs of other sizes still work: ``dynamic_img_size``).
        patch_size, embed_dim, depth, num_heads: overrides for small from-scratch models
            (e.g. ``vit_tiny_patch16_224`` with patch 8, width 192, depth 6 for CPU runs).
        drop_path_rate: stochastic depth of the timm model.
        grad_checkpointing: recompute block activations in backward (large ViTs, long sequences).
        compile_blocks: ``torch.compile`` every block but the last, in place (state-dict keys are
            unchanged, so checkpoints stay interchangeable). The last block is left eager because
            trait maps read its attention through a hook.
    """

    def __init__(
        self,
        model_name: str = "vit_tiny_patch16_224",
        pretrained: bool = False,
        weights: str | None = None,
        img_size: int = 224,
        patch_size: int | None = None,
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        drop_path_rate: float = 0.0,
        grad_checkpointing: bool = False,
        compile_blocks: bool = False,
    ) -> None:
        super().__init__()
        overrides: dict[str, Any] = {"drop_path_rate": drop_path_rate}
        for key, value in dict(
            patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads
        ).items():
            if value is not None:
                overrides[key] = value
        self.model_name = model_name
        self.vit = build_timm_vit(
            model_name, pretrained=pretrained, weights=weights, img_size=img_size, model_overrides=overrides
        )
        self.grad_checkpointing = grad_checkpointing
        if compile_blocks:
            for block in list(self.vit.blocks)[:-1]:
                block.compile()
        self._last_attention: torch.Tensor | None = None

    # ----------------------------------------------------------------------------- properties
    @property
    def embed_dim(self) -> int:
        return int(self.vit.embed_dim)

    @property
    def depth(self) -> int:
        return len(self.vit.blocks)

    @property
    def num_heads(self) -> int:
        return int(self.vit.blocks[0].attn.num_heads)

    @property
    def patch_size(self) -> int:
        return int(self.vit.patch_embed.patch_size[0])

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.vit.num_prefix_tokens)

    @property
    def final_norm(self) -> nn.Module:
        return self.vit.norm

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid of an input; rejects sizes the patch embedding would silently crop."""
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(
                f"input size {height}x{width} is not divisible by the backbone patch size {p}; "
                f"resize/crop to a multiple of {p} (e.g. data.crop_size)"
            )
        return height // p, width // p

    # ----------------------------------------------------------------------------- forward
    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patch + position embedding: (B, num_prefix + N, D) tokens and the patch grid."""
        grid = self.grid_size(images.shape[-2], images.shape[-1])
        x = self.vit.patch_embed(images)
        x = self.vit._pos_embed(x)
        x = self.vit.patch_drop(x)
        return self.vit.norm_pre(x), grid

    def forward(
        self,
        images: torch.Tensor,
        attn_bias: AttentionBias | None = None,
        prompts: PromptInsertion | None = None,
        return_layers: Sequence[int] = (),
        return_last_attention: bool = False,
        return_last_block_input: bool = False,
        last_block_head_blur: torch.Tensor | None = None,
    ) -> BackboneOutput:
        """Run the ViT.

        attn_bias: per block, an additive bias broadcastable to (B, H, S, S) over the block's full
            sequence S (prompts + prefix + patches), or a callable ``(block, tokens) -> bias | None``.
        prompts: prompt schedule (deep/shallow/intermediate).
        return_layers: blocks whose output patch tokens (B, N, D, before the final norm) to return.
        last_block_head_blur: (B, H) bool; heads whose prompt rows become uniform over patches.
        """
        tokens, grid = self.embed(images)
        if prompts is not None:
            prompts.validate(self.depth, self.embed_dim)
        num_prompts = 0
        features: dict[int, torch.Tensor] = {}
        last = self.depth - 1
        for index in range(last):
            tokens, num_prompts = self._prepend_prompts(tokens, num_prompts, prompts, index)
            tokens = self._run_block(index, tokens, self._bias_for(attn_bias, index, tokens))
            if index in return_layers:
                features[index] = tokens[:, num_prompts + self.num_prefix_tokens :]
        tokens, num_prompts = self._prepend_prompts(tokens, num_prompts, prompts, last)
        block_input = tokens
        tokens, attention = self.forward_last_block(
            tokens,
            num_prompts,
            attn_bias=self._bias_for(attn_bias, last, tokens),
            return_attention=return_last_attention or last_block_head_blur is not None,
            head_blur=last_block_head_blur,
            normalize=False,
        )
        if last in return_layers:
            features[last] = tokens[:, num_prompts + self.num_prefix_tokens :]
        normed = self.vit.norm(tokens)
        prefix_end = num_prompts + self.num_prefix_tokens
        return BackboneOutput(
            patch_tokens=normed[:, prefix_end:],
            prefix_tokens=normed[:, num_prompts:prefix_end],
            prompt_tokens=normed[:, :num_prompts] if num_prompts else None,
            grid=grid,
            features=features,
            last_attention=attention if return_last_attention else None,
            last_block_input=block_input if return_last_block_input else None,
        )

    def forward_last_block(
        self,
        tokens: torch.Tensor,
        num_prompts: int,
        attn_bias: torch.Tensor | None = None,
        return_attention: bool = True,
        head_blur: torch.Tensor | None = None,
        normalize: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run only the last block on cached input tokens (batched head ranking re-uses this).

        Returns the block output (final-normed when ``normalize``) and, when asked, the attention
        probabilities (B, H, S, S) after blurring.
        """
        block = self.vit.blocks[-1]
        if not return_attention:
            return self._maybe_norm(self._run_block(self.depth - 1, tokens, attn_bias), normalize), None
        if head_blur is not None and head_blur.shape != (tokens.shape[0], self.num_heads):
            raise ValueError(
                f"head_blur must be (B, H)=({tokens.shape[0]}, {self.num_heads}), got {tuple(head_blur.shape)}"
            )
        with self._explicit_attention(block, num_prompts, head_blur):
            out = block(tokens, attn_mask=attn_bias) if attn_bias is not None else block(tokens)
        attention, self._last_attention = self._last_attention, None
        return self._maybe_norm(out, normalize), attention

    # ----------------------------------------------------------------------------- internals
    def _maybe_norm(self, tokens: torch.Tensor, normalize: bool) -> torch.Tensor:
        return self.vit.norm(tokens) if normalize else tokens

    def _prepend_prompts(
        self, tokens: torch.Tensor, num_prompts: int, prompts: PromptInsertion | None, block: int
    ) -> tuple[torch.Tensor, int]:
        if prompts is None:
            return tokens, num_prompts
        new = prompts.for_block(block)
        if new is None:
            return tokens, num_prompts
        if prompts.replaces_previous(block):
            tokens = tokens[:, num_prompts:]
        new = new.to(tokens.dtype).unsqueeze(0).expand(tokens.shape[0], -1, -1)
        return torch.cat([new, tokens], dim=1), int(new.shape[1])

    @staticmethod
    def _bias_for(attn_bias: AttentionBias | None, block: int, tokens: torch.Tensor) -> torch.Tensor | None:
        if attn_bias is None:
            return None
        if callable(attn_bias):
            bias = attn_bias(block, tokens)
        else:
            bias = attn_bias.get(block)
        return None if bias is None else bias.to(tokens.dtype)

    def _run_block(self, index: int, tokens: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        block = self.vit.blocks[index]
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, tokens, bias, use_reentrant=False)
        return block(tokens, attn_mask=bias) if bias is not None else block(tokens)

    @contextmanager
    def _explicit_attention(
        self, block: nn.Module, num_prompts: int, head_blur: torch.Tensor | None
    ) -> Iterator[None]:
        """Run ``block`` with its attention probabilities kept (and the blurred heads' prompt rows blurred)."""
        num_prefix = self.num_prefix_tokens

        def capture(probs: torch.Tensor) -> torch.Tensor:
            if head_blur is not None and num_prompts:
                probs = blur_prompt_rows(probs, head_blur, num_prompts, num_prompts + num_prefix)
            self._last_attention = probs
            return probs

        with explicit_attention([block], capture):
            yield


@contextmanager
def explicit_attention(
    blocks: Sequence[nn.Module], on_probabilities: Callable[[torch.Tensor], torch.Tensor | None]
) -> Iterator[None]:
    """Route timm ``blocks`` through their explicit (non-fused) attention and hand each softmax
    output (B, H, S, S), in block order, to ``on_probabilities``; what it returns (unless None)
    replaces the probabilities. The fused kernel never materialises them, so trait maps, head
    blurring and attention rollout all need this; each block's fused setting is restored after."""
    handles, fused = [], []
    try:
        for block in blocks:
            fused.append(block.attn.fused_attn)
            block.attn.fused_attn = False
            handles.append(
                block.attn.attn_drop.register_forward_hook(lambda _m, _i, probs: on_probabilities(probs))
            )
        yield
    finally:
        for handle in handles:
            handle.remove()
        for block, was_fused in zip(blocks, fused, strict=False):
            block.attn.fused_attn = was_fused


def blur_prompt_rows(
    probs: torch.Tensor, head_blur: torch.Tensor, num_prompts: int, first_patch: int
) -> torch.Tensor:
    """Make the prompt rows of the blurred heads uniform over the patch columns.

    A blurred head then carries only the mean patch value to the prompt: whatever it located is lost,
    which is how Prompt-CAM measures a head's importance.
    """
    num_keys = probs.shape[-1]
    uniform = torch.zeros(num_keys, dtype=probs.dtype, device=probs.device)
    uniform[first_patch:] = 1.0 / (num_keys - first_patch)
    rows = torch.zeros(probs.shape[-2], dtype=torch.bool, device=probs.device)
    rows[:num_prompts] = True
    select = head_blur[:, :, None, None] & rows[None, None, :, None]
    return torch.where(select, uniform.expand_as(probs), probs)
