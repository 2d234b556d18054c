"""Every PolyMaX recipe file loads, validates and carries the paper's values (§4.1, App. A, B)."""

from __future__ import annotations

from pathlib import Path

import pytest

from polymax.build import resolve_config
from polymax.config.train import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
EXPECTED = [f"polymax_{b}_{d}_{t}.yaml" for b in ("r50", "convnext_large") for d in ("nyu", "taskonomy")
            for t in ("semantic", "depth", "normals")]


def test_every_backbone_data_set_and_task_has_a_recipe():
    assert sorted(EXPECTED) == sorted(p.name for p in CONFIGS.glob("polymax_*_*_*.yaml")
                                      if "tiny" not in p.name and "multitask" not in p.name)


@pytest.mark.parametrize("name", EXPECTED)
def test_recipe_loads_and_has_the_papers_values(name):
    config = load_config(CONFIGS / name)
    assert config.model.preset == name.removesuffix(".yaml")
    model = resolve_config(config.model.preset, **config.model.overrides)          # the preset exists
    dataset, task = name[:-5].split("_")[-2:]
    assert config.optim.lr == (5e-5 if dataset == "nyu" else 5e-4)                  # fine-tune vs pre-train
    assert config.optim.weight_decay == 0.05 and config.optim.backbone_lr_multiplier == 0.1
    assert config.data.dataset == {"nyu": "nyuv2", "taskonomy": "taskonomy"}[dataset]
    if task in ("depth", "normals"):
        assert config.augment.recipe == task                                         # BinsFormer preprocessing
        assert model.kmax_decoder.num_queries == {"depth": 16, "normals": 8}[task]  # App. B
    else:
        assert config.augment.recipe == "kmax"
    if dataset == "nyu":
        assert config.model.init and "taskonomy" in config.model.init and config.data.eval_split == "test"
        if task != "semantic":
            assert tuple(config.data.crop_size) == (417, 545)                       # 416×544 + 1 (32k+1 sizes)
    else:
        assert config.model.backbone_init
    if task == "depth":
        expected = {"nyu": "silog", "taskonomy": "charbonnier"}[dataset]
        assert model.task("depth").depth_loss == expected
    if task == "normals":
        assert config.normals_loss.loss == "l2" and config.augment.rotation_degrees == 0


MULTITASK = [f"polymax_multitask_{b}_nyu.yaml" for b in ("r50", "convnext_large")]


def test_every_backbone_has_a_multitask_nyu_recipe():
    assert sorted(MULTITASK) == sorted(p.name for p in CONFIGS.glob("polymax_multitask_*_nyu.yaml"))


@pytest.mark.parametrize("name", MULTITASK)
def test_multitask_recipe_keeps_the_single_task_recipes_schedule_and_losses(name):
    config = load_config(CONFIGS / name)
    assert config.model.preset == name.removesuffix(".yaml")
    model = resolve_config(config.model.preset, **config.model.overrides)
    assert {t.name: t.num_queries for t in model.tasks} == {"semantic": 40, "depth": 16, "normals": 8}
    backbone = name.removeprefix("polymax_multitask_").removesuffix("_nyu.yaml")
    singles = [load_config(CONFIGS / f"polymax_{backbone}_nyu_{t}.yaml") for t in ("semantic", "depth", "normals")]
    for single in singles:
        assert (config.optim, config.steps, config.data.batch_size) == (single.optim, single.steps,
                                                                         single.data.batch_size)
    assert config.loss == singles[0].loss and config.depth_loss == singles[1].depth_loss
    assert config.normals_loss == singles[2].normals_loss
    # One augmentation every label of an image survives: no rotation (normals), no random scaling (depth).
    assert config.augment.recipe == "normals" and config.augment.rotation_degrees == 0
    assert tuple(config.data.crop_size) == (417, 545) and config.data.eval_split == "test"
    assert "taskonomy_depth" in config.model.init


def test_multitask_tiny_synth_recipe_trains_all_five_tasks_like_the_oneformer_cpu_recipe():
    from polymax.engine.objective import build_objective

    config = load_config(CONFIGS / "polymax_multitask_tiny_synth.yaml")
    oneformer = load_config(CONFIGS / "oneformer_kmax_tiny_synth.yaml")
    assert (config.optim, config.augment, config.steps, config.data) == (oneformer.optim, oneformer.augment,
                                                                         oneformer.steps, oneformer.data)
    model = resolve_config(config.model.preset)
    assert model.task_names == ("panoptic", "semantic", "instance", "depth", "normals")
    objective = build_objective(model, config)
    assert objective.tasks == model.task_names and objective.sampler is None    # 'auto' → every task
