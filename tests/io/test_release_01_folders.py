"""Model folders written by release 0.1 (format version 1: one ``task`` with a ``kind``, the head's weights under
``task_head.*`` — ``head.*`` for the per-pixel baseline) load and give the same outputs as the model they came
from. The old folders are rewritten here from a current save, field by field as release 0.1 wrote them."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import polymax
from polymax.io.pretrained import CONFIG_FILE, WEIGHTS_FILE, read_config

NEW_TASK_FIELDS = ("name", "num_queries", "depth_loss", "depth_eval_crop")


def write_release_01_folder(model, directory, *, old_prefix: str) -> None:
    """Save ``model``, then turn the folder into what release 0.1 wrote for it."""
    polymax.save_pretrained(model, directory)
    header = json.loads((directory / CONFIG_FILE).read_text())
    config = header["config"]
    (task,) = config.pop("tasks")
    config["task"] = {"kind": task["name"], **{k: v for k, v in task.items() if k not in NEW_TASK_FIELDS}}
    del config["kmax_decoder"]["task_conditioned"]
    header["format_version"] = 1
    (directory / CONFIG_FILE).write_text(json.dumps(header, indent=2))
    new_prefix = f"heads.{task['name']}."
    state = load_file(str(directory / WEIGHTS_FILE))
    save_file({(old_prefix + k[len(new_prefix):] if k.startswith(new_prefix) else k): v for k, v in state.items()},
              str(directory / WEIGHTS_FILE), metadata={"format": "pt"})


@pytest.mark.parametrize(("preset", "old_prefix"), [("kmax_tiny_test", "task_head."),
                                                     ("polymax_tiny_synth_depth", "task_head."),
                                                     ("deeplabv3plus_tiny_synth_normals", "head.")])
def test_a_release_01_folder_loads_with_the_same_outputs(tmp_path, preset, old_prefix):
    torch.manual_seed(0)
    model = polymax.build_model(preset).eval()
    write_release_01_folder(model, tmp_path, old_prefix=old_prefix)
    assert any(k.startswith(old_prefix) for k in load_file(str(tmp_path / WEIGHTS_FILE)))
    loaded = polymax.load_model(tmp_path)
    assert loaded.config == model.config
    images = torch.rand(1, 3, 40, 50) * 255
    with torch.no_grad():
        expected, got = model(images).final.tensors(), loaded(images).final.tensors()
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0)


def test_release_01_recipes_become_task_settings(tmp_path):
    """0.1 chose the depth loss and the evaluation crop by the data-set name; now the task config says it."""
    config = polymax.PRESETS["polymax_r50_taskonomy_depth"]()
    assert config.task().depth_loss == "charbonnier"
    header = {"format": "polymax", "format_version": 1,
              "config": {**{k: v for k, v in config.to_dict().items() if k != "tasks"},
                         "task": {"kind": "depth", "aux_semantic": "none", "min_depth": 0.001, "max_depth": 128.0,
                                  "value_mlp_layers": 2}}}
    (tmp_path / CONFIG_FILE).write_text(json.dumps(header))
    migrated = read_config(tmp_path).task()
    assert (migrated.name, migrated.depth_loss, migrated.depth_eval_crop) == ("depth", "charbonnier", None)
    header["config"]["dataset"]["name"] = "nyuv2"
    (tmp_path / CONFIG_FILE).write_text(json.dumps(header))
    migrated = read_config(tmp_path).task()
    assert (migrated.depth_loss, migrated.depth_eval_crop) == ("silog", "nyu")
