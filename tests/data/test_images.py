"""Safe readers: every malformed file is a UserError that names it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from polymax.data.images import decode_normals_png, read_id_png, read_image, read_png, read_rgb_segment_ids
from polymax.errors import UserError


def test_read_image_is_uint8_chw(tmp_path) -> None:
    array = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    Image.fromarray(array).save(tmp_path / "x.png")
    image = read_image(tmp_path / "x.png")
    assert image.dtype == torch.uint8 and image.shape == (3, 2, 3)
    assert torch.equal(image.permute(1, 2, 0), torch.from_numpy(array))


def test_truncated_and_corrupt_files_are_named(tmp_path) -> None:
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="t.png"):
        read_image(tmp_path / "t.png")
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    with pytest.raises(UserError, match="junk.jpg"):
        read_image(tmp_path / "junk.jpg")
    with pytest.raises(UserError, match="missing.png"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(UserError, match=r"junk.jpg: not a PNG"):
        read_png(tmp_path / "junk.jpg", bit_depth=8, channels=1)


def test_bit_depth_and_channels_are_checked(tmp_path) -> None:
    Image.fromarray(np.zeros((2, 2), dtype=np.uint8)).save(tmp_path / "d8.png")
    Image.fromarray(np.full((2, 2), 4000, dtype=np.uint16)).save(tmp_path / "d16.png")
    assert read_png(tmp_path / "d16.png", bit_depth=16, channels=1)[0, 0] == 4000
    with pytest.raises(UserError, match="must be a 16-bit PNG but is 8-bit"):
        read_png(tmp_path / "d8.png", bit_depth=16, channels=1)
    with pytest.raises(UserError, match="must have 3 channel"):
        read_png(tmp_path / "d8.png", bit_depth=8, channels=3)
    assert read_id_png(tmp_path / "d16.png").dtype == np.int64
    with pytest.raises(UserError, match="16-bit single-channel"):
        read_image(tmp_path / "d16.png")


def test_palette_labels_keep_their_indices(tmp_path) -> None:
    image = Image.fromarray(np.array([[0, 3], [7, 255]], dtype=np.uint8), mode="L").convert("P")
    image.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
    image.save(tmp_path / "p.png")
    assert read_id_png(tmp_path / "p.png").tolist() == [[0, 3], [7, 255]]


def test_segment_ids_and_normals_decoding(tmp_path) -> None:
    rgb = np.array([[[1, 2, 3], [255, 255, 255]]], dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "pan.png")
    assert read_rgb_segment_ids(tmp_path / "pan.png").tolist() == [[1 + 2 * 256 + 3 * 65536, 256**3 - 1]]
    normals = decode_normals_png(np.array([[[0, 0, 0], [255, 128, 128], [128, 128, 128]]], dtype=np.uint8))
    assert normals[:, 0, 0].eq(0).all() and normals[:, 0, 2].eq(0).all()
    assert torch.allclose(normals[:, 0, 1], torch.tensor([1.0, 0.0, 0.0]), atol=0.01)
    assert torch.allclose(normals[:, 0, 1].norm(), torch.tensor(1.0))


def _exif_rotated(path, array: np.ndarray, orientation: int) -> None:
    """Save ``array`` with an EXIF orientation tag (as a phone camera does)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(array).save(path, exif=exif)


def test_exif_orientation_is_honoured(tmp_path) -> None:
    stored = np.zeros((2, 3, 3), dtype=np.uint8)
    stored[0, 0] = 255   # top-left red in the stored pixels
    _exif_rotated(tmp_path / "phone.png", stored, orientation=6)   # 6: display rotated 90° clockwise
    image = read_image(tmp_path / "phone.png")
    assert image.shape == (3, 3, 2), "a 90° EXIF rotation swaps height and width"
    assert image[0, 0, 1] == 255 and image[0, 0, 0] == 0   # the red pixel is now at the top right


def test_labels_are_read_without_rotation(tmp_path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.arange(6, dtype=np.uint8).reshape(2, 3)).save(tmp_path / "label.png", exif=exif)
    assert read_id_png(tmp_path / "label.png").shape == (2, 3)


def test_declared_size_is_checked_before_decoding(tmp_path, monkeypatch) -> None:
    Image.fromarray(np.zeros((40, 50, 3), dtype=np.uint8)).save(tmp_path / "big.png")
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(1))
    with pytest.raises(UserError, match=r"big.png: 50×40 = 2000 pixels is over the limit of 1999") as error:
        read_image(tmp_path / "big.png", max_pixels=1999)
    assert "--max-pixels" in str(error.value) and not decoded


def test_pillow_bomb_error_is_reported_as_too_large(tmp_path, monkeypatch) -> None:
    Image.fromarray(np.zeros((40, 50, 3), dtype=np.uint8)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)   # Pillow's own refusal: 2 × this at open
    with pytest.raises(UserError, match="bomb.png: .*over the limit"):
        read_image(tmp_path / "bomb.png", max_pixels=1500)


def test_one_bit_png_is_converted(tmp_path) -> None:
    Image.fromarray(np.array([[0, 255], [255, 0]], dtype=np.uint8)).convert("1").save(tmp_path / "bw.png")
    image = read_image(tmp_path / "bw.png")
    assert image.shape == (3, 2, 2) and image[:, 0, 1].tolist() == [255, 255, 255] and image[:, 0, 0].sum() == 0


def test_data_loading_takes_its_limit_from_the_environment(tmp_path, monkeypatch) -> None:
    Image.fromarray(np.zeros((20, 20), dtype=np.uint8)).save(tmp_path / "label.png")
    monkeypatch.setenv("POLYMAX_MAX_PIXELS", "100")
    with pytest.raises(UserError, match=r"label.png: 20×20 = 400 pixels is over the limit of 100 .*POLYMAX_MAX_PIXELS"):
        read_id_png(tmp_path / "label.png")
