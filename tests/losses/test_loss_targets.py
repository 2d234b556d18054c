"""Ground-truth preprocessing for the mask losses: strided downsampling, thing numbering, GT mask layout."""

from __future__ import annotations

import pytest
import torch

from polymax.losses.targets import prepare_mask_targets, strided_downsample, thing_instance_ids
from polymax.structures import Targets

DIVISOR = 100
IGNORE = 255


def test_strided_downsample_takes_every_stride_th_pixel():
    label = torch.arange(129 * 129).reshape(1, 129, 129)
    small = strided_downsample(label, (33, 33))
    assert small.shape == (1, 33, 33)
    assert torch.equal(small, label[:, ::4, ::4])
    assert strided_downsample(label, (129, 129)) is label
    with pytest.raises(ValueError, match="32k\\+1"):
        strided_downsample(torch.zeros(1, 130, 130), (33, 33))


def test_thing_ids_follow_first_appearance_and_skip_crowd_stuff_and_void():
    panoptic = torch.tensor([
        [1 * DIVISOR, 0 * DIVISOR + 7, 0 * DIVISOR + 7],
        [0 * DIVISOR + 3, 0 * DIVISOR, IGNORE * DIVISOR],  # instance 3; a crowd pixel (instance 0); void
        [0 * DIVISOR + 9, 0 * DIVISOR + 3, 1 * DIVISOR],
    ])
    crowd = torch.zeros(3, 3, dtype=torch.bool)
    crowd[2, 0] = True  # instance 9 is flagged crowd explicitly
    thing_id, thing_class = thing_instance_ids(panoptic, crowd, thing_classes=[0], ignore_label=IGNORE,
                                               label_divisor=DIVISOR, max_thing_id=4)
    assert thing_id.tolist() == [[-1, 0, 0], [1, -1, -1], [-1, 1, -1]]
    assert thing_class.tolist() == [0, 0, -1, -1]
    # Only max_thing_id instances get an id; the rest are dropped.
    thing_id, thing_class = thing_instance_ids(panoptic, None, thing_classes=[0], ignore_label=IGNORE,
                                               label_divisor=DIVISOR, max_thing_id=2)
    assert thing_id.tolist() == [[-1, 0, 0], [1, -1, -1], [-1, 1, -1]]
    assert thing_class.tolist() == [0, 0]


def _scene() -> Targets:
    """5×5 labels, classes 0 (thing), 1 and 2 (stuff); downsampled by 2 to 3×3 at the even pixels."""
    classes = torch.full((5, 5), 1)
    instance = torch.zeros(5, 5, dtype=torch.int64)
    classes[0, 2:] = 0
    instance[0, 2:] = 4  # thing A, first seen at (0, 2)
    classes[2:4, 0:2] = 0
    instance[2:4, 0:2] = 2  # thing B, first seen at (2, 0)
    classes[1, 1] = 0
    instance[1, 1] = 8  # thing C: only on an odd pixel, gone at 3×3
    classes[3, 3] = 2  # stuff class 2, only on an odd pixel as well
    classes[4, 0] = 0  # crowd: thing class, instance 0
    classes[4, 4] = IGNORE  # void
    semantic = classes.clone()
    return Targets(semantic=semantic[None], panoptic=(classes * DIVISOR + instance)[None])


def test_prepare_mask_targets_layout():
    targets = prepare_mask_targets(_scene(), output_size=(3, 3), num_classes=3, thing_classes=[0],
                                   ignore_label=IGNORE, label_divisor=DIVISOR, max_thing_id=4)
    # G = 4 thing slots + stuff classes 1, 2 → slots 4, 5. Raster order at full resolution: A (row 0) = 0,
    # C (row 1) = 1, B (row 2) = 2. C and stuff class 2 vanish at 3×3 and become void but keep their slots.
    assert targets.num_masks == 6
    assert targets.pixel_mask_id[0].reshape(3, 3).tolist() == [[4, 0, 0], [2, 4, 4], [-1, 4, -1]]
    assert targets.mask_class[0].tolist() == [0, -1, 0, -1, 1, -1]
    assert targets.mask_area[0].tolist() == [2, 0, 1, 0, 4, 0]
    assert targets.non_void[0].reshape(3, 3).tolist() == [[True] * 3, [True] * 3, [True, True, False]]
    expected_inverse = [9 / 4, 9 / 2, 9 / 2, 9 / 1, 9 / 4, 9 / 4, 9, 9 / 4, 9]
    assert targets.inverse_mask_area[0].tolist() == pytest.approx(expected_inverse)


def test_prepare_mask_targets_for_the_fixed_semantic_layout():
    # No thing slots: GT mask c is class c, instances merge.
    targets = prepare_mask_targets(Targets(semantic=_scene().semantic), output_size=(3, 3), num_classes=3,
                                   thing_classes=(), ignore_label=IGNORE, label_divisor=DIVISOR, max_thing_id=0)
    assert targets.pixel_mask_id[0].reshape(3, 3).tolist() == [[1, 0, 0], [0, 1, 1], [0, 1, -1]]
    assert targets.mask_class[0].tolist() == [0, 1, -1]


def test_prepare_mask_targets_batches_images_independently():
    scene = _scene()
    flipped = Targets(semantic=scene.semantic.flip(2), panoptic=scene.panoptic.flip(2))
    batch = Targets(semantic=torch.cat([scene.semantic, flipped.semantic]),
                    panoptic=torch.cat([scene.panoptic, flipped.panoptic]))
    kwargs = dict(output_size=(3, 3), num_classes=3, thing_classes=[0], ignore_label=IGNORE, label_divisor=DIVISOR,
                  max_thing_id=4)
    together = prepare_mask_targets(batch, **kwargs)
    for index, single in enumerate((scene, flipped)):
        alone = prepare_mask_targets(single, **kwargs)
        assert torch.equal(together.pixel_mask_id[index], alone.pixel_mask_id[0])
        assert torch.equal(together.mask_class[index], alone.mask_class[0])
    assert together.pixel_mask_id[1].reshape(3, 3).tolist() == [[0, 0, 4], [4, 4, 2], [-1, 4, -1]]
