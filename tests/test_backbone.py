"""The shared ViT core: equality with timm, attention bias, prompts, last-block attention."""

import dataclasses
import inspect
import re

import pytest
import torch

from tmtcam.backbones import BackboneConfig, PromptInsertion, ViTBackbone, WeightsError, blur_prompt_rows


def test_plain_forward_equals_timm(tiny_vit):
    images = torch.randn(2, 3, 32, 32)
    out = tiny_vit(images)
    reference = tiny_vit.vit.forward_features(images)
    ours = torch.cat([out.prefix_tokens, out.patch_tokens], dim=1)
    assert out.patch_tokens.shape == (2, 16, 64)
    assert out.grid == (4, 4)
    assert torch.allclose(ours, reference, atol=1e-6)


def test_dynamic_image_size_and_divisibility(tiny_vit):
    out = tiny_vit(torch.randn(1, 3, 48, 24))
    assert out.grid == (6, 3) and out.patch_tokens.shape == (1, 18, 64)
    with pytest.raises(ValueError, match="not divisible by the backbone patch size 8"):
        tiny_vit(torch.randn(1, 3, 30, 32))
    with pytest.raises(ValueError, match="not divisible by the backbone patch size 8"):
        tiny_vit(torch.randn(1, 3, 32, 30))  # the width too: its last 6 columns would be dropped


def test_minus_inf_bias_on_a_key_gives_it_zero_attention(tiny_vit):
    images = torch.randn(2, 3, 32, 32)
    seq = 1 + 16
    bias = torch.zeros(1, 1, 1, seq)
    bias[..., 5] = float("-inf")
    last = tiny_vit.depth - 1
    out = tiny_vit(images, attn_bias={last: bias}, return_last_attention=True)
    attention = out.last_attention
    assert attention.shape == (2, 4, seq, seq)
    assert torch.all(attention[..., 5] == 0)
    assert torch.allclose(attention.sum(-1), torch.ones(2, 4, seq), atol=1e-5)


def test_finite_bias_matches_hand_computed_softmax(tiny_vit):
    """A +log(2) bias on one key doubles its unnormalised weight: check against the unbiased probs."""
    images = torch.randn(1, 3, 32, 32)
    last = tiny_vit.depth - 1
    plain = tiny_vit(images, return_last_attention=True).last_attention
    bias = torch.zeros(1, 1, 1, 17)
    bias[..., 3] = torch.log(torch.tensor(2.0))
    biased = tiny_vit(images, attn_bias={last: bias}, return_last_attention=True).last_attention
    expected = plain.clone()
    expected[..., 3] *= 2
    expected = expected / expected.sum(-1, keepdim=True)
    assert torch.allclose(biased, expected, atol=1e-5)


def test_callable_bias_sees_block_tokens(tiny_vit):
    seen = []

    def bias_fn(block, tokens):
        seen.append((block, tuple(tokens.shape)))
        return None

    tiny_vit(torch.randn(2, 3, 32, 32), attn_bias=bias_fn)
    assert seen == [(i, (2, 17, 64)) for i in range(4)]


def test_last_attention_rows_sum_to_one_and_other_blocks_stay_fused(tiny_vit):
    """Only the last block leaves the fused kernel (to expose its probabilities), only for the call."""
    before = [block.attn.fused_attn for block in tiny_vit.vit.blocks]
    during = []
    for block in tiny_vit.vit.blocks:
        block.attn.register_forward_pre_hook(lambda attn, args: during.append(attn.fused_attn))
    out = tiny_vit(torch.randn(3, 3, 32, 32), return_last_attention=True)
    assert torch.allclose(out.last_attention.sum(-1), torch.ones_like(out.last_attention[..., 0]), atol=1e-5)
    assert during == before[:-1] + [False]
    assert [block.attn.fused_attn for block in tiny_vit.vit.blocks] == before


@pytest.mark.parametrize(
    "mode,start,sets", [("deep", 0, 4), ("deep", 2, 2), ("shallow", 0, 1), ("shallow", 1, 1)]
)
def test_prompts_change_outputs_and_only_prompts_get_gradients(tiny_vit, mode, start, sets):
    for parameter in tiny_vit.parameters():
        parameter.requires_grad_(False)
    prompts = torch.nn.Parameter(torch.randn(sets, 5, 64) * 0.1)
    images = torch.randn(2, 3, 32, 32)
    plain = tiny_vit(images)
    out = tiny_vit(
        images, prompts=PromptInsertion(prompts, mode=mode, start_block=start), return_last_attention=True
    )
    assert out.prompt_tokens.shape == (2, 5, 64)
    assert out.last_attention.shape == (2, 4, 5 + 17, 5 + 17)
    assert not torch.allclose(out.patch_tokens, plain.patch_tokens, atol=1e-4)
    # a fixed random read-out: a plain sum of LayerNorm'd tokens is identically zero
    (out.prompt_tokens * torch.randn(64)).sum().backward()
    assert prompts.grad is not None and prompts.grad[-1].abs().sum() > 0
    assert all(p.grad is None for p in tiny_vit.parameters())


def test_deep_prompts_are_replaced_per_block_and_shallow_carried(tiny_vit):
    """Deep: the last block's prompt set alone sets the last-block prompt *inputs*; shallow carries them."""
    images = torch.randn(1, 3, 32, 32)
    deep = torch.randn(4, 3, 64)
    out = tiny_vit(images, prompts=PromptInsertion(deep, "deep"), return_last_block_input=True)
    assert torch.equal(out.last_block_input[0, :3], deep[-1])
    shallow = torch.randn(1, 3, 64)
    out = tiny_vit(images, prompts=PromptInsertion(shallow, "shallow"), return_last_block_input=True)
    assert not torch.allclose(out.last_block_input[0, :3], shallow[0])
    # intermediate(i): blocks before i see no prompts, so patch tokens entering block i equal the plain run's
    plain = tiny_vit(images, return_layers=(1,))
    late = tiny_vit(
        images, prompts=PromptInsertion(torch.randn(2, 3, 64), "deep", start_block=2), return_layers=(1,)
    )
    assert torch.allclose(plain.features[1], late.features[1], atol=1e-6)


def test_bad_prompt_schedules_are_rejected(tiny_vit):
    images = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="expected 4 sets"):
        tiny_vit(images, prompts=PromptInsertion(torch.randn(3, 2, 64), "deep"))
    with pytest.raises(ValueError, match="embed_dim 64"):
        tiny_vit(images, prompts=PromptInsertion(torch.randn(4, 2, 32), "deep"))
    with pytest.raises(ValueError, match=r"start_block=4 outside \[0, 4\)"):  # would insert them nowhere
        tiny_vit(images, prompts=PromptInsertion(torch.randn(1, 2, 64), "shallow", start_block=4))


def test_head_blur_makes_prompt_rows_uniform_over_patches(tiny_vit):
    images = torch.randn(2, 3, 32, 32)
    prompts = PromptInsertion(torch.randn(4, 3, 64), "deep")
    blur = torch.tensor([[True, False, False, False], [False, False, False, True]])
    out = tiny_vit(images, prompts=prompts, last_block_head_blur=blur, return_last_attention=True)
    attention = out.last_attention
    uniform = torch.cat([torch.zeros(4), torch.full((16,), 1 / 16)])
    assert torch.allclose(attention[0, 0, :3], uniform.expand(3, -1))
    assert torch.allclose(attention[1, 3, :3], uniform.expand(3, -1))
    assert not torch.allclose(attention[0, 1, :3], uniform.expand(3, -1))
    # rows of non-prompt queries are untouched
    plain = tiny_vit(images, prompts=prompts, return_last_attention=True).last_attention
    assert torch.allclose(attention[:, :, 3:], plain[:, :, 3:])


def test_forward_last_block_on_cached_input_matches_full_pass(tiny_vit):
    images = torch.randn(2, 3, 32, 32)
    prompts = PromptInsertion(torch.randn(4, 3, 64), "deep")
    full = tiny_vit(images, prompts=prompts, return_last_block_input=True, return_last_attention=True)
    tokens, attention = tiny_vit.forward_last_block(full.last_block_input, num_prompts=3)
    assert torch.allclose(tokens[:, :3], full.prompt_tokens, atol=1e-5)
    assert torch.allclose(attention, full.last_attention, atol=1e-6)


def test_blur_prompt_rows_hand_case():
    probs = torch.full((1, 2, 3, 5), 0.2)
    out = blur_prompt_rows(probs, torch.tensor([[True, False]]), num_prompts=1, first_patch=2)
    assert torch.allclose(out[0, 0, 0], torch.tensor([0, 0, 1 / 3, 1 / 3, 1 / 3]))
    assert torch.allclose(out[0, 0, 1:], probs[0, 0, 1:]) and torch.allclose(out[0, 1], probs[0, 1])


def test_corrupt_weights_file_names_the_path(tmp_path):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=re.escape(str(corrupt))):
        ViTBackbone(
            "vit_tiny_patch16_224",
            img_size=32,
            patch_size=8,
            embed_dim=64,
            depth=2,
            num_heads=2,
            weights=str(corrupt),
        )


def test_unknown_model_name_is_rejected():
    with pytest.raises(ValueError, match="vit_nonexistent_patch16"):
        ViTBackbone("vit_nonexistent_patch16")


def test_gradient_checkpointing_recomputes_blocks_with_identical_gradients(monkeypatch):
    """Same weights with and without checkpointing: equal loss and equal gradients for every
    parameter, and each block is checkpointed in training (a TMA-style bias passes through too)."""
    import tmtcam.backbones.vit as vit_module

    torch.manual_seed(0)
    config = dict(
        model_name="vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=64, depth=3, num_heads=4
    )
    plain, checkpointed = ViTBackbone(**config), ViTBackbone(**config, grad_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    calls = []
    real_checkpoint = vit_module.checkpoint
    monkeypatch.setattr(vit_module, "checkpoint", lambda *a, **k: calls.append(1) or real_checkpoint(*a, **k))
    images = torch.randn(2, 3, 32, 32)
    bias = {1: torch.randn(2, 4, 1, 17)}  # on block 1's keys (CLS + 16 patches)
    losses = []
    for model in (plain, checkpointed):
        model.train()
        loss = model(images, attn_bias=bias).patch_tokens.square().mean()
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    assert len(calls) == 3  # every block: the last one runs through _run_block too
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters(), strict=True):
        if a.grad is not None or b.grad is not None:
            assert torch.allclose(a.grad, b.grad, atol=1e-6), name
    checkpointed.eval()
    calls.clear()
    with torch.no_grad():
        checkpointed(images)
    assert not calls  # evaluation does not checkpoint


@pytest.mark.slow
def test_compiled_blocks_match_eager_and_keep_state_dict_keys():
    torch.manual_seed(0)
    compiled = ViTBackbone(
        "vit_tiny_patch16_224",
        img_size=32,
        patch_size=8,
        embed_dim=64,
        depth=2,
        num_heads=4,
        compile_blocks=True,
    )
    eager = ViTBackbone("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4)
    eager.load_state_dict(compiled.state_dict())  # same keys, no "_orig_mod." prefixes
    blocks = list(compiled.vit.blocks)  # every block compiled but the last (which Prompt-CAM hooks)
    assert [block._compiled_call_impl is not None for block in blocks] == [True] * (len(blocks) - 1) + [False]
    images = torch.randn(2, 3, 32, 32)
    assert torch.allclose(compiled(images).patch_tokens, eager(images).patch_tokens, atol=1e-5)


def test_backbone_config_mirrors_the_backbone_arguments_and_defaults():
    """The CLI parses ``backbone:`` as BackboneConfig; a key or default that drifted from ViTBackbone
    would be refused, or silently change, on the command line only."""
    parameters = inspect.signature(ViTBackbone.__init__).parameters
    expected = {name: p.default for name, p in parameters.items() if name != "self"}
    assert {f.name: f.default for f in dataclasses.fields(BackboneConfig)} == expected
