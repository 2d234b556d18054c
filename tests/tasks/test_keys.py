"""Keys make every picture readable on its own: class legends explain void, the depth bar is in metres, the normal
key shows the colour code it states, and no caption is cut off."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import polymax
from polymax.structures import DepthResult, NormalsResult, SegmentationResult
from polymax.tasks import get_task, keys, visualize


@pytest.fixture(scope="module")
def config():
    return polymax.build_model("polymax_tiny_synth_panoptic").config


def _colours(image: Image.Image) -> set[tuple[int, int, int]]:
    return {tuple(int(v) for v in c) for c in np.asarray(image.convert("RGB")).reshape(-1, 3)}


def test_class_legend_lists_the_classes_shown_and_void_only_when_present(config):
    info = config.dataset
    semantic = np.array([[0, 1], [1, 0]], dtype=np.int32)
    plain = get_task("semantic").key([SegmentationResult(task="semantic", size=(2, 2), semantic=semantic)], config)
    with_void = semantic.copy()
    with_void[0, 0] = info.ignore_label
    voided = get_task("semantic").key([SegmentationResult(task="semantic", size=(2, 2), semantic=with_void)], config)
    table = visualize.palette(info.num_classes, info.colors)
    assert {tuple(int(v) for v in table[c]) for c in (0, 1)} <= _colours(plain)
    assert tuple(int(v) for v in table[2]) not in _colours(plain)          # a class not shown is not listed
    assert voided.height == plain.height + 16                               # one more entry: void
    assert (0, 0, 0) in _colours(voided)


def test_panoptic_key_reads_classes_from_the_panoptic_map(config):
    info = config.dataset
    panoptic = np.array([[2 * info.label_divisor + 1, info.ignore_label * info.label_divisor]], dtype=np.int64)
    result = SegmentationResult(task="panoptic", size=(1, 2), panoptic=panoptic)
    key = get_task("panoptic").key([result], config)
    assert tuple(int(v) for v in visualize.palette(info.num_classes, info.colors)[2]) in _colours(key)
    assert key.height == keys.legend(info.class_names, info.colors, present=[2], void=True, title="t").height


def test_depth_bar_runs_from_near_to_far_on_the_reference_scale(config):
    depth = get_task("depth")
    truth = DepthResult(task="depth", size=(1, 2), depth=np.array([[1.0, 4.0]], dtype=np.float32))
    key = depth.key([truth], config, reference=truth, height=150)
    assert key.height == 150
    top, bottom = keys.LINE + 6, 150 - keys.LINE - 8                          # the bar's rows
    bar = np.asarray(key)[top:bottom, 6 + 7]                                  # its middle column
    near, far = visualize.ramp(np.array([0.0, 1.0]), 0.0, 1.0)
    assert tuple(bar[0]) == tuple(far) and tuple(bar[-1]) == tuple(near)     # far on top


def test_normals_key_shows_the_colour_code_it_states():
    key = np.asarray(keys.normals_key(size=80))
    top = keys.LINE + 4
    centre = key[top + 40, 4 + 40]                   # n ≈ (0, 0, −1): facing the camera
    right = key[top + 40, 4 + 78]                    # n ≈ (+1, 0, 0)
    below = key[top + 78, 4 + 40]                    # n ≈ (0, +1, 0): y points down
    assert abs(int(centre[0]) - 128) <= 3 and abs(int(centre[1]) - 128) <= 3 and centre[2] <= 3
    assert right[0] > 240 and abs(int(right[1]) - 128) <= 3
    assert below[1] > 240 and abs(int(below[0]) - 128) <= 3


def test_normals_picture_has_a_key_and_the_data_file_stays_pure(config, tmp_path):
    normals = np.zeros((4, 5, 3), dtype=np.float32)
    normals[..., 2] = -1.0
    result = NormalsResult(task="normals", size=(4, 5), normals=normals)
    pictures = get_task("normals").pictures(result, config)
    assert [p.key for p in pictures] == ["normals_color"] and pictures[0].image.width > 5 + 80
    written = {}
    get_task("normals").write_files(result, config, lambda suffix, write: written.setdefault(suffix, write),
                                    base_name="x", source=None, npy=False)
    written["normals.png"](tmp_path / "n.png")
    assert np.asarray(Image.open(tmp_path / "n.png")).shape == (4, 5, 3)


def test_panel_never_cuts_a_caption_or_the_title():
    font_width = keys.text_width
    long = "a caption much wider than its tiny tile"
    title = "a title that is much longer than the tiles below it, and then some more words"
    image = visualize.panel([(long, np.zeros((4, 4, 3), np.uint8)), ("b", np.zeros((4, 4, 3), np.uint8))],
                            tile_height=10, title=title)
    assert image.width >= font_width(long) + font_width("b") + 3 * 6
    assert image.width >= font_width(title) + 12


def test_overlay_mixes_the_input_and_the_map():
    image = np.full((2, 2, 3), 200, np.uint8)
    colours = np.zeros((2, 2, 3), np.uint8)
    assert np.all(keys.overlay(image, colours, alpha=0.5) == 100)
    with pytest.raises(ValueError):
        keys.overlay(image, np.zeros((3, 2, 3), np.uint8))
