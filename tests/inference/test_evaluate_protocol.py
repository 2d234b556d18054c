"""Evaluation conventions carried by the data set (its depth protocol) and flip TTA in evaluate()."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from polymax.build import build_model
from polymax.data import build_dataset
from polymax.data.protocol import DepthProtocol
from polymax.errors import UserError
from polymax.inference.evaluate import evaluate
from polymax.inference.tta import predict_dense
from polymax.metrics import DepthMetrics


class _WithProtocol(list):
    def __init__(self, samples, protocol):
        super().__init__(samples)
        self.protocol = protocol


@pytest.fixture(scope="module")
def depth_model():
    torch.manual_seed(0)
    model = build_model("polymax_tiny_synth_depth").eval()
    with torch.no_grad():   # a fresh model predicts almost one depth everywhere: make its maps vary
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return model


@pytest.fixture(scope="module")
def rooms():
    return [build_dataset("synth", split="val", size=(40, 48), num_samples=2)[i] for i in range(2)]


def test_depth_is_scored_on_the_data_sets_crop_and_range(depth_model, rooms):
    protocol = DepthProtocol(name="test", size=(40, 48), eval_crop=(4, 30, 6, 40), min_depth=0.5, max_depth=4.0)
    scored = evaluate(depth_model, dataset=_WithProtocol(rooms, protocol), task="depth")
    # The same numbers by hand: the model's maps, the protocol's crop, its range, predictions capped at 4 m.
    reference = DepthMetrics(min_depth=0.5, max_depth=4.0, eval_crop=(4, 30, 6, 40))
    for sample in rooms:
        with torch.no_grad():
            prediction = evaluate_one(depth_model, sample)
        reference.update(prediction, sample.depth[None])
    expected = reference.compute()
    assert scored == pytest.approx(expected, rel=1e-5)
    assert scored != pytest.approx(evaluate(depth_model, dataset=rooms, task="depth"), rel=1e-3)
    wrong_size = replace(protocol, size=(480, 640))
    with pytest.raises(UserError, match="480 ground truth"):
        evaluate(depth_model, dataset=_WithProtocol(rooms, wrong_size), task="depth")


def evaluate_one(model, sample):
    """The model's depth for one sample through the same decoding evaluate() uses."""
    from polymax.geometry import Geometry, padded_size
    from polymax.tasks import get_task
    from polymax.tasks.base import output_slice

    images = sample.image[None].float()
    size = tuple(images.shape[-2:])
    output = model(images, task=("depth",))["depth"].final
    decode = get_task("depth").build_decoder(model.config, model.config.task("depth"))
    result = decode(output_slice(output, 0), Geometry(original=size, content=size, network=padded_size(size)))
    return torch.from_numpy(result.depth)[None]


def test_flip_averages_the_mirrored_prediction(depth_model, rooms):
    flipped = evaluate(depth_model, dataset=rooms, task="depth", flip=True)
    reference = DepthMetrics(min_depth=depth_model.config.task("depth").min_depth,
                             max_depth=depth_model.config.task("depth").max_depth)
    for sample in rooms:
        maps = predict_dense(depth_model, sample.image[None].float(), task="depth", flip=True)
        reference.update(maps[:, 0], sample.depth[None])
    assert flipped == pytest.approx(reference.compute(), rel=1e-5)
    assert flipped != pytest.approx(evaluate(depth_model, dataset=rooms, task="depth"), rel=1e-4)


def test_flip_is_refused_for_panoptic():
    model = build_model("kmax_tiny_test").eval()
    with pytest.raises(UserError, match="--flip works for"):
        evaluate(model, dataset=[], task="panoptic", flip=True)
