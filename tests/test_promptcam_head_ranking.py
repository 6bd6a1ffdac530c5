"""Head ranking: greedy logic on hand-made scores, batched == naive, trait maps."""

import pytest
import torch

from tmtcam.metrics.interpretability import insertion_deletion_auc, mass_inside_mask, pointing_game
from tmtcam.promptcam import (
    PromptCAM,
    explain_batch,
    head_ranking,
    prompt_attention_maps,
    rank_heads_batched,
    rank_heads_naive,
    top_head_map,
)
from tmtcam.promptcam.evaluation import (
    accuracy,
    choose_top_k,
    gather_batches,
    localisation_by_head_count,
    object_only_reference,
    pointing_tolerance,
    promptcam_maps,
    rank_every_head,
    score_maps,
)
from tmtcam.promptcam.head_ranking import greedy_head_ranking


def _additive_scorer(weights: torch.Tensor):
    """Class-0 logit = sum of the weights of unblurred heads; class 1 is fixed at ``threshold``."""

    def score(index, masks, threshold=0.0):
        class0 = ((~masks).float() * weights[index, None, :]).sum(-1)
        return torch.stack([class0, torch.full_like(class0, threshold)], dim=-1)

    return score


def test_greedy_removes_least_important_heads_first_hand_case():
    weights = torch.tensor([[3.0, 1.0, 5.0, 2.0]])
    score = _additive_scorer(weights)
    base = torch.tensor([[11.0, 0.0]])
    ranking = greedy_head_ranking(score, base, torch.tensor([0]), num_heads=4, top_k=2)
    assert ranking.order.tolist() == [[2, 0, 3, 1]]
    assert ranking.kept.tolist() == [[True, False, True, False]]
    assert torch.allclose(ranking.score_drop, weights)  # additive: every head's drop is its weight
    assert ranking.top_heads(0) == [2, 0]


def test_greedy_until_misclassified_stops_before_the_prediction_flips():
    weights = torch.tensor([[3.0, 1.0, 5.0, 2.0]])

    def score(index, masks):
        return _additive_scorer(weights)(index, masks, threshold=6.5)

    ranking = greedy_head_ranking(
        score, torch.tensor([[11.0, 6.5]]), torch.tensor([0]), 4, top_k=1, until_misclassified=True
    )
    # removing head 1 (11 -> 10) and head 3 (-> 8) keeps class 0; removing head 0 (-> 5) would flip it
    assert ranking.kept.tolist() == [[True, False, True, False]]
    assert ranking.order[0, :2].tolist() == [2, 0]


def test_until_misclassified_blurs_only_the_explained_class():
    """The rival class keeps its unblurred logit even when the scorer (blurring every class prompt's
    row, as the batched evaluator does) lowers it too: blurring all rows made class 1 sink with
    class 0, and the ranking removed heads down to top_k although class 0 had already lost."""
    weights = torch.tensor([[3.0, 1.0, 5.0, 2.0]])
    rival_weights = torch.tensor([[2.0, 2.0, 2.0, 0.5]])

    def score(index, masks):
        unblurred = (~masks).float()
        return torch.stack(
            [(unblurred * weights[index, None]).sum(-1), (unblurred * rival_weights[index, None]).sum(-1)], -1
        )

    ranking = greedy_head_ranking(
        score, torch.tensor([[11.0, 6.5]]), torch.tensor([0]), 4, top_k=1, until_misclassified=True
    )
    assert ranking.kept.tolist() == [[True, False, True, False]]  # 11 -> 10 -> 8 > 6.5; then 5 < 6.5


def test_until_misclassified_keeps_every_head_of_a_class_that_already_lost():
    """Explaining a class the model does not predict (8 < 9): there is no prediction to keep, so no
    head is removed, although blurring head 1 (weight -2) would lift the class above its rival."""
    weights = torch.tensor([[3.0, -2.0, 5.0, 2.0]])

    def score(index, masks):
        return _additive_scorer(weights)(index, masks, threshold=9.0)

    ranking = greedy_head_ranking(
        score, torch.tensor([[8.0, 9.0]]), torch.tensor([0]), 4, top_k=1, until_misclassified=True
    )
    assert ranking.kept.tolist() == [[True, True, True, True]]


def test_top_k_outside_range_is_rejected():
    with pytest.raises(ValueError, match=r"top_k must be in \[1, 4\]"):
        greedy_head_ranking(
            _additive_scorer(torch.ones(1, 4)), torch.zeros(1, 2), torch.tensor([0]), 4, top_k=0
        )


def _peaky_model(tiny_vit, num_classes=5, variant="deep"):
    """A random Prompt-CAM whose class scores depend on sharp last-block attention (heads matter)."""
    torch.manual_seed(1)
    model = PromptCAM(tiny_vit, num_classes=num_classes, variant=variant).eval()
    with torch.no_grad():
        tiny_vit.vit.patch_embed.proj.weight.mul_(10)
        tiny_vit.vit.blocks[-1].attn.qkv.weight.mul_(30)
        tiny_vit.vit.blocks[-1].attn.proj.weight.mul_(10)
        model.prompts.tokens.normal_(0, 0.02)
        model.head.weight.normal_(0, 1)
    return model


def _images(count=8):
    return torch.randn(count, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_explain_batch_ranks_until_misclassified_when_asked(tiny_vit):
    """The trait maps' explanation passes the stopping rule on: its ranking is the batched one, and
    some image keeps more heads than top_k (with ``top_k`` alone every image keeps exactly one)."""
    model = _peaky_model(tiny_vit)
    images = _images()
    explained = explain_batch(model, images, top_k=1, until_misclassified=True)
    ranked = rank_heads_batched(model, images, None, top_k=1, until_misclassified=True)
    assert torch.equal(explained.ranking.kept, ranked.kept)
    assert explained.ranking.kept.sum(1).max() > 1
    assert explain_batch(model, images, top_k=1).ranking.kept.sum(1).tolist() == [1] * len(images)


@pytest.mark.parametrize("until_misclassified", [False, True])
@pytest.mark.parametrize("fast", [True, False])
def test_batched_ranking_equals_one_forward_per_mask(tiny_vit, monkeypatch, until_misclassified, fast):
    model = _peaky_model(tiny_vit)
    images = _images()
    if not fast:  # exercise the whole-last-block fallback used for non-standard timm blocks
        monkeypatch.setattr(head_ranking, "_prompt_row_scorer", lambda *args: None)
    labels = None if until_misclassified else torch.tensor([0, 3, 4, 1, 2, 0, 1, 2])
    batched = rank_heads_batched(model, images, labels, top_k=1, until_misclassified=until_misclassified)
    naive = rank_heads_naive(model, images, labels, top_k=1, until_misclassified=until_misclassified)
    assert batched.score_drop.abs().max() > 1e-1, "fixture too flat: heads should matter"
    if until_misclassified:
        assert set(batched.kept.sum(1).tolist()) > {1}, "fixture should stop early for some image"
    assert torch.equal(batched.order, naive.order)
    assert torch.equal(batched.kept, naive.kept)
    assert torch.allclose(batched.score_drop, naive.score_drop, atol=1e-4)
    assert torch.allclose(batched.base_logits, naive.base_logits, atol=1e-5)


def test_batched_ranking_runs_under_bf16_autocast_and_scores_in_float32(tiny_vit):
    # precision: bf16-mixed runs the test step's trait maps under autocast; the bf16 logits once
    # failed to be written into the float32 score-drop table (found on a GPU).
    model = _peaky_model(tiny_vit)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ranking = rank_heads_batched(model, _images(4), top_k=1)
    assert ranking.score_drop.dtype == torch.float32 and torch.isfinite(ranking.score_drop).all()
    assert ranking.kept.sum(1).tolist() == [1, 1, 1, 1]


@pytest.mark.parametrize("variant", ["shallow", "intermediate(3)"])
def test_batched_ranking_equals_naive_for_other_prompt_variants(tiny_vit, variant):
    model = _peaky_model(tiny_vit, variant=variant)
    images = _images(4)
    batched = rank_heads_batched(model, images, top_k=2)
    naive = rank_heads_naive(model, images, top_k=2)
    assert torch.equal(batched.order, naive.order)
    assert torch.allclose(batched.score_drop, naive.score_drop, atol=1e-4)


def test_until_misclassified_stops_exactly_before_the_prediction_flips(tiny_vit):
    """With the kept heads only, the predicted class's logit still beats every other class's
    (unblurred) logit; blurring the weakest kept head too would let one of them win."""
    model = _peaky_model(tiny_vit)
    images = _images()
    ranking = rank_heads_batched(model, images, top_k=1, until_misclassified=True)
    predicted = ranking.base_logits.argmax(-1)
    rival = ranking.base_logits.scatter(1, predicted[:, None], float("-inf")).amax(1)
    rows = torch.arange(len(images))
    with torch.no_grad():
        assert (model(images, head_blur=~ranking.kept)[rows, predicted] > rival).all()
        stopped_early = (ranking.kept.sum(1) > 1).nonzero().flatten().tolist()
        assert stopped_early, "fixture must keep more than one head for some image"
        for image in stopped_early:
            weakest = ranking.order[image, int(ranking.kept[image].sum()) - 1]
            blur = ~ranking.kept[image].clone()
            blur[weakest] = True
            logits = model(images[image : image + 1], head_blur=blur[None])
            assert logits[0, predicted[image]] < rival[image]


def test_class_index_validation(tiny_vit):
    model = _peaky_model(tiny_vit)
    with pytest.raises(ValueError, match=r"class_index must be in \[0, 5\)"):
        rank_heads_batched(model, torch.randn(1, 3, 32, 32), class_index=9)
    with pytest.raises(ValueError, match=r"class_index must be in \[0, 5\), got \[5\]"):
        rank_heads_batched(model, torch.randn(1, 3, 32, 32), class_index=5)  # one past the last class


def test_prompt_attention_maps_hand_case():
    attention = torch.zeros(1, 2, 7, 7)  # 2 prompts, CLS, 4 patches on a 2x2 grid
    attention[0, 0, 1, 3:] = torch.tensor([0.1, 0.2, 0.3, 0.4])
    attention[0, 1, 1, 3:] = torch.tensor([0.4, 0.3, 0.2, 0.1])
    maps = prompt_attention_maps(attention, torch.tensor([1]), first_patch=3, grid=(2, 2))
    assert maps.shape == (1, 2, 2, 2)
    assert torch.allclose(maps[0, 0], torch.tensor([[0.1, 0.2], [0.3, 0.4]]))
    combined = top_head_map(maps, torch.tensor([[1, 0]]), k=1)
    assert torch.allclose(combined[0], torch.tensor([[0.4, 0.3], [0.2, 0.1]]))
    both = top_head_map(maps, torch.tensor([[1, 0]]), k=2)  # the heads' mean, not their sum
    assert torch.allclose(both[0], torch.full((2, 2), 0.25))
    with pytest.raises(ValueError, match="grid"):
        prompt_attention_maps(attention, torch.tensor([1]), first_patch=3, grid=(3, 3))


def test_explain_batch_maps_are_the_explained_class_rows(tiny_vit):
    model = _peaky_model(tiny_vit)
    images = torch.randn(2, 3, 32, 32)
    explanation = explain_batch(model, images, class_index=torch.tensor([2, 4]), top_k=2)
    assert explanation.maps.shape == (2, 4, 4, 4)
    run = model.run(images, return_attention=True)
    assert torch.allclose(explanation.maps[1, 3].flatten(), run.last_attention[1, 3, 4, 6:])
    assert (explanation.maps.sum((-1, -2)) <= 1 + 1e-5).all()
    assert explanation.saliency(2).shape == (2, 4, 4)
    assert explanation.class_index.tolist() == [2, 4]


def test_localisation_by_head_count_covers_every_k_from_one_ranking(tiny_vit):
    model = _peaky_model(tiny_vit)
    images, labels = _images(4), torch.tensor([0, 1, 2, 3])
    mask = torch.zeros(4, 32, 32)
    mask[:, :8, :8] = 1
    ranked = rank_every_head(model, images, labels, batch_size=2)
    whole = explain_batch(model, images, labels, top_k=1)
    for k in (1, 3):  # two batches of two give the maps one batch of four gives
        assert torch.allclose(promptcam_maps(ranked, k), whole.saliency(k), atol=1e-6)
    result = localisation_by_head_count(ranked, mask)
    assert list(result) == ["1", "2", "3", "4"]
    all_heads = whole.maps.mean(1)
    assert result["4"]["mass_in_trait"] == pytest.approx(
        float(mass_inside_mask(all_heads, mask).mean()), abs=1e-4
    )
    for k in ("1", "4"):  # the pointing game of the top-k heads' mean map, with the 32-px tolerance
        maps = promptcam_maps(ranked, int(k))
        expected = pointing_game(maps, mask, pointing_tolerance(32)).nanmean()
        assert result[k]["pointing_game"] == pytest.approx(float(expected), abs=1e-4)


def test_choose_top_k_takes_the_best_pointing_game_and_fewer_heads_on_ties():
    scores = {
        "1": {"pointing_game": 0.40, "mass_in_trait": 0.09},
        "2": {"pointing_game": 0.55, "mass_in_trait": 0.07},
        "3": {"pointing_game": 0.55, "mass_in_trait": 0.06},
        "4": {"pointing_game": 0.50, "mass_in_trait": 0.05},
    }
    assert choose_top_k(scores) == 2
    with pytest.raises(ValueError, match="empty"):
        choose_top_k({})


class _DeviceCheckingClassifier(torch.nn.Module):
    """Logits = the images' first pixel per class; refuses batches not on its own device."""

    def __init__(self, device: str) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1, device=device))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        assert images.device == self.anchor.device, (images.device, self.anchor.device)
        return images[:, :, 0, 0]


def test_accuracy_counts_correct_predictions_over_batches_on_the_models_device():
    # Two batches, 5 images, 3 classes; predictions (argmax of the first pixel) 2, 0, 1 | 1, 2.
    first = torch.zeros(3, 3, 2, 2)
    first[0, 2], first[1, 0], first[2, 1] = 1.0, 1.0, 1.0
    second = torch.zeros(2, 3, 2, 2)
    second[0, 1], second[1, 2] = 1.0, 1.0
    batches = [
        {"image": first, "label": torch.tensor([2, 0, 0])},
        {"image": second, "label": torch.tensor([1, 1])},
    ]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    assert accuracy(_DeviceCheckingClassifier(device), batches, device) == pytest.approx(3 / 5)
    noisy = torch.nn.Sequential(_DeviceCheckingClassifier(device), torch.nn.Dropout(0.9)).train()
    assert accuracy(noisy, batches, device) == pytest.approx(3 / 5)  # measured in eval mode: no dropout
    assert not noisy.training


def test_gathered_batches_stop_at_max_images():
    batches = [{"image": torch.full((4, 1), float(i)), "label": torch.arange(4)} for i in range(3)]
    gathered = gather_batches(batches, max_images=6, keys=("image", "label"))
    assert gathered["image"].flatten().tolist() == [0.0] * 4 + [1.0] * 2 and len(gathered["label"]) == 6
    with pytest.raises(KeyError, match=r"lack \['trait_mask'\]"):
        gather_batches(batches, max_images=6, keys=("image", "trait_mask"))


class CornerBrightness(torch.nn.Module):
    """Class 0's logit is 8 x the top-left 8x8 corner's mean: only that corner matters."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        corner = images[:, :, :8, :8].mean((1, 2, 3))
        return torch.stack([8 * corner, torch.zeros_like(corner)], dim=1)


def test_score_maps_scores_localisation_and_faithfulness_on_the_given_model():
    """A map peaking on the corner that drives the model: pointing hits the trait there, the
    object's peak is counted against the object mask, and deletion falls faster than insertion."""
    images = torch.ones(2, 3, 32, 32)
    corner = torch.zeros(2, 4, 4)
    corner[:, 0, 0] = 1.0
    trait, creature = torch.zeros(2, 32, 32), torch.zeros(2, 32, 32)
    trait[:, :8, :8] = 1
    creature[0, :16, :16] = 1  # image 0: the peak is on the creature; image 1: the creature is elsewhere
    creature[1, 16:, 16:] = 1
    labels = torch.zeros(2, dtype=torch.long)
    scores = score_maps(corner, CornerBrightness(), images, labels, trait, creature, steps=4)
    auc = insertion_deletion_auc(CornerBrightness(), images, corner, labels, steps=4)
    assert scores.pointing_game == 1.0 and scores.peak_on_object == 0.5
    assert scores.insertion == pytest.approx(float(auc["insertion"].mean()))
    assert scores.deletion == pytest.approx(float(auc["deletion"].mean()))
    assert scores.insertion > scores.deletion
    reference = object_only_reference(creature, trait)  # image 0: 64 of 256 creature pixels, dilated by 2 px
    assert reference["mass_in_trait"] == pytest.approx((64 / 256 + 0.0) / 2, abs=1e-4)
    assert reference["pointing_game"] == pytest.approx((100 / 256 + 0.0) / 2, abs=1e-4)
