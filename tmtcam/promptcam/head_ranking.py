"""Which attention heads of the last block carry a class's traits: greedy head ranking.

A head is *blurred* by making its prompt rows uniform over the patches (it then only passes the mean
patch value to the prompts). Greedy ranking, as in Prompt-CAM: with the heads blurred so far, try
blurring each remaining head, permanently blur the one whose loss costs the class logit least, and
repeat until ``top_k`` heads remain (or, with ``until_misclassified``, until the next removal would
change the prediction). For ViT-B with 12 heads and top-4 that is 68 masked evaluations per image.
Only the explained class's heads are blurred: the other classes keep their unblurred logits, so
"misclassified" means its blurred logit no longer beats the best of theirs (the reference also
blurs only that class's attention row).

Two evaluators with one signature:

* :func:`rank_heads_naive`: one full forward pass per mask and image, the reference's way.
* :func:`rank_heads_batched`: one full pass caches the last block's input; then every mask of a
  greedy step is evaluated at once. Blurring only changes the prompt rows of the attention, and the
  prompt outputs depend on nothing else, so for timm's standard ``Block``/``Attention`` the per-head
  attention outputs of the prompts are computed once (sharp, and blurred = mean value over patches)
  and each mask only mixes them and runs ``proj`` + MLP on the C prompt tokens. Other block types
  fall back to running the whole cached last block on the batch of masks.

Score drop: for a removed head, the class logit lost when it was blurred (on top of the heads
blurred before it); for a kept head, the logit lost by blurring it on top of all removed heads.
``order`` lists kept heads by decreasing drop, then removed heads from last removed to first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from timm.models.vision_transformer import Attention, Block

from tmtcam.promptcam.model import PromptCAM, PromptCAMOutput

# (image indices (A,), masks (A, R, H) bool) -> logits (A, R, C)
MaskScorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_TOKENS_PER_CHUNK = 1 << 16


@dataclass
class HeadRanking:
    class_index: torch.Tensor  # (B,) class whose score is explained
    base_logits: torch.Tensor  # (B, C) no head blurred
    order: torch.Tensor  # (B, H) head indices, most important first
    score_drop: torch.Tensor  # (B, H) per head (indexed by head), see module docstring
    kept: torch.Tensor  # (B, H) bool: heads left when the greedy removal stopped

    def top_heads(self, image: int) -> list[int]:
        """The kept heads of ``image``, most important first."""
        return self.order[image, : int(self.kept[image].sum())].tolist()


def greedy_head_ranking(
    score_masks: MaskScorer,
    base_logits: torch.Tensor,
    class_index: torch.Tensor,
    num_heads: int,
    top_k: int = 1,
    until_misclassified: bool = False,
) -> HeadRanking:
    """The greedy loop, independent of how a set of masks is scored.

    Scores are handled in float32: under bf16 autocast (``precision: bf16-mixed``) the logits come
    out in bf16, and the drop table and its arithmetic are float32 (mixing the two failed on a GPU).
    """
    if not 1 <= top_k <= num_heads:
        raise ValueError(f"top_k must be in [1, {num_heads}] (the number of heads), got {top_k}")
    base_logits = base_logits.float()
    batch = base_logits.shape[0]
    rows = torch.arange(batch, device=base_logits.device)
    blurred = torch.zeros(batch, num_heads, dtype=torch.bool, device=base_logits.device)
    drop = torch.full((batch, num_heads), float("nan"), device=base_logits.device)
    removal_step = torch.full((batch, num_heads), -1, dtype=torch.long, device=base_logits.device)
    current = base_logits[rows, class_index].clone()
    others = base_logits.scatter(1, class_index[:, None], float("-inf")).amax(1)  # best rival, unblurred
    active = torch.ones(batch, dtype=torch.bool, device=base_logits.device)
    if until_misclassified:
        active &= base_logits.argmax(-1) == class_index
    for step in range(num_heads - top_k):
        index = active.nonzero().squeeze(1)
        if index.numel() == 0:
            break
        candidates, scores = _score_candidates(score_masks, blurred, index, class_index)
        candidate_drop = current[index, None] - scores
        pick = candidate_drop.argmin(-1)
        local = torch.arange(index.numel(), device=index.device)
        head = candidates[local, pick]
        if until_misclassified:
            still_right = scores[local, pick] > others[index]
            active[index[~still_right]] = False
            index, local, head, pick = (
                index[still_right],
                local[still_right],
                head[still_right],
                pick[still_right],
            )
        blurred[index, head] = True
        drop[index, head] = candidate_drop[local, pick]
        removal_step[index, head] = step
        current[index] = scores[local, pick]
    remaining = (~blurred).sum(1)
    for count in remaining.unique().tolist():  # images stopped early keep more heads
        index = (remaining == count).nonzero().squeeze(1)
        candidates, scores = _score_candidates(score_masks, blurred, index, class_index)
        drop[index] = drop[index].scatter(1, candidates, current[index, None] - scores)
    return HeadRanking(
        class_index=class_index,
        base_logits=base_logits,
        order=_importance_order(drop, removal_step, ~blurred),
        score_drop=drop,
        kept=~blurred,
    )


def _score_candidates(
    score_masks: MaskScorer, blurred: torch.Tensor, index: torch.Tensor, class_index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score blurring each not-yet-blurred head of images ``index`` on top of their blurred set:
    (candidate heads (A, R), the explained class's logit with each blurred (A, R))."""
    remaining = ~blurred[index]
    count = int(remaining[0].sum())
    candidates = remaining.nonzero()[:, 1].view(index.numel(), count)  # (A, R), same R for every image
    masks = blurred[index, None, :].repeat(1, count, 1)
    masks.scatter_(2, candidates[..., None], True)
    logits = score_masks(index, masks).float()
    scores = logits.gather(2, class_index[index, None, None].expand(-1, count, 1)).squeeze(2)
    return candidates, scores


def _importance_order(drop: torch.Tensor, removal_step: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Kept heads by decreasing drop, then removed heads, latest removed first (two stable sorts)."""
    secondary = torch.where(kept, drop.nan_to_num(0.0), removal_step.to(drop.dtype))
    order = secondary.argsort(dim=1, descending=True, stable=True)
    primary = kept.gather(1, order).to(torch.int8)
    return order.gather(1, primary.argsort(dim=1, descending=True, stable=True))


def _resolve_classes(base_logits: torch.Tensor, class_index: torch.Tensor | int | None) -> torch.Tensor:
    batch, num_classes = base_logits.shape
    if class_index is None:
        return base_logits.argmax(-1)
    classes = torch.as_tensor(class_index, device=base_logits.device).long().expand(batch).clone()
    if classes.min() < 0 or classes.max() >= num_classes:
        raise ValueError(f"class_index must be in [0, {num_classes}), got {classes.tolist()}")
    return classes


@torch.no_grad()
def rank_heads_naive(
    model: PromptCAM,
    images: torch.Tensor,
    class_index: torch.Tensor | int | None = None,
    top_k: int = 1,
    until_misclassified: bool = False,
) -> HeadRanking:
    """Reference ranking: one full forward pass per (image, mask)."""
    model.eval()
    base_logits = model(images)

    def score(index: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return torch.stack(
            [
                torch.cat([model(images[i : i + 1], head_blur=mask[None]) for mask in image_masks])
                for i, image_masks in zip(index.tolist(), masks, strict=True)
            ]
        )

    classes = _resolve_classes(base_logits, class_index)
    return greedy_head_ranking(
        score, base_logits, classes, model.backbone.num_heads, top_k, until_misclassified
    )


@torch.no_grad()
def rank_heads_batched(
    model: PromptCAM,
    images: torch.Tensor,
    class_index: torch.Tensor | int | None = None,
    top_k: int = 1,
    until_misclassified: bool = False,
) -> HeadRanking:
    """Same result as :func:`rank_heads_naive`, from one full pass plus one batched step per greedy round."""
    model.eval()
    run = model.run(images, return_attention=True, return_last_block_input=True)
    return rank_heads_from_run(model, run, class_index, top_k, until_misclassified)


def rank_heads_from_run(
    model: PromptCAM,
    run: PromptCAMOutput,
    class_index: torch.Tensor | int | None = None,
    top_k: int = 1,
    until_misclassified: bool = False,
) -> HeadRanking:
    """:func:`rank_heads_batched` on a forward pass already made with the attention and the last
    block's input, for callers that also need that pass (trait maps read its attention)."""
    if run.last_attention is None or run.last_block_input is None:
        raise ValueError("the run needs return_attention=True and return_last_block_input=True")
    classes = _resolve_classes(run.logits, class_index)
    score = _prompt_row_scorer(model, run.last_block_input, run.last_attention)
    if score is None:
        score = _last_block_scorer(model, run.last_block_input)
    return greedy_head_ranking(
        score, run.logits, classes, model.backbone.num_heads, top_k, until_misclassified
    )


def _last_block_scorer(model: PromptCAM, block_input: torch.Tensor) -> MaskScorer:
    """Generic path: the whole cached last block, one batch element per mask."""
    num_prompts = model.num_classes
    chunk = max(1, _TOKENS_PER_CHUNK // block_input.shape[1])

    def score(index: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        count, rounds = masks.shape[:2]
        tokens = block_input[index].repeat_interleave(rounds, dim=0)
        flat_masks = masks.reshape(count * rounds, -1)
        logits = []
        for start in range(0, tokens.shape[0], chunk):
            out, _ = model.backbone.forward_last_block(
                tokens[start : start + chunk], num_prompts, head_blur=flat_masks[start : start + chunk]
            )
            logits.append(model.score_prompts(out[:, :num_prompts]))
        return torch.cat(logits).view(count, rounds, -1)

    return score


def _prompt_row_scorer(
    model: PromptCAM, block_input: torch.Tensor, attention: torch.Tensor
) -> MaskScorer | None:
    """Fast path for timm's standard block: only the C prompt tokens are recomputed per mask."""
    block = model.backbone.vit.blocks[-1]
    attn = block.attn
    standard = type(block).forward is Block.forward and type(attn).forward is Attention.forward
    if not standard or getattr(attn, "gate", None) is not None:
        return None
    num_prompts, first_patch = model.num_classes, model.num_leading_tokens
    batch, seq, _ = block_input.shape
    qkv = attn.qkv(block.norm1(block_input)).reshape(batch, seq, 3, attn.num_heads, attn.head_dim)
    values = qkv[:, :, 2].transpose(1, 2)  # (B, H, S, dh)
    sharp = attention[:, :, :num_prompts] @ values  # (B, H, C, dh)
    blurred = values[:, :, first_patch:].mean(dim=2, keepdim=True)  # (B, H, 1, dh)
    prompt_input = block_input[:, :num_prompts]
    chunk = max(1, _TOKENS_PER_CHUNK // num_prompts)

    def finish(heads_out: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        # heads_out (N, H, C, dh) -> the block's prompt outputs, as timm's Block/Attention would compute
        mixed = heads_out.transpose(1, 2).flatten(2)
        x = residual + block.ls1(attn.proj(attn.norm(mixed)))
        x = x + block.ls2(block.mlp(block.norm2(x)))
        return model.score_prompts(model.backbone.final_norm(x))

    def score(index: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        count, rounds, heads = masks.shape
        flat_masks = masks.reshape(count * rounds, heads, 1, 1)
        source = index.repeat_interleave(rounds)
        logits = []
        for start in range(0, source.numel(), chunk):
            rows = source[start : start + chunk]
            mixed = torch.where(flat_masks[start : start + chunk], blurred[rows], sharp[rows])
            logits.append(finish(mixed, prompt_input[rows]))
        return torch.cat(logits).view(count, rounds, -1)

    return score
