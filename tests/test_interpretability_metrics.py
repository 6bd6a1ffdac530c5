"""Interpretability metrics on hand-computed inputs, and the Grad-CAM / rollout baselines."""

import math

import pytest
import torch

from tmtcam.metrics.interpretability import (
    blurred_baseline,
    box_mask,
    curve_auc,
    insertion_deletion_auc,
    keypoint_mask,
    mass_inside_mask,
    object_chance,
    perturbation_curves,
    pointing_game,
    reveal_masks,
    upsample_saliency,
)
from tmtcam.promptcam import LinearProbe, PromptCAM, VPTClassifier
from tmtcam.promptcam.saliency_baselines import (
    attention_rollout_maps,
    grad_cam_maps,
    rollout_from_attention,
    vit_tokens_to_map,
)


def test_pointing_game_hits_misses_tolerance_and_empty_masks():
    saliency = torch.zeros(3, 4, 4)
    saliency[:, 1, 2] = 1.0  # peak at row 1, col 2
    mask = torch.zeros(3, 4, 4)
    mask[0, 1, 2] = 1  # hit
    mask[1, 3, 0] = 1  # miss
    hits = pointing_game(saliency, mask)
    assert hits[0] == 1 and hits[1] == 0 and math.isnan(hits[2])
    near = torch.zeros(1, 4, 4)
    near[0, 2, 3] = 1  # one pixel diagonally off the peak
    assert pointing_game(saliency[:1], near)[0] == 0
    assert pointing_game(saliency[:1], near, tolerance=1)[0] == 1


def test_pointing_game_upsamples_patch_maps_to_the_mask():
    saliency = torch.tensor([[[0.0, 1.0], [0.0, 0.0]]])  # top-right patch
    mask = torch.zeros(1, 8, 8)
    mask[0, :4, 4:] = 1
    assert upsample_saliency(saliency, (8, 8)).shape == (1, 8, 8)
    assert pointing_game(saliency, mask)[0] == 1
    with pytest.raises(ValueError, match="trait mask must be"):
        pointing_game(saliency, torch.zeros(2, 8, 8))


def test_mass_inside_mask_hand_case():
    saliency = torch.tensor([[[1.0, 3.0], [0.0, -2.0]]])  # negative saliency counts as 0
    mask = torch.tensor([[[0, 1], [1, 1]]])
    assert mass_inside_mask(saliency, mask)[0] == pytest.approx(3 / 4)
    assert math.isnan(mass_inside_mask(saliency, torch.zeros(1, 2, 2))[0])


def test_object_chance_is_the_share_of_the_object_inside_the_dilated_mask():
    creature = torch.zeros(3, 5, 5)
    creature[:, 2, :4] = 1  # a 4-pixel creature on row 2
    trait = torch.zeros(3, 5, 5)
    trait[0, 2, 0] = 1  # its left end
    trait[1, 0, 4] = 1  # off the creature, two rows above its right end
    chance = object_chance(creature, trait)
    assert chance[0] == pytest.approx(1 / 4) and chance[1] == 0 and math.isnan(chance[2])  # empty trait
    dilated = object_chance(creature, trait, tolerance=1)
    assert dilated[0] == pytest.approx(2 / 4) and dilated[1] == 0  # (2, 0) grows to (2, 1); (0, 4) to row 1
    assert object_chance(creature, trait, tolerance=2)[1] == pytest.approx(2 / 4)  # now reaches (2, 2..3)
    assert math.isnan(object_chance(torch.zeros(1, 5, 5), trait[:1])[0])  # no creature
    with pytest.raises(ValueError, match="object and trait masks"):
        object_chance(creature[:, :4], trait)


def test_box_mask_takes_the_pixels_whose_centres_are_inside():
    mask = box_mask(torch.tensor([[1.0, 0.0, 3.0, 2.0]]), (3, 4))
    assert mask[0].int().tolist() == [[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    with pytest.raises(ValueError, match="boxes must be"):
        box_mask(torch.zeros(4), (3, 4))


def test_box_mask_includes_pixel_centres_lying_exactly_on_the_right_and_bottom_edges():
    """CUB boxes are closed: a centre on x2 or y2 is inside, as one on x1 or y1 is."""
    # centres are at 0.5, 1.5, 2.5, ...: x in [0.5, 2.5] takes columns 0..2, y in [0.5, 1.5] rows 0..1
    mask = box_mask(torch.tensor([[0.5, 0.5, 2.5, 1.5]]), (3, 4))
    assert mask[0].int().tolist() == [[1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0]]


def test_keypoint_mask_discs_and_invisible_parts():
    keypoints = torch.tensor([[[2.0, 1.0, 1.0], [0.0, 0.0, 0.0]]])  # second part not visible
    mask = keypoint_mask(keypoints, (4, 5), radius=1.0)
    expected = torch.zeros(4, 5, dtype=torch.bool)
    expected[1, 1:4] = True
    expected[0, 2] = expected[2, 2] = True
    assert torch.equal(mask[0], expected)


def test_reveal_masks_counts_follow_the_saliency_order():
    order = torch.tensor([[2, 0, 3, 1]])
    masks = reveal_masks(order, steps=2)
    assert masks.tolist() == [[[0, 0, 0, 0], [1, 0, 1, 0], [1, 1, 1, 1]]]


def test_curve_auc_trapezoid():
    assert curve_auc(torch.tensor([[0.5, 0.5, 0.5]]))[0] == pytest.approx(0.5)
    assert curve_auc(torch.tensor([[0.0, 1.0]]))[0] == pytest.approx(0.5)
    assert curve_auc(torch.tensor([[0.0, 1.0, 1.0]]))[0] == pytest.approx(0.75)


def _left_texture_classifier(images):
    """Class 0's logit is 10 x (mean |channel 0| over the left half) - 5; class 1 is fixed at 0.

    A checkerboard on the left gives +5; its blurred copy or the 0 baseline gives about -5.
    """
    left = images[:, 0, :, : images.shape[-1] // 2].abs().mean((-1, -2))
    return torch.stack([10 * left - 5, torch.zeros_like(left)], dim=-1)


def _left_checker_images(size: int) -> torch.Tensor:
    """Two images whose left half is a +-1 checkerboard (what ``_left_texture_classifier`` sees), right half 0."""
    checker = (torch.arange(size)[:, None] + torch.arange(size)[None, :]) % 2 * 2.0 - 1.0
    images = torch.zeros(2, 3, size, size)
    images[:, :, :, : size // 2] = checker[:, : size // 2]
    return images


def test_deletion_and_insertion_reward_the_faithful_map():
    size = 48
    images = _left_checker_images(size)
    faithful = torch.zeros(2, size, size)
    faithful[:, :, : size // 2] = 1.0
    faithful += torch.linspace(0, 0.01, size * size).view(size, size)  # break ties deterministically
    unfaithful = 1.0 - faithful
    classes = torch.zeros(2, dtype=torch.long)
    good = insertion_deletion_auc(_left_texture_classifier, images, faithful, classes, steps=8)
    bad = insertion_deletion_auc(_left_texture_classifier, images, unfaithful, classes, steps=8)
    assert (good["deletion"] < bad["deletion"] - 0.2).all()
    assert (good["insertion"] > bad["insertion"] + 0.2).all()
    curve = perturbation_curves(_left_texture_classifier, images, faithful, classes, "deletion", steps=8)
    assert curve.shape == (2, 9)
    assert curve[0, 0] == pytest.approx(torch.sigmoid(torch.tensor(5.0)).item(), abs=1e-5)
    assert curve[0, -1] == pytest.approx(torch.sigmoid(torch.tensor(-5.0)).item(), abs=1e-5)
    with pytest.raises(ValueError, match="mode must be"):
        perturbation_curves(_left_texture_classifier, images, faithful, classes, "erase")


def test_perturbation_curves_use_each_images_own_class():
    """A batch explains a different class per image; image 1's curve must follow its class 1, not image 0's."""
    size = 48
    images = _left_checker_images(size)
    saliency = torch.zeros(2, size, size)
    saliency[:, :, : size // 2] = 1.0
    classes = torch.tensor([0, 1])
    curves = perturbation_curves(_left_texture_classifier, images, saliency, classes, "deletion", steps=4)
    # same image and map, two classes of a 2-way softmax: p1 = 1 - p0 at every stage
    assert torch.allclose(curves[1], 1 - curves[0], atol=1e-6)
    assert curves[1, 0] == pytest.approx(torch.sigmoid(torch.tensor(-5.0)).item(), abs=1e-5)  # logits (5, 0)
    assert curves[1, -1] == pytest.approx(torch.sigmoid(torch.tensor(5.0)).item(), abs=1e-5)  # logits (-5, 0)
    aucs = insertion_deletion_auc(_left_texture_classifier, images, saliency, classes, steps=4)
    for mode in ("insertion", "deletion"):
        assert aucs[mode][1].item() == pytest.approx(1 - aucs[mode][0].item(), abs=1e-5)


def test_blurred_baseline_keeps_mean_and_smooths():
    image = torch.zeros(1, 3, 45, 45)
    image[..., 22, 22] = 1.0
    blurred = blurred_baseline(image)
    assert blurred.shape == image.shape
    assert blurred.max() < 0.5 and blurred.sum() == pytest.approx(3.0, rel=1e-3)
    # the impulse response is a Gaussian of sigma = side / 45 = 1 px: the row through the centre
    # falls off as exp(-d^2 / 2) (ratios between neighbours of the peak, normalisation aside)
    row = blurred[0, 0, 22, 20:25]
    assert (row[1] / row[2]).item() == pytest.approx(math.exp(-0.5), rel=1e-3)
    assert (row[0] / row[2]).item() == pytest.approx(math.exp(-2.0), rel=1e-3)


def test_insertion_starts_from_the_blurred_image_and_ends_at_the_image():
    size = 48
    images = _left_checker_images(size)
    saliency = torch.rand(2, size, size, generator=torch.Generator().manual_seed(0))
    classes = torch.zeros(2, dtype=torch.long)
    curve = perturbation_curves(_left_texture_classifier, images, saliency, classes, "insertion", steps=4)
    start = _left_texture_classifier(blurred_baseline(images)).softmax(-1)[:, 0]
    end = _left_texture_classifier(images).softmax(-1)[:, 0]
    assert torch.allclose(curve[:, 0], start, atol=1e-6) and torch.allclose(curve[:, -1], end, atol=1e-6)


def test_vit_tokens_to_map_drops_leading_tokens():
    tokens = torch.arange(2 * 6 * 3, dtype=torch.float32).view(2, 6, 3)  # 2 leading + 2x2 patches, D=3
    fmap = vit_tokens_to_map(2, (2, 2))(tokens)
    assert fmap.shape == (2, 3, 2, 2)
    assert torch.equal(fmap[1, :, 1, 0], tokens[1, 4])
    with pytest.raises(ValueError, match="do not fill the grid"):
        vit_tokens_to_map(1, (2, 2))(tokens)


def test_rollout_of_identity_and_uniform_attention():
    eye = torch.eye(3).expand(1, 2, 3, 3)
    assert torch.allclose(rollout_from_attention([eye, eye]), torch.eye(3))
    uniform = torch.full((1, 1, 2, 2), 0.5)
    # one block: 0.5 I + 0.5 U = [[0.75, 0.25], [0.25, 0.75]]
    assert torch.allclose(rollout_from_attention([uniform])[0], torch.tensor([[0.75, 0.25], [0.25, 0.75]]))
    # order matters: block 1 sends every token to token 0, block 2 every token to token 1 (which, after
    # block 1, holds token 0's input); so every output traces back to input token 0, not to token 1
    to_first, to_second = torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    flow = rollout_from_attention(
        [to_first.expand(1, 1, 2, 2), to_second.expand(1, 1, 2, 2)], residual_weight=0.0
    )
    assert torch.equal(flow[0], to_first)


@pytest.mark.parametrize("kind", [LinearProbe, VPTClassifier, PromptCAM])
def test_grad_cam_maps_for_frozen_classifiers(tiny_vit, kind):
    torch.manual_seed(0)
    model = kind(tiny_vit, 3)
    images = torch.randn(2, 3, 32, 32)
    maps = grad_cam_maps(model, images, torch.tensor([0, 2]))
    assert maps.shape == (2, 32, 32)
    assert maps.min() >= 0 and maps.max() <= 1 + 1e-6
    assert all(p.grad is None for p in model.backbone.parameters())
    other = grad_cam_maps(model, images, torch.tensor([1, 1]))
    assert not torch.allclose(maps, other), "Grad-CAM must depend on the explained class"
    for training in (True, False):  # the classifier is left in the mode it came in
        model.train(training)
        grad_cam_maps(model, images, torch.tensor([0, 2]))
        assert model.training is training


def test_attention_rollout_maps_shape_and_restores_fused_attention(tiny_vit):
    fused = [block.attn.fused_attn for block in tiny_vit.vit.blocks]
    maps = attention_rollout_maps(tiny_vit, torch.randn(2, 3, 32, 32))
    assert maps.shape == (2, 4, 4) and (maps > 0).all()
    assert [block.attn.fused_attn for block in tiny_vit.vit.blocks] == fused
