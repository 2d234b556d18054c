"""Malformed model folders: each bad config.json field is named in one line; NaN / Inf weights are refused."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import polymax
from polymax.errors import UserError
from polymax.io.pretrained import load_model, read_config


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "depth"
    polymax.save_pretrained(polymax.build_model("polymax_tiny_synth_depth"), path)
    return path


def _copy_with(folder, tmp_path, edit):
    header = json.loads((folder / "config.json").read_text())
    edit(header["config"])
    target = tmp_path / "model"
    target.mkdir()
    (target / "config.json").write_text(json.dumps(header))
    (target / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    return target


def _set(path, value):
    def edit(config):
        *sections, name = path.split(".")
        node = config
        for section in sections:
            node = node[int(section)] if isinstance(node, list) else node[section]
        node[name] = value
    return edit


@pytest.mark.parametrize(("path", "value"), [
    ("kmax_decoder.num_queries", -4),
    ("kmax_decoder.num_queries", "many"),
    ("kmax_decoder.hidden", 0),
    ("head.mask_dim", 12.5),
    ("pixel_decoder.dims", "big"),
    ("pixel_decoder.dims", [64, -8, 32, 16]),
    ("crop_size", [65]),
    ("dataset.class_names", [1, 2]),
    ("tasks.0.max_depth", "far"),
    ("tasks.0.min_depth", -1.0),
    ("backbone.drop_path_keep", True),
    ("high_res_stride", None),
    ("backbone", "resnet"),
])
def test_a_malformed_field_is_named(folder, tmp_path, path, value):
    model = _copy_with(folder, tmp_path, _set(path, value))
    with pytest.raises(UserError) as error:
        load_model(model)
    message = str(error.value)
    assert path.split(".")[-1] in message and "\n" not in message, message


@pytest.mark.parametrize("section", ["dataset", "tasks", "kmax_decoder"])
def test_a_missing_section_is_named(folder, tmp_path, section):
    model = _copy_with(folder, tmp_path, lambda config: config.pop(section))
    with pytest.raises(UserError, match=f"{section}"):
        read_config(model)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_with_the_tensor_name(folder, tmp_path, bad):
    target = tmp_path / "model"
    target.mkdir()
    (target / "config.json").write_text((folder / "config.json").read_text())
    weights = load_file(str(folder / "model.safetensors"))
    name = sorted(key for key, value in weights.items() if value.is_floating_point())[3]
    weights[name] = weights[name].clone()
    weights[name].view(-1)[0] = bad
    save_file(weights, str(target / "model.safetensors"))
    with pytest.raises(UserError, match=f"{name}.*(NaN|infinite)"):
        load_model(target)


def test_a_good_folder_still_loads(folder):
    assert torch.isfinite(next(load_model(folder).parameters())).all()
