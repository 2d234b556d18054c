"""Checkpoint files: atomic replacement, recovery of a save cut between its renames, RNG round trip."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import polymax
from polymax.engine import checkpoint as ckpt
from polymax.errors import UserError


def _state(step):
    return ckpt.TrainingState(step=step, samples_seen=2 * step, optimizer={"state": {}, "param_groups": []},
                              scheduler={}, rng=[ckpt.capture_rng()], config={"steps": 10})


def test_save_replaces_the_whole_directory_and_is_loadable(tmp_path):
    model = polymax.build_model("kmax_tiny_test")
    target = tmp_path / "last"
    ckpt.save_checkpoint(target, model=model, state=_state(1), config_yaml="steps: 10\n")
    (target / "stale.txt").write_text("from an older save")
    ckpt.save_checkpoint(target, model=model, state=_state(2), config_yaml="steps: 10\n")
    assert sorted(p.name for p in target.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                         "train_config.yaml", "training_state.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    restored = ckpt.load_checkpoint(target, model=polymax.build_model("kmax_tiny_test"))
    assert restored.step == 2 and restored.samples_seen == 4
    assert isinstance(polymax.load_model(target), torch.nn.Module)


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = polymax.build_model("kmax_tiny_test")
    target = tmp_path / "last"
    ckpt.save_checkpoint(target, model=model, state=_state(1), config_yaml="")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", disk_full)
    with pytest.raises(UserError, match="No space left"):
        ckpt.save_checkpoint(target, model=model, state=_state(2), config_yaml="")
    assert torch.load(target / ckpt.TRAINING_STATE_FILE, weights_only=True)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_find_checkpoint_recovers_a_save_cut_between_renames(tmp_path):
    model = polymax.build_model("kmax_tiny_test")
    ckpt.save_checkpoint(tmp_path / "last", model=model, state=_state(3), config_yaml="")
    (tmp_path / "last").rename(tmp_path / "last.previous")  # as if killed right after the first rename
    assert ckpt.find_checkpoint(tmp_path) == tmp_path / "last.previous"
    with pytest.raises(UserError, match="no checkpoint"):
        ckpt.find_checkpoint(tmp_path / "elsewhere")


def test_rng_capture_and_restore_round_trip():
    generator = torch.Generator().manual_seed(5)
    saved = ckpt.capture_rng({"extra": generator})
    first = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=generator).item())
    ckpt.restore_rng(saved, {"extra": generator})
    again = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=generator).item())
    assert first == again


def test_checkpoint_of_another_preset_is_a_user_error(tmp_path):
    ckpt.save_checkpoint(tmp_path / "last", model=polymax.build_model("kmax_tiny_test"), state=_state(1),
                         config_yaml="")
    with pytest.raises(UserError, match="does not fit"):
        ckpt.load_checkpoint(tmp_path / "last", model=polymax.build_model("polymax_tiny_synth_panoptic"))


def test_files_are_fsynced_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = ckpt.os.fsync, ckpt.os.replace
    monkeypatch.setattr(ckpt.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(ckpt.os, "replace",
                        lambda src, dst: (events.append(("replace", ckpt.Path(dst).name)), real_replace(src, dst))[1])
    ckpt.save_checkpoint(tmp_path / "last", model=polymax.build_model("kmax_tiny_test"), state=_state(1),
                         config_yaml="")
    into_place = events.index(("replace", "last"))
    assert events[:into_place].count("fsync") >= 4, "every file of the checkpoint (and its folder) is synced first"


def test_temporary_folders_of_an_interrupted_save_are_removed(tmp_path):
    leftover = tmp_path / ".last.tmp-99999"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"half written")
    (tmp_path / "keep.txt").write_text("not ours")
    ckpt.remove_interrupted_saves(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
