"""Converter mechanics on the tiny preset: name cleaning, class-channel remap (Cityscapes), error reporting."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from deeplab2_export import deeplab2_variables

from polymax.build import build_model
from polymax.convert.deeplab2 import class_channel_order, read_variables, state_dict_from_variables
from polymax.data import dataset_info
from polymax.errors import UserError


def test_cityscapes_class_order_puts_things_first_in_the_checkpoint():
    info = dataset_info("cityscapes_panoptic")
    order = class_channel_order(info.num_classes, info.thing_classes)
    # deeplab2 channels: person..bicycle (train ids 11..18), then road..sky (0..10), then void.
    assert order[11] == 0 and order[18] == 7 and order[0] == 8 and order[10] == 18 and order[19] == 19
    coco = dataset_info("coco_panoptic")
    assert class_channel_order(coco.num_classes, coco.thing_classes) == list(range(134))


def test_round_trip_through_an_npz(tmp_path):
    model = build_model("kmax_tiny_test")
    variables = deeplab2_variables(model)
    # Checkpoint-style keys and training state are accepted and ignored.
    stored = {f"{name}/.ATTRIBUTES/VARIABLE_VALUE": value for name, value in variables.items()}
    stored["optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE"] = np.zeros(())
    stored["save_counter/.ATTRIBUTES/VARIABLE_VALUE"] = np.zeros(())
    np.savez(tmp_path / "ckpt.npz", **stored)
    state = state_dict_from_variables(build_model("kmax_tiny_test"), read_variables(tmp_path / "ckpt.npz"))
    for key, value in model.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=key)


def test_cityscapes_class_heads_are_remapped():
    info = dataset_info("cityscapes_panoptic")
    model = build_model("kmax_tiny_test", dataset=info, tasks__panoptic__aux_semantic="head")
    variables = deeplab2_variables(model)
    # Official class head: channel j carries bias j. Official semantic head: 19 channels (no void), bias = train id.
    variables["transformer_class_head/_conv/bias"] = np.arange(20, dtype=np.float32)
    variables["semantic_last_layer/bias"] = np.arange(19, dtype=np.float32)
    kernel = variables["semantic_last_layer/kernel"]
    variables["semantic_last_layer/kernel"] = kernel[..., :19] if kernel.shape[-1] == 20 else kernel
    state = state_dict_from_variables(model, variables)
    final = len(model.kmax_decoder.layers)
    bias = state[f"heads.panoptic.classifiers.{final}.bias"].numpy()
    assert bias[11] == 0 and bias[0] == 8 and bias[18] == 7 and bias[19] == 19
    semantic_bias = state["semantic_branch.head.classifier.bias"].numpy()
    np.testing.assert_array_equal(semantic_bias[:19], np.arange(19))
    assert semantic_bias[19] <= -1e4          # the added void logit never wins the softmax


def test_every_problem_is_named_in_one_message():
    model = build_model("kmax_tiny_test")
    variables = deeplab2_variables(model)
    missing = "transformer_decoder/cluster_centers"
    misshaped = "transformer_class_head/_conv/bias"
    del variables[missing]
    variables[misshaped] = np.zeros(3, dtype=np.float32)
    variables["transformer_decoder/_extra/kernel"] = np.zeros(2, dtype=np.float32)
    with pytest.raises(UserError) as error:
        state_dict_from_variables(model, variables)
    message = str(error.value)
    assert "\n" not in message
    for part in ("1 missing", missing, "1 unused", "transformer_decoder/_extra/kernel", "1 mis-shaped", misshaped):
        assert part in message


def test_unreadable_sources(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_variables(tmp_path / "nothing.npz")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UserError, match="corrupt"):
        read_variables(tmp_path / "broken.npz")
    (tmp_path / "ckpt-1.index").write_bytes(b"")
    if importlib.util.find_spec("tensorflow") is None:
        with pytest.raises(UserError, match=r"polymax\[tf\]"):
            read_variables(tmp_path / "ckpt-1")
