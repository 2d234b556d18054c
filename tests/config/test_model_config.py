"""ModelConfig: task look-up, the JSON round trip of config.json, and the migration of release-0.1 configs
(one ``task`` with a ``kind``) whose depth recipe was chosen by the data set's name."""

from __future__ import annotations

import json

import pytest

from polymax.config.model import ModelConfig, TaskConfig, migrate_config_dict
from polymax.errors import UserError
from polymax.presets import PRESETS


def _old_dict(preset: str) -> dict:
    """A release-0.1 config.json dict of ``preset``: one ``task`` with a ``kind`` and no depth recipe fields."""
    data = json.loads(json.dumps(PRESETS[preset]().to_dict()))
    (task,) = data.pop("tasks")
    for name in ("name", "num_queries", "depth_loss", "depth_eval_crop"):
        task.pop(name)
    data["task"] = {"kind": PRESETS[preset]().task_names[0], **task}
    del data["kmax_decoder"]["task_conditioned"]
    return data


@pytest.mark.parametrize(("preset", "depth_loss", "crop"), [
    ("polymax_r50_taskonomy_depth", "charbonnier", None),
    ("polymax_r50_nyu_depth", "silog", "nyu"),
    ("deeplabv3plus_r50_nyu_depth", "charbonnier", "nyu"),        # the baseline: Charbonnier on any data set
    ("deeplabv3plus_r50_taskonomy_depth", "charbonnier", None),
    ("polymax_tiny_synth_depth", "silog", None),
])
def test_an_old_depth_config_gets_its_data_sets_recipe(preset, depth_loss, crop):
    old = _old_dict(preset)
    config = ModelConfig.from_dict(old)
    task = config.task()
    assert (task.name, task.depth_loss, task.depth_eval_crop) == ("depth", depth_loss, crop)
    assert (task.min_depth, task.max_depth, task.num_queries) == (old["task"]["min_depth"], old["task"]["max_depth"], 0)
    assert config == PRESETS[preset]()               # the presets carry the same recipes
    assert "task" in old                             # the caller's dict is left as it was


def test_an_old_config_without_a_kind_is_panoptic_and_current_dicts_pass_unchanged():
    old = _old_dict("kmax_tiny_test")
    del old["task"]["kind"]
    assert ModelConfig.from_dict(old).task_names == ("panoptic",)
    current = PRESETS["kmax_tiny_test"]().to_dict()
    assert migrate_config_dict(current) is current


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_config_json_round_trip(name):
    config = PRESETS[name]()
    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_task_look_up():
    config = ModelConfig(tasks=(TaskConfig(name="panoptic"), TaskConfig(name="depth", max_depth=20.0)))
    assert config.task_names == ("panoptic", "depth") and config.task("depth").max_depth == 20.0
    with pytest.raises(UserError, match="choose one"):
        config.task()
    with pytest.raises(UserError, match="no task 'normals'"):
        config.task("normals")
