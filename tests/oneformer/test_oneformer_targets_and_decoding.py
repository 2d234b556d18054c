"""OneFormer's derived targets (exact, on hand-made panoptic maps) and each task's post-processing on hand-made
logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from oneformer_helpers import oneformer_model

from polymax.config.model import DatasetInfo
from polymax.geometry import Geometry
from polymax.structures import SegmentationOutput, Targets
from polymax.tasks import TASKS
from polymax.tasks.instance import OneFormerInstanceDecoder
from polymax.tasks.panoptic import PanopticDecoder, segments_record
from polymax.tasks.segmentation import class_weighted_probabilities, derived_targets
from polymax.tasks.semantic import decode_oneformer_semantic

V = 255                      # ignore label
D = 1000                     # label divisor
# class 0 wall (stuff), 1 floor (stuff), 2 chair (thing), 3 table (thing)
PANOPTIC = torch.tensor([[0, 0, 2001, 2001],
                         [1000, 1000, 2002, 2002],
                         [1000, 3001, 3001, V * D],
                         [0, 0, 2001, V * D]])
SEMANTIC = torch.div(PANOPTIC, D, rounding_mode="floor")
OPTIONS = dict(thing_classes=(2, 3), ignore_label=V, label_divisor=D)


def _targets() -> Targets:
    return Targets(semantic=SEMANTIC[None].clone(), panoptic=PANOPTIC[None].clone(),
                   crowd=torch.zeros(1, 4, 4, dtype=torch.bool))


def test_panoptic_targets_are_every_segment_unchanged():
    targets = _targets()
    assert derived_targets("panoptic", targets, **OPTIONS) is targets


def test_semantic_targets_merge_the_instances_of_a_class():
    derived = derived_targets("semantic", _targets(), **OPTIONS)
    expected = torch.tensor([[0, 0, 2000, 2000],
                             [1000, 1000, 2000, 2000],
                             [1000, 3000, 3000, V * D],
                             [0, 0, 2000, V * D]])
    assert torch.equal(derived.panoptic[0], expected)
    assert torch.equal(derived.semantic, SEMANTIC[None])
    assert derived.crowd is None


def test_instance_targets_make_stuff_void():
    derived = derived_targets("instance", _targets(), **OPTIONS)
    expected = torch.tensor([[V * D, V * D, 2001, 2001],
                             [V * D, V * D, 2002, 2002],
                             [V * D, 3001, 3001, V * D],
                             [V * D, V * D, 2001, V * D]])
    assert torch.equal(derived.panoptic[0], expected)
    assert torch.equal(derived.semantic[0], torch.where(expected == V * D, V, expected // D))


def test_semantic_loss_targets_have_one_mask_per_class():
    """The semantic criterion's masks: one per class present (instances merged), no thing slot."""
    from polymax.build import build_criterion

    model = oneformer_model()
    criterion = build_criterion(model.config, "semantic").criterion
    info = model.config.dataset
    panoptic = torch.tensor([[2 * info.label_divisor + 1, 2 * info.label_divisor + 2], [0, 0]])
    targets = Targets(semantic=torch.div(panoptic, info.label_divisor, rounding_mode="floor")[None],
                      panoptic=panoptic[None])
    masks = criterion.prepare_targets(derived_targets("semantic", targets, thing_classes=info.thing_classes,
                                                      ignore_label=info.ignore_label,
                                                      label_divisor=info.label_divisor), (2, 2))
    assert sorted(masks.mask_class[0][masks.mask_valid[0]].tolist()) == [0, 2]


INFO = DatasetInfo(name="toy", class_names=("wall", "floor", "chair", "table"), thing_classes=(2, 3),
                   colors=((1, 1, 1),) * 4, ignore_label=V, label_divisor=D)
# The logits live at the network input (33 × 33, a 32k+1 size); the 4 × 4 image samples rows / columns 0, 11, 22, 32.
GEOMETRY = Geometry(original=(4, 4), content=(33, 33), network=(33, 33))


def _hand_made_output() -> SegmentationOutput:
    """Three clusters: cluster 0 = left half (wall, sure), cluster 1 = top right (chair 0.6, table 0.2),
    cluster 2 = bottom right (floor)."""
    rows, cols = torch.meshgrid(torch.arange(33), torch.arange(33), indexing="ij")
    assignment = torch.where(cols < 16, 0, torch.where(rows < 16, 1, 2))
    mask_logits = torch.nn.functional.one_hot(assignment, 3).permute(2, 0, 1).float()[None] * 4.0  # (1, 3, 4, 4)
    probabilities = torch.tensor([[0.90, 0.04, 0.02, 0.02, 0.02],
                                  [0.05, 0.05, 0.60, 0.20, 0.10],
                                  [0.02, 0.90, 0.04, 0.02, 0.02]])
    return SegmentationOutput(mask_logits=mask_logits, pixel_features=torch.zeros(1, 2, 4, 4),
                              class_logits=probabilities.log()[None])


def test_semantic_map_is_the_argmax_of_class_weighted_cluster_probabilities():
    output = _hand_made_output()
    weighted = class_weighted_probabilities(output.mask_logits, output.class_logits)
    masks = output.mask_logits.softmax(dim=1)
    classes = output.class_logits.softmax(dim=-1)[0, :, :4]
    torch.testing.assert_close(weighted[0, :, 0, 0], (masks[0, :, 0, 0, None] * classes).sum(0))
    result = decode_oneformer_semantic(output, GEOMETRY)
    assert result.semantic.tolist() == [[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 1, 1], [0, 0, 1, 1]]


def test_instance_scores_are_class_times_mean_mask_probability():
    from polymax.config.model import ModelConfig

    output = _hand_made_output()
    result = OneFormerInstanceDecoder(ModelConfig(dataset=INFO))(output, GEOMETRY)
    mask_probability = output.mask_logits.softmax(dim=1)[0]                    # (3, 4, 4)
    first = result.segments[0]
    assert (first.category, first.is_thing, first.area) == (2, True, 4)       # the chair cluster scores best
    assert first.score == pytest.approx(0.60 * float(mask_probability[1, :16, 16:].mean()), rel=1e-5)
    assert len(result.segments) == 1            # the wall and floor clusters are stuff: no instance
    assert (result.panoptic[:2, 2:] == first.panoptic_id).all()
    assert (result.semantic[:, :2] == V).all() and (result.semantic[2:, 2:] == V).all()   # stuff pixels: void
    record = segments_record(result, ModelConfig(dataset=INFO), file_name="x.png")
    assert {"id", "label_id", "score"} <= set(record["segments_info"][0])
    assert record["segments_info"][0]["label_id"] == 2


def test_panoptic_decoding_is_kmax_merging():
    from dataclasses import replace

    from polymax.config.model import ModelConfig, PostProcessConfig

    config = ModelConfig(dataset=INFO, postprocess=replace(PostProcessConfig(), thing_area_limit=0,
                                                           stuff_area_limit=0, thing_confidence=0.5,
                                                           stuff_confidence=0.5))
    result = PanopticDecoder(config)(_hand_made_output(), GEOMETRY)
    classes = np.where(result.panoptic // D == V, -1, result.panoptic // D)
    assert classes.tolist() == [[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 1, 1], [0, 0, 1, 1]]
    assert sorted((s.category, s.is_thing) for s in result.segments) == [(0, False), (1, False), (2, True)]


def test_a_oneformer_model_decodes_each_task_its_own_way():
    model = oneformer_model()
    config = model.config
    decoders = {name: TASKS[name].build_decoder(config, config.task(name)) for name in config.task_names}
    assert decoders["semantic"] is decode_oneformer_semantic
    assert isinstance(decoders["instance"], OneFormerInstanceDecoder)
    assert isinstance(decoders["panoptic"], PanopticDecoder)
