"""``migrate_state_dict``: release-0.1 weights name the single head ``task_head.…`` (kMaX) / ``head.…`` (the
per-pixel baseline); today's are ``heads.<task>.…``. (Whole 0.1 folders: test_release_01_folders.py.)"""

from __future__ import annotations

import pytest
import torch

from polymax.io.pretrained import migrate_state_dict
from polymax.presets import PRESETS


@pytest.mark.parametrize(("preset", "old", "new"), [
    ("kmax_tiny_test", "task_head.", "heads.panoptic."),
    ("polymax_tiny_synth_depth", "task_head.", "heads.depth."),
    ("deeplabv3plus_tiny_synth_normals", "head.", "heads.normals."),
])
def test_old_head_keys_move_under_the_task(preset, old, new):
    config = PRESETS[preset]()
    state = {f"{old}classifiers.0.bias": torch.zeros(2), "backbone.stem.weight": torch.ones(1)}
    migrated = migrate_state_dict(state, config)
    assert set(migrated) == {f"{new}classifiers.0.bias", "backbone.stem.weight"}
    assert migrated[f"{new}classifiers.0.bias"] is state[f"{old}classifiers.0.bias"]


def test_current_keys_pass_unchanged():
    config = PRESETS["kmax_tiny_test"]()
    state = {"heads.panoptic.classifiers.0.bias": torch.zeros(2), "mask_head.x": torch.zeros(1)}
    assert migrate_state_dict(state, config) is state
    # 'head.' is only the baseline's old prefix: a kMaX model's keys that merely start with it are left alone.
    assert list(migrate_state_dict({"head.x": torch.zeros(1)}, config)) == ["head.x"]
