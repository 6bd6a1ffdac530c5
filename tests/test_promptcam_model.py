"""Prompt-CAM model: prompt variants, frozen backbone, gradients, logits, baselines."""

import math

import pytest
import torch

from tmtcam.backbones import ViTBackbone
from tmtcam.promptcam import (
    LinearProbe,
    PromptCAM,
    VPTClassifier,
    explain_batch,
    parse_prompt_variant,
    prompt_init_bound,
)


def _block_output(model, images, block_index):
    """Output of backbone block ``block_index`` (hooked), for comparing variants."""
    seen = []
    handle = model.backbone.vit.blocks[block_index].register_forward_hook(
        lambda _m, _i, out: seen.append(out)
    )
    try:
        model(images)
    finally:
        handle.remove()
    return seen[0]


def test_parse_variants_and_errors():
    assert parse_prompt_variant("deep", 12).num_sets(12) == 12
    assert parse_prompt_variant("shallow", 12).num_sets(12) == 1
    late = parse_prompt_variant("intermediate(9)", 12)
    assert (late.mode, late.start_block, late.num_sets(12)) == ("deep", 9, 3)
    with pytest.raises(ValueError, match="prompt_variant='middle'"):
        parse_prompt_variant("middle", 12)
    with pytest.raises(ValueError, match=r"must be in \[0, 12\)"):
        parse_prompt_variant("intermediate(12)", 12)


def test_prompt_init_is_uniform_within_the_vpt_bound(tiny_vit):
    bound = prompt_init_bound(patch_size=8, dim=64)
    assert bound == pytest.approx(math.sqrt(6 / (3 * 64 + 64)))
    model = PromptCAM(tiny_vit, num_classes=50)
    tokens = model.prompts.tokens
    assert tokens.shape == (4, 50, 64)
    assert tokens.abs().max() <= bound and tokens.abs().max() > 0.9 * bound
    assert tokens.min() < -0.9 * bound and tokens.max() > 0.9 * bound  # both signs, as VPT draws them


@pytest.mark.parametrize("variant,sets", [("deep", 4), ("shallow", 1), ("intermediate(2)", 2)])
def test_logits_shape_and_only_prompts_and_head_get_gradients(tiny_vit, variant, sets):
    model = PromptCAM(tiny_vit, num_classes=5, variant=variant).train()
    assert model.prompts.tokens.shape == (sets, 5, 64)
    logits = model(torch.randn(3, 3, 32, 32))
    assert logits.shape == (3, 5)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"prompts.tokens", "head.weight", "head.bias"}
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.prompts.tokens.grad.abs().sum() > 0 and model.head.weight.grad.abs().sum() > 0


def test_train_mode_keeps_backbone_in_eval_but_prompt_dropout_active(tiny_vit):
    model = PromptCAM(tiny_vit, num_classes=4, prompt_dropout=0.5).train()
    assert model.training and model.prompts.training
    assert not model.backbone.training and not any(m.training for m in model.backbone.modules())
    images = torch.randn(1, 3, 32, 32)
    torch.manual_seed(0)
    first = model(images)
    torch.manual_seed(1)
    assert not torch.allclose(first, model(images)), "prompt dropout should make train-mode passes differ"
    model.eval()
    assert torch.equal(model(images), model(images))


def test_deep_prompts_enter_every_block_and_the_last_set_is_read_out(tiny_vit):
    model = PromptCAM(tiny_vit, num_classes=3, variant="deep").eval()
    images = torch.randn(2, 3, 32, 32)
    run = model.run(images, return_last_block_input=True)
    assert torch.equal(run.last_block_input[0, :3], model.prompts.tokens[-1])
    before = model(images)
    with torch.no_grad():
        model.prompts.tokens[0] += 1.0  # the first block's set reaches the output through the patches
    assert not torch.equal(before, model(images))


def test_shallow_prompts_are_inserted_once_and_carried(tiny_vit):
    model = PromptCAM(tiny_vit, num_classes=3, variant="shallow").eval()
    images = torch.randn(2, 3, 32, 32)
    run = model.run(images, return_last_block_input=True, return_attention=True)
    assert run.last_attention.shape == (2, 4, 3 + 1 + 16, 3 + 1 + 16)
    assert not torch.allclose(run.last_block_input[0, :3], model.prompts.tokens[0], atol=1e-3)
    # block 0 already sees the prompts: its patch outputs differ from the plain ViT's
    plain = tiny_vit.vit.blocks[0](tiny_vit.embed(images)[0])
    assert not torch.allclose(_block_output(model, images, 0)[:, 3:], plain, atol=1e-5)


def test_intermediate_prompts_leave_earlier_blocks_untouched(tiny_vit):
    images = torch.randn(2, 3, 32, 32)
    late = PromptCAM(tiny_vit, num_classes=3, variant="intermediate(2)").eval()
    deep = PromptCAM(tiny_vit, num_classes=3, variant="deep").eval()
    tokens, _ = tiny_vit.embed(images)
    plain = tiny_vit.vit.blocks[1](tiny_vit.vit.blocks[0](tokens))
    assert torch.allclose(_block_output(late, images, 1), plain, atol=1e-6)  # no prompts in blocks 0-1
    assert not torch.allclose(_block_output(deep, images, 1)[:, 3:], plain, atol=1e-5)
    assert _block_output(late, images, 2).shape[1] == 3 + 17  # prompts from block 2 on


def test_class_score_uses_the_shared_head_on_each_prompt(tiny_vit):
    model = PromptCAM(tiny_vit, num_classes=3).eval()
    images = torch.randn(2, 3, 32, 32)
    out = tiny_vit(images, prompts=model.prompts.insertion())
    expected = out.prompt_tokens @ model.head.weight[0] + model.head.bias
    assert torch.allclose(model(images), expected, atol=1e-6)


def test_baselines_shapes_and_trainable_parameters(tiny_vit):
    images = torch.randn(2, 3, 32, 32)
    probe = LinearProbe(tiny_vit, num_classes=7)
    assert probe(images).shape == (2, 7) and probe.num_leading_tokens == 1
    assert {n for n, p in probe.named_parameters() if p.requires_grad} == {"head.weight", "head.bias"}
    vpt = VPTClassifier(tiny_vit, num_classes=7, num_prompts=5)
    assert vpt(images).shape == (2, 7) and vpt.num_leading_tokens == 6
    assert {n for n, p in vpt.named_parameters() if p.requires_grad} == {
        "prompts.tokens",
        "head.weight",
        "head.bias",
    }


def test_too_few_classes_is_rejected(tiny_vit):
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        PromptCAM(tiny_vit, num_classes=1)


def test_a_backbone_with_register_tokens_puts_its_prefix_before_the_patches():
    """DINOv2 with 4 registers: the sequence is [3 prompts, CLS, 4 registers, 16 patches]; trait maps
    read the 16 patch columns, past all 8 leading tokens (CLS-only test backbones cannot tell)."""
    backbone = ViTBackbone(
        "vit_small_patch14_reg4_dinov2", img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2
    ).eval()
    model = PromptCAM(backbone, num_classes=3)
    assert backbone.num_prefix_tokens == 5 and model.num_leading_tokens == 8
    explained = explain_batch(model, torch.randn(2, 3, 32, 32))
    assert explained.maps.shape == (2, 2, 4, 4)
