"""The OneFormer recipes: every backbone of a data set trains with the same schedule (kMaX-DeepLab's, as the R50
recipes), the ConvNeXt-L ones naming their own preset (its drop path and query count)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from polymax.config.train import load_config
from polymax.presets import PRESETS

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("dataset", ["coco", "cityscapes", "ade20k"])
def test_convnext_large_recipe_is_the_r50_recipe_on_its_preset(dataset):
    r50 = load_config(CONFIGS / f"oneformer_kmax_r50_{dataset}.yaml")
    large = load_config(CONFIGS / f"oneformer_kmax_convnext_large_{dataset}.yaml")
    assert large.model.preset == f"oneformer_kmax_convnext_large_{dataset}" and large.model.preset in PRESETS
    assert replace(large, model=replace(large.model, preset=r50.model.preset)) == r50
    preset = PRESETS[large.model.preset]()
    assert preset.backbone.name == "convnext_large" and preset.kmax_decoder.task_queries == "oneformer"
    assert tuple(large.data.crop_size) == tuple(preset.crop_size)
    assert large.oneformer.contrastive_weight == 0.5 and large.oneformer.panoptic_probability == pytest.approx(1 / 3)
