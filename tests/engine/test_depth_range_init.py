"""Fine-tuning across depth ranges: model.init from a 128 m depth model into a 10 m preset says what it does to
the bins ('rescale') or keeps their metres ('keep')."""

from __future__ import annotations

import pytest
import torch

from polymax.build import build_model
from polymax.config.train import load_config
from polymax.engine.assemble import build_training_model
from polymax.errors import UserError
from polymax.io.pretrained import save_pretrained

PRESET = "polymax_tiny_synth_depth"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    torch.manual_seed(3)
    model = build_model(PRESET, **{"tasks.depth.min_depth": 1e-3, "tasks.depth.max_depth": 128.0}).eval()
    directory = tmp_path_factory.mktemp("taskonomy_depth")
    save_pretrained(model, directory)
    return model, directory


def _bins(model, images):
    with torch.no_grad():
        return model.eval()(images, task="depth")["depth"].final.cluster_depth


def test_rescale_is_reported_with_the_exact_mapping(source, capsys):
    model, directory = source
    config = load_config(overrides=[f"model.preset={PRESET}", f"model.init={directory}",
                                    "model.tasks.depth.min_depth=0.001", "model.tasks.depth.max_depth=10"])
    target = build_training_model(config)
    note = capsys.readouterr().out
    assert "trained for 0.001-128 m" in note and "0.001-10 m" in note and "init_depth_range=keep" in note
    images = torch.rand(1, 3, 33, 33) * 255
    old, new = _bins(model, images), _bins(target, images)
    factor = (10 - 1e-3) / (128 - 1e-3)
    torch.testing.assert_close(new, 1e-3 + (old - 1e-3) * factor, rtol=1e-5, atol=1e-6)   # what the note says


def test_keep_trains_in_the_sources_range(source, capsys):
    model, directory = source
    config = load_config(overrides=[f"model.preset={PRESET}", f"model.init={directory}",
                                    "model.init_depth_range=keep"])
    target = build_training_model(config)
    assert target.config.task("depth").max_depth == 128.0
    assert "trained for" not in capsys.readouterr().out
    images = torch.rand(1, 3, 33, 33) * 255
    torch.testing.assert_close(_bins(target, images), _bins(model, images))
    with pytest.raises(UserError, match="init_depth_range"):
        load_config(overrides=["model.init_depth_range=stretch"])
