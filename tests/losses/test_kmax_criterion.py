"""KMaXCriterion: term names, deep supervision, perfect predictions, gradients, batching, sampling, fixed mode."""

from __future__ import annotations

import math

import pytest
import torch

from polymax.losses import KMaXCriterion, KMaXLossWeights, LossTerms
from polymax.structures import SegmentationOutput, Targets, TaskRun

DIVISOR = 100
IGNORE = 255
NUM_CLASSES = 3  # class 0 is a thing, 1 and 2 are stuff
FINAL_NAMES = ["pq_style_loss_class_term", "pq_style_loss_mask_dice_term", "mask_id_cross_entropy_loss",
               "instance_discrimination_loss"]


def _targets(flip: bool = False) -> Targets:
    """9×9 labels (→ 5×5 at stride 2): two thing instances, stuff 1 and 2, a crowd patch and a void patch."""
    classes = torch.full((9, 9), 1)
    instance = torch.zeros(9, 9, dtype=torch.int64)
    classes[0:4, 0:4], instance[0:4, 0:4] = 0, 1
    classes[0:4, 5:9], instance[0:4, 5:9] = 0, 2
    classes[6:9, 0:5] = 2
    classes[5, 6:9] = 0  # crowd (thing class, instance 0)
    classes[8, 8] = IGNORE
    if flip:
        classes, instance = classes.flip(1), instance.flip(1)
    crowd = (classes == 0) & (instance == 0)
    return Targets(semantic=classes[None].clone(), panoptic=(classes * DIVISOR + instance)[None], crowd=crowd[None],
                   semantic_weight=torch.ones(1, 9, 9))


def _criterion(**overrides) -> KMaXCriterion:
    options = dict(num_classes=NUM_CLASSES, thing_classes=[0], ignore_label=IGNORE, label_divisor=DIVISOR,
                   max_thing_id=4, inst_disc_k=1000)
    options.update(overrides)
    return KMaXCriterion(**options)


def _random_run(batch: int = 1, slots: int = 6, aux_sizes=((3, 3), (5, 5)), seed: int = 0) -> TaskRun:
    generator = torch.Generator().manual_seed(seed)

    def output(size):
        return SegmentationOutput(mask_logits=torch.randn(batch, slots, *size, generator=generator) * 2,
                                  pixel_features=torch.nn.functional.normalize(
                                      torch.randn(batch, 8, *size, generator=generator), dim=1),
                                  class_logits=torch.randn(batch, slots, NUM_CLASSES + 1, generator=generator))

    final = output((5, 5))
    semantic = torch.randn(batch, NUM_CLASSES, 5, 5, generator=generator)
    return TaskRun(task="panoptic", final=final, aux=[output(size) for size in aux_sizes], semantic_logits=semantic)


def test_term_names_follow_deeplab2():
    terms = _criterion()(_random_run(), _targets())
    aux_names = [f"aux_{i}{name}" for i in range(2) for name in FINAL_NAMES]
    assert terms.names() == FINAL_NAMES + aux_names + ["semantic_loss"]
    assert all(value.dim() == 0 and torch.isfinite(value) for value in terms.values.values())
    assert terms.total.item() == pytest.approx(sum(terms.to_floats()[name] for name in terms.names()), rel=1e-6)


def test_without_aux_and_semantic_only_the_final_terms():
    run = _random_run(aux_sizes=())
    run.semantic_logits = None
    assert _criterion()(run, _targets()).names() == FINAL_NAMES


def test_auxiliary_outputs_are_resized_with_align_corners_and_share_the_matching():
    run = _random_run(aux_sizes=((3, 3),))
    # An aux output that, once resized from 3×3 to 5×5, equals the final one gets the final output's terms.
    small = run.final.mask_logits[:, :, ::2, ::2]
    run.aux[0].mask_logits = small
    run.aux[0].class_logits = run.final.class_logits
    upsampled = torch.nn.functional.interpolate(small, size=(5, 5), mode="bilinear", align_corners=True)
    run.final.mask_logits = upsampled
    terms = _criterion()(run, _targets())
    for name in FINAL_NAMES[:3]:
        assert terms[f"aux_0{name}"].item() == pytest.approx(terms[name].item(), rel=1e-6)


def _perfect_run() -> TaskRun:
    criterion = _criterion()
    mask_targets = criterion.prepare_targets(_targets(), (5, 5))
    mask_id = mask_targets.pixel_mask_id[0]  # G = 4 thing slots + 2 stuff slots
    valid = mask_targets.mask_valid[0].nonzero().squeeze(1).tolist()  # 0, 1, 4, 5
    slot_of = {gt: slot for slot, gt in enumerate(valid)}  # slots 0..3 own the masks, 4..5 the rest
    logits = torch.full((1, 6, 25), -30.0)
    features = torch.zeros(1, 8, 25)
    for pixel, gt in enumerate(mask_id.tolist()):
        slot = slot_of[gt] if gt >= 0 else 4
        logits[0, slot, pixel] = 30.0
        features[0, slot, pixel] = 1.0
    class_logits = torch.full((1, 6, NUM_CLASSES + 1), -30.0)
    for gt, slot in slot_of.items():
        class_logits[0, slot, mask_targets.mask_class[0, gt]] = 30.0
    class_logits[0, 4:, NUM_CLASSES] = 30.0  # unmatched slots say void
    semantic = torch.full((1, NUM_CLASSES, 25), -30.0)
    labels = _targets().semantic[0, ::2, ::2].reshape(-1)
    for pixel, label in enumerate(labels.tolist()):
        if label != IGNORE:
            semantic[0, label, pixel] = 30.0
    final = SegmentationOutput(mask_logits=logits.reshape(1, 6, 5, 5), pixel_features=features.reshape(1, 8, 5, 5),
                               class_logits=class_logits)
    return TaskRun(task="panoptic", final=final, semantic_logits=semantic.reshape(1, NUM_CLASSES, 5, 5))


def test_perfect_prediction_gives_the_minimal_loss():
    criterion = _criterion()
    perfect = criterion(_perfect_run(), _targets())
    for name in ("pq_style_loss_class_term", "pq_style_loss_mask_dice_term", "mask_id_cross_entropy_loss",
                 "semantic_loss"):
        assert perfect[name].item() < 1e-6, name
    # Instance discrimination with one-hot features per mask: the row of a pixel in a mask of n sampled pixels
    # (out of 25, among them 3 without a mask) costs log(n·e^(1/0.3) + 25 − n) − 1/0.3, the lowest it can be at
    # this temperature; random features must do worse.
    mask_targets = criterion.prepare_targets(_targets(), (5, 5))
    area = mask_targets.mask_area[0]
    ids = mask_targets.pixel_mask_id[0]
    rows = [math.log(area[g] * math.exp(1 / 0.3) + 25 - area[g]) - 1 / 0.3 for g in ids.tolist() if g >= 0]
    assert perfect["instance_discrimination_loss"].item() == pytest.approx(sum(rows) / len(rows), rel=1e-5)
    random_terms = criterion(_random_run(aux_sizes=()), _targets())
    for name in FINAL_NAMES + ["semantic_loss"]:
        assert random_terms[name].item() > perfect[name].item() + 1e-3, name


def test_every_input_gets_a_gradient():
    run = _random_run(aux_sizes=((3, 3), (5, 5)))
    final = run.final
    leaves = [final.mask_logits, final.pixel_features, final.class_logits, run.semantic_logits]
    for aux in run.aux:
        leaves += [aux.mask_logits, aux.pixel_features, aux.class_logits]
    for leaf in leaves:
        leaf.requires_grad_(True)
    _criterion()(run, _targets()).total.backward()
    for index, leaf in enumerate(leaves):
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all(), index
        assert leaf.grad.abs().sum() > 0, index


def test_batch_terms_are_the_mean_of_the_per_image_terms():
    run = _random_run(batch=2, seed=4)
    first, second = _targets(), _targets(flip=True)
    batch = Targets(semantic=torch.cat([first.semantic, second.semantic]),
                    panoptic=torch.cat([first.panoptic, second.panoptic]), crowd=torch.cat([first.crowd, second.crowd]),
                    semantic_weight=torch.ones(2, 9, 9))
    criterion = _criterion()  # inst_disc_k ≥ 25 pixels: no sampling noise
    together = criterion(run, batch).to_floats()

    def one(output: SegmentationOutput, index: int) -> SegmentationOutput:
        return SegmentationOutput(mask_logits=output.mask_logits[index:index + 1],
                                  pixel_features=output.pixel_features[index:index + 1],
                                  class_logits=output.class_logits[index:index + 1])

    def single(index: int) -> TaskRun:
        return TaskRun(task="panoptic", final=one(run.final, index), aux=[one(a, index) for a in run.aux],
                       semantic_logits=run.semantic_logits[index:index + 1])

    alone = [criterion(single(0), first).to_floats(), criterion(single(1), second).to_floats()]
    for name, value in together.items():
        assert value == pytest.approx((alone[0][name] + alone[1][name]) / 2, rel=1e-5), name


def test_nan_terms_become_zero():
    run = _random_run()
    run.aux[0].class_logits[0, 0, 0] = float("nan")
    terms = _criterion()(run, _targets())
    assert terms["aux_0pq_style_loss_class_term"].item() == 0.0
    assert torch.isfinite(terms.total) and terms["pq_style_loss_class_term"].item() > 0


def test_sampling_is_reproducible_with_a_seeded_generator():
    criterion = _criterion(inst_disc_k=6)
    task_run = _random_run(aux_sizes=())
    run = lambda seed: criterion(task_run, _targets(), generator=torch.Generator().manual_seed(seed))
    name = "instance_discrimination_loss"
    assert run(1)[name].item() == run(1)[name].item()
    assert len({round(run(seed)[name].item(), 6) for seed in range(6)}) > 1
    criterion.generator = torch.Generator().manual_seed(1)  # the engine's way: an attribute it seeds
    assert criterion(task_run, _targets())[name].item() == run(1)[name].item()


def test_zero_weights_skip_terms():
    weights = KMaXLossWeights(instance_discrimination=0.0, semantic=0.0)
    names = _criterion(weights=weights)(_random_run(aux_sizes=()), _targets()).names()
    assert names == FINAL_NAMES[:3]


def test_fixed_matching_pairs_query_i_with_class_i():
    criterion = _criterion(matching="fixed")
    targets = Targets(semantic=_targets().semantic)  # no panoptic labels needed
    run = _random_run(slots=NUM_CLASSES, aux_sizes=((3, 3),))
    match = criterion.match(run.final, criterion.prepare_targets(targets, (5, 5)))
    assert match.gt_to_slot.tolist() == [[0, 1, 2]]
    terms = criterion(run, targets)
    assert terms.names()[:4] == FINAL_NAMES and torch.isfinite(terms.total)
    with pytest.raises(ValueError, match="one slot per GT mask"):
        criterion(_random_run(slots=5), targets)


def test_loss_terms_container():
    terms = LossTerms({"a": torch.tensor(1.0), "b": torch.tensor(2.5)})
    assert terms.total.item() == 3.5 and "a" in terms and len(terms) == 2
    merged = terms.merged(LossTerms({"a": torch.tensor(1.0)}), prefix="depth_")
    assert merged.names() == ["a", "b", "depth_a"] and merged.to_floats()["total_loss"] == 4.5
    with pytest.raises(ValueError, match="defined twice"):
        terms.merged(terms)
    assert LossTerms().total.item() == 0.0


@pytest.mark.parametrize("semantic_size", [(5, 5), (3, 3)])
def test_semantic_sub_sampling_of_all_non_void_pixels_equals_the_full_loss(semantic_size):
    run = _random_run(aux_sizes=())
    run.semantic_logits = torch.randn(1, NUM_CLASSES, *semantic_size)
    stride = 8 // (semantic_size[0] - 1)
    non_void = int((_targets().semantic[0, ::stride, ::stride] != IGNORE).sum())
    assert non_void < semantic_size[0] * semantic_size[1]  # the sample has to skip the void pixel
    full = _criterion()(run, _targets())["semantic_loss"].item()
    sampled = _criterion(semantic_sample_k=non_void)(run, _targets(),
                                                     generator=torch.Generator().manual_seed(3))["semantic_loss"]
    assert sampled.item() == pytest.approx(full, rel=1e-6)
    fewer = _criterion(semantic_sample_k=4)(run, _targets(), generator=torch.Generator().manual_seed(3))
    assert fewer["semantic_loss"].item() != pytest.approx(full, rel=1e-6)


def test_fixed_matching_without_a_class_head():
    criterion = _criterion(matching="fixed")
    targets = Targets(semantic=_targets().semantic)
    run = _random_run(slots=NUM_CLASSES, aux_sizes=((3, 3),))
    with_head = criterion(run, targets)
    run.final.class_logits = None
    run.aux[0].class_logits = None
    terms = criterion(run, targets)
    assert "pq_style_loss_class_term" not in terms and "aux_0pq_style_loss_mask_dice_term" in terms
    # Class-probability weights of 1 make the dice term at least as large as with a (random) class head.
    assert terms["pq_style_loss_mask_dice_term"].item() > with_head["pq_style_loss_mask_dice_term"].item()
    with pytest.raises(ValueError, match="needs class_logits"):
        bare = SegmentationOutput(mask_logits=run.final.mask_logits, pixel_features=run.final.pixel_features)
        _criterion()(TaskRun(task="panoptic", final=bare), _targets())


def test_an_all_void_image_gives_finite_terms():
    void = torch.full((1, 9, 9), IGNORE)
    targets = Targets(semantic=void, panoptic=void * DIVISOR, crowd=torch.zeros(1, 9, 9, dtype=torch.bool))
    run = _random_run()
    run.final.mask_logits.requires_grad_(True)
    terms = _criterion(inst_disc_k=8)(run, targets)
    assert all(torch.isfinite(value) for value in terms.values.values())
    assert terms["mask_id_cross_entropy_loss"].item() == 0.0 and terms["semantic_loss"].item() == 0.0
    assert terms["pq_style_loss_class_term"].item() > 0  # every slot learns "void"
    terms.total.backward()
    assert torch.isfinite(run.final.mask_logits.grad).all()
