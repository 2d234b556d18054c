"""List-file depth sets (BTS / AdaBins split files), loader options and the labels a task needs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from polymax.data import build_dataset
from polymax.data.protocol import KITTI, NYU, protocol_of, resolve_protocol
from polymax.data.requirements import require_labels
from polymax.errors import UserError


def write_pair(root, stem: str, depth_units: np.ndarray) -> None:
    (root / "scene").mkdir(exist_ok=True)
    height, width = depth_units.shape
    Image.fromarray(np.full((height, width, 3), 90, dtype=np.uint8)).save(root / "scene" / f"rgb_{stem}.jpg")
    Image.fromarray(depth_units.astype(np.uint16)).save(root / "scene" / f"sync_depth_{stem}.png")


def test_bts_style_lines_with_leading_slash_focal_and_none(tmp_path):
    units = np.array([[0, 1000, 2500], [65535, 10, 300]])
    write_pair(tmp_path, "00001", units)
    write_pair(tmp_path, "00002", units * 0)
    (tmp_path / "train.txt").write_text("/scene/rgb_00001.jpg /scene/sync_depth_00001.png 518.8579\n\n"
                                        "scene/rgb_00002.jpg None\n")
    data = build_dataset("list", root=str(tmp_path), split="train")
    assert len(data) == 2 and data.focals == [518.8579, None]
    first = data[0]
    assert first.image.shape == (3, 2, 3) and first.depth.dtype == torch.float32
    assert torch.allclose(first.depth, torch.tensor([[0.0, 1.0, 2.5], [65.535, 0.01, 0.3]]))
    assert torch.all(data[1].depth == 0)                          # no ground truth → all invalid
    assert data.protocol is None
    kitti = build_dataset("list", root=str(tmp_path), split="train", depth_scale=1 / 256, protocol="kitti")
    assert torch.allclose(kitti[0].depth[0, 1], torch.tensor(1000 / 256)) and kitti.protocol == KITTI


def test_other_list_files_crop_and_range_overrides(tmp_path):
    write_pair(tmp_path, "00001", np.ones((4, 4)) * 1000)
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "eigen_test.txt").write_text("scene/rgb_00001.jpg scene/sync_depth_00001.png\n")
    data = build_dataset("list", root=str(tmp_path), split="test", lists={"test": "lists/eigen_test.txt"},
                         protocol="nyu", eval_crop=[1, 3, 1, 3], max_depth=8)
    assert data.protocol.eval_crop == (1, 3, 1, 3) and data.protocol.max_depth == 8.0
    assert data.protocol.size is None and data.protocol.min_depth == NYU.min_depth
    assert protocol_of(torch.utils.data.Subset(data, [0])) is data.protocol


@pytest.mark.parametrize("content, message", [
    (None, "list file not found"),
    ("a.jpg\n", "expected 'rgb_path depth_path"),
    ("a.jpg b.png f\n", "focal 'f'"),
])
def test_bad_lists_are_one_line_errors(tmp_path, content, message):
    if content is not None:
        (tmp_path / "train.txt").write_text(content)
    with pytest.raises(UserError, match=message):
        build_dataset("list", root=str(tmp_path), split="train")


def test_protocol_names_and_loader_options_are_checked(tmp_path):
    with pytest.raises(UserError, match="unknown depth protocol 'eigen'"):
        resolve_protocol("eigen")
    assert resolve_protocol(None) is None and resolve_protocol(None, max_depth=80).max_depth == 80
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(tmp_path / "images" / "a.png")
    with pytest.raises(UserError, match="takes no option 'normals_dir'"):
        build_dataset("folder", root=str(tmp_path), split="train", normals_dir=str(tmp_path))


def test_folder_sets_can_name_their_protocol(tmp_path):
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(tmp_path / "images" / "a.png")
    (tmp_path / "dataset.yaml").write_text("protocol: nyu\n")
    assert build_dataset("folder", root=str(tmp_path), split="train").protocol == NYU


def test_a_task_without_its_labels_names_the_option():
    from polymax.data.sample import Sample

    rooms = [Sample(image=torch.zeros(3, 4, 4, dtype=torch.uint8), depth=torch.ones(4, 4))]
    require_labels(rooms, ("depth",), preset="p", name="nyuv2", split="train")
    with pytest.raises(UserError, match="data.normals_dir=DIR") as error:
        require_labels(rooms, ("normals",), preset="p", name="nyuv2", split="train")
    assert "\n" not in str(error.value)
