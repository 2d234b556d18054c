"""The PolyMaX depth / normals training recipe (appendix A) reachable from the training config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polymax.config.train import load_config
from polymax.data.augment import depth_recipe
from polymax.data.protocol import NYU
from polymax.data.sample import Sample
from polymax.errors import UserError


class _Rooms(list):
    protocol = NYU


def _nyu_frame() -> Sample:
    """A 480×640 frame: a white border outside the recipe's crop (45:472, 43:608), distinct depths inside."""
    image = torch.full((3, 480, 640), 255, dtype=torch.uint8)
    image[:, 45:472, 43:608] = 100
    depth = torch.arange(480 * 640, dtype=torch.float32).reshape(480, 640) * 1e-5 + 0.5
    normals = torch.zeros(3, 480, 640)
    normals[0], normals[2] = 0.6, 0.8
    return Sample(image=image, depth=depth, normals=normals)


def _recipe(*overrides: str):
    config = load_config(overrides=list(overrides))
    return depth_recipe(config.augment, _Rooms([_nyu_frame()]), crop_size=(416, 544))


def test_depth_recipe_cuts_the_border_crops_416x544_and_never_rescales():
    transform = _recipe("augment.recipe=depth", "augment.color_jitter_prob=0")
    frame = _nyu_frame()
    rotated = 0
    for seed in range(12):
        out = transform(frame, np.random.default_rng(seed))
        assert tuple(out.image.shape[-2:]) == (416, 544)
        valid = out.depth > 0
        # No scaling: every valid depth is one of the frame's own values (a rescale would divide them by s).
        assert torch.isin(out.depth[valid], frame.depth).all()
        assert out.image.max() <= 100.5          # the white (255) border was cut before cropping
        xy = out.normals[:2][:, valid]
        rotated += int(not torch.allclose(xy[1], torch.zeros_like(xy[1])))
    assert 0 < rotated < 12          # rotation ±2.5° with probability 0.5


def test_normals_recipe_neither_rotates_nor_rescales():
    transform = _recipe("augment.recipe=normals")
    for seed in range(8):
        out = transform(_nyu_frame(), np.random.default_rng(seed))
        valid = out.normals.abs().sum(0) > 0
        assert valid.all()
        x = out.normals[0][valid]
        assert torch.allclose(x.abs(), torch.full_like(x, 0.6)) and torch.all(out.normals[1] == 0)


def test_border_crop_only_for_the_protocols_frame_size():
    transform = _recipe("augment.recipe=depth", "augment.rotation_degrees=0", "augment.color_jitter_prob=0")
    small = Sample(image=torch.full((3, 300, 400), 7, dtype=torch.uint8), depth=torch.ones(300, 400))
    out = transform(small, np.random.default_rng(0))
    assert tuple(out.image.shape[-2:]) == (416, 544) and (out.depth > 0).sum() == 300 * 400   # padded, not cut


def test_recipe_values_and_a_bad_recipe():
    config = load_config(overrides=["augment.recipe=depth"])
    transform = depth_recipe(config.augment, _Rooms(), crop_size=(416, 544))
    assert transform.rotation_degrees == 2.5 and transform.color_jitter_prob == 0.5
    assert transform.min_scale == transform.max_scale == 1.0 and transform.autoaugment is None
    assert transform.border_crop == (45, 472, 43, 608) and not transform.copy_paste
    assert load_config().augment.recipe == "kmax"          # the kMaX pipeline stays the default
    with pytest.raises(UserError, match="augment.recipe"):
        load_config(overrides=["augment.recipe=binsformer"])


def test_build_train_set_uses_the_recipe():
    from polymax.build import build_model
    from polymax.engine.assemble import build_train_set

    config = load_config(overrides=["model.preset=polymax_tiny_synth_normals", "augment.recipe=normals",
                                    "data.crop_size=[33,33]", "data.check=false"])
    model = build_model("polymax_tiny_synth_normals")
    train_set = build_train_set(config, model.config)
    assert train_set.transform.rotation_degrees == 0.0 and train_set.transform.color_jitter_prob == 0.5
    sample = train_set[(0, 1)]
    assert tuple(sample.image.shape[-2:]) == (33, 33)
