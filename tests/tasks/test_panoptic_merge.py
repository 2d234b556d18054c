"""Post-processing: deeplab2's maps on the fixtures' logits, and the merging rules on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from deeplab2_fixture import golden_outputs, load_manifest, nhwc_to_nchw

from polymax.data import dataset_info
from polymax.geometry import Geometry, padded_size, resize_to_input
from polymax.presets import PRESETS
from polymax.tasks.panoptic_merge import PanopticPostProcessor
from polymax.tasks.segmentation import build_postprocessor

BIG = 20.0


def _processor(**kwargs) -> PanopticPostProcessor:
    options = dict(thing_classes=(1,), num_classes=2, ignore_label=255, label_divisor=1000, pixel_confidence=0.4,
                   thing_confidence=0.7, stuff_confidence=0.5, overlap=0.8, thing_area_limit=0, stuff_area_limit=0)
    options.update(kwargs)
    return PanopticPostProcessor(**options)


def _class_logits(classes: list[int], num_classes: int = 2, confident: bool = True) -> torch.Tensor:
    """(1, K, C + 1) logits: slot k predicts classes[k] (or void when -1) with confidence ≈ 1 or ≈ 0.45."""
    logits = torch.zeros(1, len(classes), num_classes + 1)
    for k, c in enumerate(classes):
        logits[0, k, c] = BIG if confident else 0.5
    return logits


@pytest.mark.parametrize("fixture", ["coco_r50", "coco_convnext_tiny"])
def test_maps_match_deeplab2(parity, fixture):
    golden, manifest = golden_outputs(parity, fixture), load_manifest(parity, fixture)
    info = dataset_info("coco_panoptic")
    mask_logits = torch.from_numpy(nhwc_to_nchw(golden["pred/pixel_space_mask_logits"]))
    class_logits = torch.from_numpy(golden["pred/transformer_class_logits"])   # COCO: same channel order as ours
    for variant, s in manifest["post_processing"].items():
        processor = PanopticPostProcessor(
            thing_classes=info.thing_classes, num_classes=info.num_classes, ignore_label=255, label_divisor=256,
            pixel_confidence=s["pixel_confidence_threshold"], thing_confidence=s["thing_class_confidence_threshold"],
            stuff_confidence=s["stuff_class_confidence_threshold"], overlap=s["overlapping_threshold"],
            reorder_class_weight=s["reorder_class_weight"], reorder_mask_weight=s["reorder_mask_weight"],
            thing_area_limit=s["thing_area_limit"], stuff_area_limit=s["stuff_area_limit"])
        result = processor(mask_logits, class_logits, (129, 129))[0]
        # Ours → deeplab2's COCO encoding: data-set id = class + 1, void = 0, same label divisor and instances.
        panoptic = result.panoptic.numpy()
        theirs = np.where(panoptic == 255 * 256, 0, (panoptic // 256 + 1) * 256 + panoptic % 256)
        differing = {
            "panoptic": int((theirs != golden[f"post/{variant}/panoptic_pred"][0]).sum()),
            "semantic": int((result.semantic.numpy() + 1 != golden[f"post/{variant}/semantic_pred"][0]).sum()),
            "instance": int((np.maximum(result.mask_id.numpy(), 1)
                             != golden[f"post/{variant}/instance_pred"][0]).sum()),
        }
        assert max(differing.values()) <= 5, f"{fixture}/{variant}: differing pixels {differing}"
        assert len({int(v) for v in np.unique(theirs)} - {0}) == len(result.segments)


# Hand-made logits are given at the input size itself (33 = 32k+1 needs no padding or resizing).
N = 33


def test_thresholds_overlap_and_encoding():
    # Slot 0: stuff class 0 on the left; slot 1: thing class 1 on the right; slot 2: a thing that mostly
    # overlaps slot 1 (dropped by the overlap test); slot 3: unconfident class (dropped).
    logits = torch.full((1, 4, N, N), -BIG)
    logits[0, 0, :, :16] = BIG
    logits[0, 1, :, 16:] = BIG
    logits[0, 2, :, 16:] = BIG - 1e-3          # p ≈ 0.5 > 0.4 on the right, but those pixels are taken
    logits[0, 3, 0, 0] = 2 * BIG
    class_logits = torch.cat([_class_logits([0, 1, 1]), _class_logits([1], confident=False)], dim=1)
    result = _processor()(logits, class_logits, (N, N))[0]
    panoptic, instance = result.panoptic, result.instance[0, 20]
    assert instance > 0 and torch.all(panoptic[:, 16:] == 1 * 1000 + instance)     # one thing instance
    assert torch.all(result.instance[:, :16] == 0)
    assert panoptic[3, 1] == 0 and panoptic[0, 0] == 255 * 1000                      # stuff id 0; unconfident → void
    assert {s.slot for s in result.segments} == {0, 1}
    # The semantic map is threshold-free: the unconfident slot still names its pixel.
    assert result.semantic[0, 0] == 1 and result.semantic[3, 1] == 0


def test_area_limits_remove_small_segments_and_merge_stuff():
    logits = torch.full((1, 3, N, N), -BIG)
    logits[0, 0, :, :10] = BIG     # stuff class 0, 330 px
    logits[0, 1, :, 10:20] = BIG   # stuff class 0 again, 330 px: one segment of 660 px with slot 0
    logits[0, 2, :, 20:] = BIG     # thing class 1, 429 px
    class_logits = _class_logits([0, 0, 1])
    kept = _processor(stuff_area_limit=660, thing_area_limit=429)(logits, class_logits, (N, N))[0]
    assert torch.all(kept.panoptic[:, :20] == 0) and len(kept.segments) == 2
    removed = _processor(stuff_area_limit=661, thing_area_limit=430)(logits, class_logits, (N, N))[0]
    assert torch.all(removed.panoptic == 255 * 1000) and not removed.segments
    assert torch.all(removed.mask_id > 0)        # the pasted mask ids stay, as deeplab2's instance map


def test_pixelwise_mode():
    logits = torch.full((1, 3, N, N), -BIG)
    logits[0, 0, :, :10] = BIG
    logits[0, 1, :, 10:] = BIG
    logits[0, 2, :, 30:] = 2 * BIG                 # unconfident class: its pixels become void
    class_logits = torch.cat([_class_logits([0, 1]), _class_logits([1], confident=False)], dim=1)
    result = _processor(mode="pixelwise")(logits, class_logits, (N, N))[0]
    assert torch.all(result.panoptic[:, :10] == 0)
    assert torch.all(result.panoptic[:, 10:30] == 1000 + 2)          # instance = slot + 1
    assert torch.all(result.panoptic[:, 30:] == 255 * 1000)


def test_outputs_are_cropped_to_the_input_size():
    assert padded_size((129, 130)) == (129, 161) and padded_size((1, 33)) == (1, 33)
    logits = torch.randn(2, 4, 33, 41)               # stride 4 on a 129×161 padded input
    maps = resize_to_input(logits, (100, 150))
    assert maps.shape == (2, 4, 100, 150)
    # align_corners: the model-resolution grid points land exactly on every 4th input pixel.
    torch.testing.assert_close(maps[..., ::4, ::4], logits[..., :25, :38])
    results = _processor(thing_classes=(1, 2), num_classes=3)(logits, torch.randn(2, 4, 4), (100, 150))
    assert len(results) == 2 and results[0].panoptic.shape == results[0].semantic.shape == (100, 150)


def test_every_preset_has_a_post_processor():
    for name in ("kmax_r50_coco", "kmax_r50_cityscapes", "kmax_r50_ade20k", "polymax_tiny_synth_panoptic"):
        processor = build_postprocessor(PRESETS[name]())
        assert processor.num_classes == PRESETS[name]().dataset.num_classes
    cityscapes = build_postprocessor(PRESETS["kmax_r50_cityscapes"]())
    assert cityscapes.reorder_mask_weight == 0.0 and cityscapes.overlap.item() == pytest.approx(0.9)


def test_output_maps_are_brought_to_the_input_size():
    from polymax.structures import SegmentationOutput
    from polymax.tasks.base import output_slice, probabilities_at_input

    output = SegmentationOutput(mask_logits=torch.randn(2, 4, 33, 41), pixel_features=torch.randn(2, 8, 33, 41),
                                class_logits=torch.randn(2, 4, 3))
    geometry = Geometry(original=(100, 150), content=(100, 150), network=(129, 161))
    one = output_slice(output, 1)
    assert one.mask_logits.shape == (1, 4, 33, 41) and torch.equal(one.class_logits, output.class_logits[1:])
    probabilities = probabilities_at_input(one, geometry)
    assert probabilities.shape == (4, 100, 150)
    torch.testing.assert_close(probabilities.sum(dim=0), torch.ones(100, 150))
    # The softmax runs on the network input (padding cropped), as the panoptic merge does.
    expected = resize_to_input(output.mask_logits[1:], (100, 150)).softmax(dim=1)[0]
    torch.testing.assert_close(probabilities, expected)


@pytest.mark.parametrize("fixture", ["coco_r50"])
def test_banded_softmax_changes_memory_only(parity, fixture):
    """Mask-wise merging thresholds the softmax a band of rows at a time; any band height gives the same maps."""
    golden = golden_outputs(parity, fixture)
    info = dataset_info("coco_panoptic")
    mask_logits = torch.from_numpy(nhwc_to_nchw(golden["pred/pixel_space_mask_logits"]))
    class_logits = torch.from_numpy(golden["pred/transformer_class_logits"])
    results = []
    for band_rows in (7, 129):
        processor = PanopticPostProcessor(thing_classes=info.thing_classes, num_classes=info.num_classes,
                                          ignore_label=255, label_divisor=256, thing_confidence=0.0,
                                          stuff_confidence=0.0)
        processor.band_rows = band_rows
        results.append(processor(mask_logits, class_logits, (129, 129))[0])
    banded, whole = results
    assert len(whole.segments) > 3
    for name in ("panoptic", "semantic", "mask_id"):
        assert torch.equal(getattr(banded, name), getattr(whole, name)), name
