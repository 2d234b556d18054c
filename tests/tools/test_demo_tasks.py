"""The per-task pieces the demo loops over (``Task.trivial_result``, ``ground_truth_result``, ``picture_map``,
``range_note``, ``cluster_captions``): constant baselines are the constants they promise, truth and prediction
share one colour scale, and every cluster gets a caption that says what it stands for."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polymax.build import build_model, resolve_config
from polymax.data import build_dataset
from polymax.structures import DepthResult, TaskOutput
from polymax.tasks import TASKS
from polymax.tools.demo import trivial_baseline_metrics

SIZE = 33


@pytest.fixture(scope="module")
def rooms():
    return (build_dataset("synth", split="train", size=(SIZE, SIZE), num_samples=6),
            build_dataset("synth", split="val", size=(SIZE, SIZE), num_samples=3))


@pytest.fixture(scope="module")
def configs():
    return {name: build_model(f"polymax_tiny_synth_{name}").config
            for name in ("semantic", "depth", "normals", "panoptic")}


def _constant_predictor(name, configs, train):
    config = configs[name]
    return config, TASKS[name].trivial_result(config, config.task(), train)


def test_depth_baseline_is_the_per_pixel_training_mean(rooms, configs):
    train, val = rooms
    _, predict = _constant_predictor("depth", configs, train)
    result = predict(val[0])
    expected = torch.stack([s.depth for s in train]).mean(dim=0).numpy()
    assert isinstance(result, DepthResult) and result.size == (SIZE, SIZE)
    np.testing.assert_array_equal(result.depth, expected)
    np.testing.assert_array_equal(predict(val[1]).depth, result.depth)      # the same whatever the image


def test_normals_baseline_is_one_unit_vector_everywhere(rooms, configs):
    train, val = rooms
    _, predict = _constant_predictor("normals", configs, train)
    normals = predict(val[0]).normals                                        # (H, W, 3)
    assert normals.shape == (SIZE, SIZE, 3) and normals.dtype == np.float32
    assert np.allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-5)
    assert (normals == normals[0, 0]).all()
    # The most frequent direction, not the mean one: more training pixels lie within 15° of it.
    truth = torch.stack([s.normals for s in train]).permute(0, 2, 3, 1).reshape(-1, 3).numpy()
    truth = truth[np.abs(truth).sum(axis=1) > 0]                             # (valid pixels, 3)
    near = lambda vector: float((truth @ vector > np.cos(np.radians(15))).mean())
    mean = truth.mean(axis=0) / np.linalg.norm(truth.mean(axis=0))
    assert near(normals[0, 0]) > max(0.15, 1.3 * near(mean))


def test_segmentation_baselines_are_the_majority_class(rooms, configs):
    train, val = rooms
    counts = np.bincount(torch.cat([s.semantic.flatten() for s in train]).numpy())
    info = configs["panoptic"].dataset
    majority = int(counts[: info.num_classes].argmax())
    _, semantic = _constant_predictor("semantic", configs, train)
    assert (semantic(val[0]).semantic == majority).all()
    _, panoptic = _constant_predictor("panoptic", configs, train)
    result = panoptic(val[0])
    instance = int(majority in info.thing_classes)
    assert (result.semantic == majority).all()
    assert (result.panoptic == majority * info.label_divisor + instance).all()
    (segment,) = result.segments                                             # one segment over the whole image
    assert segment.category == majority and segment.area == SIZE * SIZE and segment.bbox == (0, 0, SIZE, SIZE)


def test_trivial_metrics_are_the_tasks_own_metrics(rooms, configs):
    train, val = rooms
    depth = trivial_baseline_metrics(configs["depth"], val, train)
    assert {"abs_rel", "rms", "delta1"} <= set(depth) and depth["rms"] > 0
    panoptic = trivial_baseline_metrics(configs["panoptic"], val, train, "panoptic")
    assert {"pq", "miou"} <= set(panoptic) and not any(key.startswith("iou_") for key in panoptic)



def test_instance_baseline_is_one_instance_of_the_most_frequent_thing_class(rooms, configs):
    train, val = rooms
    config = resolve_config("polymax_multitask_tiny_synth")
    info = config.dataset
    result = TASKS["instance"].trivial_result(config, config.task("instance"), train)(val[0])
    counts = torch.bincount(torch.cat([s.semantic.flatten() for s in train]), minlength=256)[:info.num_classes]
    things = list(info.thing_classes)
    expected = max(things, key=lambda c: int(counts[c]))
    (segment,) = result.segments
    assert segment.category == expected and segment.is_thing and segment.area == SIZE * SIZE
    assert (result.panoptic == expected * info.label_divisor + 1).all()
    metrics = trivial_baseline_metrics(config, val, train, "instance")
    assert 0.0 <= metrics["ap"] < 0.05


def test_depth_prediction_is_drawn_on_the_truths_scale(rooms, configs):
    _, val = rooms
    config, task = configs["depth"], TASKS["depth"]
    truth = task.ground_truth_result(val[0], config)
    valid = truth.depth[truth.depth > 0]
    assert task.range_note(truth) == f"{valid.min():.1f}-{valid.max():.1f} m"
    np.testing.assert_array_equal(task.picture_map(truth, config, reference=truth), task.picture_map(truth, config))
    far = DepthResult(task="depth", size=truth.size, depth=np.full(truth.size, 2 * valid.max(), np.float32))
    farthest = task.picture_map(truth, config)[np.unravel_index(truth.depth.argmax(), truth.size)]
    assert (task.picture_map(far, config, reference=truth) == farthest).all()  # beyond the truth: its far colour
    assert (task.picture_map(far, config) != farthest).any()                  # on its own (flat) scale: not


def test_ground_truth_pictures_show_the_labels(rooms, configs):
    _, val = rooms
    sample = val[0]
    for name in ("semantic", "panoptic", "normals", "depth"):
        config = configs[name]
        picture = TASKS[name].picture_map(TASKS[name].ground_truth_result(sample, config), config)
        assert picture.shape == (SIZE, SIZE, 3) and picture.dtype == np.uint8
        assert len(np.unique(picture.reshape(-1, 3), axis=0)) > 1, name
    info = configs["panoptic"].dataset
    instances = TASKS["instance"].ground_truth_result(sample, configs["panoptic"]).panoptic
    stuff = ~np.isin(sample.panoptic.numpy() // info.label_divisor, info.thing_classes)
    assert (instances[stuff] == info.ignore_label * info.label_divisor).all()
    assert (instances[~stuff] == sample.panoptic.numpy()[~stuff]).all()


@torch.no_grad()
@pytest.mark.parametrize("name", ["semantic", "depth", "normals", "panoptic"])
def test_every_cluster_gets_a_caption(name, rooms):
    torch.manual_seed(0)
    model = build_model(f"polymax_tiny_synth_{name}").eval()
    output = model(rooms[1][0].image[None].float())[name].final
    captions = TASKS[name].cluster_captions(output, model.config)
    assert len(captions) == output.mask_logits.shape[1]
    keys, texts = zip(*captions)
    assert all(isinstance(key, float) for key in keys)
    names = model.config.dataset.class_names
    if name == "depth":
        assert list(keys) == output.cluster_depth[0].tolist() and all(text.endswith(" m") for text in texts)
    elif name == "normals":
        vectors = np.array([[float(v) for v in text.strip("()").split(",")] for text in texts])
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=0.1)
    elif name == "semantic":
        assert list(texts) == list(names)
    else:
        assert all(text.rsplit(" ", 1)[0] in names for text in texts)


def test_default_captions_number_the_clusters():
    output = TaskOutput(mask_logits=torch.zeros(1, 3, 4, 4), pixel_features=torch.zeros(1, 2, 4, 4))
    assert TASKS["depth"].cluster_captions(output, build_model("polymax_tiny_synth_depth").config) == \
        [(0.0, "cluster 0"), (1.0, "cluster 1"), (2.0, "cluster 2")]      # no bin depths: the base default
