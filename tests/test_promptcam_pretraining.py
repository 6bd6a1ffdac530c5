"""Demo stage 1: part/attribute pre-training targets and module."""

import pytest
import torch

from data_modules.species import ATTRIBUTE_NAMES, PART_NAMES
from tmtcam.promptcam.pretraining import (
    AttributePretraining,
    attribute_slots,
    patch_coverage,
    patch_part_labels,
    slot_values,
)

TINY = dict(model_name="vit_tiny_patch16_224", img_size=16, patch_size=8, embed_dim=32, depth=2, num_heads=2)
NAMES = ["head.colour=red", "head.colour=blue", "wing.shape=short", "wing.shape=long", "wing.shape=broad"]


def test_attribute_slots_group_values_and_name_their_part():
    assert attribute_slots(NAMES, ["head", "wing"]) == ([0, 0, 1, 1, 1], [0, 1])
    slots, parts = attribute_slots(ATTRIBUTE_NAMES, PART_NAMES)
    assert len(parts) == 14 and max(slots) == 13  # legs have no pattern slot
    with pytest.raises(ValueError, match="tail.colour=red"):
        attribute_slots(["tail.colour=red"], ["head"])
    with pytest.raises(ValueError, match="not contiguous"):
        attribute_slots(["head.colour=red", "wing.shape=long", "head.colour=blue"], ["head", "wing"])


def test_patch_part_labels_take_the_majority_cover_hand_case():
    # 16x16 image, 2x2 patches of 8 px
    masks = torch.zeros(1, 2, 16, 16)
    masks[0, 0, :8, :8] = 1  # part 0 fills the top-left patch
    masks[0, 1, :2, 8:] = 1  # part 1 covers a quarter of the top-right patch: background wins
    masks[0, 1, 8:, :6] = 1  # and 3/4 of the bottom-left patch
    coverage = patch_coverage(masks, 8)
    assert coverage[0, 1].tolist() == [0.0, 0.25, 0.75, 0.0]
    assert patch_part_labels(coverage).tolist() == [[1, 0, 2, 0]]


def test_slot_values_from_multi_hot():
    slots = torch.tensor([0, 0, 1, 1, 1])
    attributes = torch.tensor([[0.0, 1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0, 0.0]])
    assert slot_values(attributes, slots, 2).tolist() == [[1, 2], [0, 1]]


def test_pretraining_step_trains_every_term_and_needs_part_masks():
    torch.manual_seed(0)
    module = AttributePretraining(TINY, NAMES, ["head", "wing"])
    masks = torch.zeros(2, 2, 16, 16)
    masks[:, 0, :8] = 1
    masks[:, 1, 8:] = 1
    batch = {
        "image": torch.randn(2, 3, 16, 16),
        "attributes": torch.tensor([[1.0, 0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0, 1.0]]),
        "part_masks": masks,
    }
    terms, outputs = module.losses(batch)
    assert set(terms) == {"part", "global", "dense"}
    assert outputs["parts"].tolist() == [1, 1, 2, 2] * 2
    sum(terms.values()).backward()
    for layer in (
        module.backbone.vit.blocks[0].attn.qkv,
        module.part_head,
        module.dense_head,
        module.global_head,
    ):
        assert layer.weight.grad.abs().sum() > 0
    with pytest.raises(KeyError, match="part_masks"):
        module.losses({"image": batch["image"], "attributes": batch["attributes"]})
    with torch.no_grad():  # a global head that always answers "red" and "short": right in 1 of 4 slots
        module.global_head.weight.zero_()
        module.global_head.bias.copy_(torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0]))
        assert module.losses(batch)[1]["attribute_acc"].item() == pytest.approx(0.25)
