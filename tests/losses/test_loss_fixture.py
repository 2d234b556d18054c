"""Parity of the kMaX losses with the official deeplab2 loss fixture (fixtures README §7, tolerances §8)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from deeplab2_fixture import golden_outputs, load_manifest, nhwc_to_nchw

from polymax.losses import KMaXCriterion, thing_instance_ids
from polymax.structures import SegmentationOutput, Targets, TaskRun

FIXTURE = "coco_r50"
COCO_DIVISOR = 256  # the fixture's panoptic encoding: COCO id · 256 + instance
NUM_CLASSES = 133  # COCO ids 1..133 → our classes 0..132; COCO id 0 (void) → ignore 255
THING_CLASSES = tuple(range(80))  # COCO thing ids 1..80
IGNORE = 255
REL_TOLERANCE = 1e-5


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))


def _prediction(golden: dict[str, np.ndarray]) -> TaskRun:
    # The semantic head's channels are COCO ids (0 = void first); ours are classes 0..132, so move the void
    # channel last: it stays in the softmax and is never a target.
    semantic = nhwc_to_nchw(golden["pred/semantic_logits"])
    semantic = np.concatenate([semantic[:, 1:], semantic[:, :1]], axis=1)
    aux = [SegmentationOutput(mask_logits=_tensor(nhwc_to_nchw(golden[f"aux/{i}/pixel_space_mask_logits"])),
                              pixel_features=_tensor(nhwc_to_nchw(golden[f"aux/{i}/pixel_space_normalized_feature"])),
                              class_logits=_tensor(golden[f"aux/{i}/transformer_class_logits"])) for i in range(6)]
    # Class channel c ↔ COCO id c + 1 ↔ our class c, void last: no remapping needed.
    final = SegmentationOutput(mask_logits=_tensor(nhwc_to_nchw(golden["pred/pixel_space_mask_logits"])),
                               pixel_features=_tensor(nhwc_to_nchw(golden["pred/pixel_space_normalized_feature"])),
                               class_logits=_tensor(golden["pred/transformer_class_logits"]))
    return TaskRun(task="panoptic", final=final, aux=aux, semantic_logits=_tensor(semantic))


def _targets(golden: dict[str, np.ndarray]) -> Targets:
    panoptic = golden["loss/gt/panoptic_label"].astype(np.int64)
    coco_id, instance = panoptic // COCO_DIVISOR, panoptic % COCO_DIVISOR
    semantic = np.where(coco_id == 0, IGNORE, coco_id - 1)
    # README §7: the crowd region is a thing class with instance 0 (it keeps its class in semantic_gt).
    crowd = (coco_id >= 1) & (coco_id <= 80) & (instance == 0)
    return Targets(semantic=_tensor(semantic), panoptic=_tensor(semantic * COCO_DIVISOR + instance),
                   crowd=_tensor(crowd), semantic_weight=_tensor(golden["loss/gt/semantic_loss_weight"]))


def _criterion(sample_k: int) -> KMaXCriterion:
    return KMaXCriterion(num_classes=NUM_CLASSES, thing_classes=THING_CLASSES, ignore_label=IGNORE,
                         label_divisor=COCO_DIVISOR, max_thing_id=128, inst_disc_k=sample_k,
                         inst_disc_sample_temperature=1.5)


@pytest.fixture(scope="module")
def golden(parity) -> dict[str, np.ndarray]:
    return golden_outputs(parity, FIXTURE)


def test_ground_truth_conversion_matches_deeplab2(golden):
    targets = _targets(golden)
    expected_semantic = golden["loss/gt/semantic_gt"][0]
    assert np.array_equal(targets.semantic[0].numpy(), np.where(expected_semantic == 0, IGNORE, expected_semantic - 1))
    thing_id, thing_class = thing_instance_ids(targets.panoptic[0], targets.crowd[0], thing_classes=THING_CLASSES,
                                               ignore_label=IGNORE, label_divisor=COCO_DIVISOR, max_thing_id=128)
    assert np.array_equal(thing_id.numpy(), golden["loss/gt/thing_id_mask_gt"][0])
    expected_class = golden["loss/gt/thing_id_class_gt"][0].astype(np.int64)
    assert np.array_equal(thing_class.numpy(), np.where(expected_class > 0, expected_class - 1, -1))


def test_matching_matches_deeplab2(golden):
    criterion = _criterion(sample_k=1014)
    run = _prediction(golden)
    mask_targets = criterion.prepare_targets(_targets(golden), (33, 33))
    assert np.array_equal(mask_targets.mask_valid[0].numpy().astype(np.int32), golden["loss/matching/gt_mask_valid"][0])
    match = criterion.match(run.final, mask_targets)
    assert np.array_equal(match.gt_to_slot.numpy(), golden["loss/matching/gt_mask_to_slot"])
    expected_cost = golden["loss/matching/hungarian_weights"]
    valid = golden["loss/matching/gt_mask_valid"][0].astype(bool)
    np.testing.assert_allclose(match.cost[0, valid].numpy(), expected_cost[0, valid], rtol=0, atol=1e-6)
    assert np.array_equal(match.cost[0, ~valid].numpy(), expected_cost[0, ~valid])  # the +999 rows


def _relative_errors(golden: dict[str, np.ndarray], group: str, sample_k: int, seed: int) -> dict[str, float]:
    terms = _criterion(sample_k)(_prediction(golden), _targets(golden), generator=torch.Generator().manual_seed(seed))
    measured = terms.to_floats()
    errors = {}
    for key in golden:
        if key.startswith(f"loss/{group}/"):
            name = key.split("/")[-1]
            reference = float(golden[key][0])
            errors[name] = abs(measured[name] - reference) / abs(reference)
    return errors


@pytest.mark.parametrize("seed", [0, 1])
def test_loss_terms_match_deeplab2(golden, parity, seed):
    # K = 1014 = every non-void pixel, so the sample order (the seed) must not matter.
    manifest_terms = load_manifest(parity, FIXTURE)["loss"]["terms"]
    errors = _relative_errors(golden, "terms", sample_k=1014, seed=seed)
    assert set(errors) == set(manifest_terms) and len(errors) == 30  # 29 terms + total_loss
    worst = {name: error for name, error in errors.items() if error > REL_TOLERANCE}
    assert not worst, f"relative errors above {REL_TOLERANCE}: {worst}"


def test_instance_discrimination_with_all_pixels_matches_deeplab2(golden):
    # K = 1089 = all 33×33 pixels: void pixels become extra negatives.
    errors = _relative_errors(golden, "terms_k_all_pixels", sample_k=1089, seed=0)
    assert len(errors) == 8
    worst = {name: error for name, error in errors.items() if error > REL_TOLERANCE}
    assert not worst, f"relative errors above {REL_TOLERANCE}: {worst}"
