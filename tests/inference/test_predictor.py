"""Predictor: any image size and format in, typed maps at the original resolution out."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import polymax
from polymax.errors import UserError
from polymax.inference.predictor import Predictor
from polymax.io.pretrained import save_pretrained
from polymax.structures import DepthResult, SegmentationResult

# Post-processing that keeps every slot, so a random-weight model still produces panoptic segments.
KEEP_ALL = dict(postprocess__pixel_confidence=0.0, postprocess__thing_confidence=0.0,
                postprocess__stuff_confidence=0.0, postprocess__overlap=0.0, postprocess__thing_area_limit=0,
                postprocess__stuff_area_limit=0)


@pytest.fixture(scope="module")
def panoptic_model():
    torch.manual_seed(0)
    return polymax.build_model("kmax_tiny_test", **KEEP_ALL).eval()


@pytest.fixture(scope="module")
def depth_model():
    torch.manual_seed(1)
    return polymax.build_model("polymax_tiny_synth_depth").eval()


@pytest.fixture(scope="module")
def normals_model():
    torch.manual_seed(2)
    return polymax.build_model("polymax_tiny_synth_normals").eval()


def _image(height: int, width: int, channels: int | None = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (height, width) if channels is None else (height, width, channels)
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    image[: height // 2] //= 3          # some structure, so the maps are not uniform
    return image


@pytest.mark.parametrize("size", [(17, 23), (1500, 900), (900, 1500), (1, 1)])
def test_panoptic_maps_have_the_original_size(panoptic_model, size):
    result = Predictor(panoptic_model).predict(_image(*size), probabilities=True)
    assert isinstance(result, SegmentationResult) and result.task == "panoptic"
    assert result.size == size
    assert result.semantic.shape == size and result.semantic.dtype == np.int32
    assert result.panoptic.shape == size
    assert not hasattr(result, "depth") and not hasattr(result, "normals")
    k = panoptic_model.config.kmax_decoder.num_queries
    assert result.probabilities.shape == (k, *size)
    np.testing.assert_allclose(result.probabilities.sum(axis=0), 1.0, atol=1e-4)


def test_segments_match_the_panoptic_map(panoptic_model):
    info = panoptic_model.config.dataset
    result = Predictor(panoptic_model).predict(_image(60, 90))
    assert result.segments, "KEEP_ALL post-processing should paste at least one segment"
    void = info.ignore_label * info.label_divisor
    assert sum(s.area for s in result.segments) == int((result.panoptic != void).sum())
    for index, segment in enumerate(result.segments, start=1):
        assert segment.id == index
        rows, cols = np.nonzero(result.panoptic == segment.panoptic_id)
        assert segment.area == len(rows)
        assert segment.bbox == (cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1)
        assert segment.category == segment.panoptic_id // info.label_divisor
        assert segment.category_name == info.class_names[segment.category]
        assert segment.is_thing == (segment.category in info.thing_classes)


def test_grayscale_rgba_and_pil_follow_the_conversion_rule(panoptic_model):
    predictor = Predictor(panoptic_model)
    grey = _image(31, 45, channels=None)
    from_grey = predictor.predict(grey)
    from_rgb = predictor.predict(np.repeat(grey[..., None], 3, axis=-1))
    np.testing.assert_array_equal(from_grey.panoptic, from_rgb.panoptic)
    np.testing.assert_array_equal(predictor.predict(grey[..., None]).semantic, from_rgb.semantic)

    rgba = _image(31, 45, channels=4, seed=3)
    from_rgba = predictor.predict(rgba)
    np.testing.assert_array_equal(from_rgba.panoptic, predictor.predict(rgba[..., :3]).panoptic)
    np.testing.assert_array_equal(predictor.predict(Image.fromarray(rgba, "RGBA")).panoptic, from_rgba.panoptic)
    np.testing.assert_array_equal(predictor.predict(Image.fromarray(grey, "L")).panoptic, from_grey.panoptic)
    np.testing.assert_array_equal(predictor.predict(rgba[..., :3].astype(np.float32)).panoptic,
                                  from_rgba.panoptic)


def test_batches_equal_single_images(depth_model):
    images = [_image(40, 50, seed=1), _image(17, 23, seed=2), _image(80, 100, seed=3), _image(50, 40, seed=4)]
    single = Predictor(depth_model, batch_size=1)
    batched = Predictor(depth_model, batch_size=3)
    for alone, together in zip([single.predict(i) for i in images], batched.predict_batch(images)):
        assert together.size == alone.size
        np.testing.assert_allclose(together.depth, alone.depth, atol=1e-4)


def test_optimised_and_as_built_models_agree_and_the_model_is_left_alone(depth_model):
    from polymax.inference.fuse import FusedConv2d

    optimised, as_built = Predictor(depth_model), Predictor(depth_model, optimise=False)
    assert any(isinstance(m, FusedConv2d) for m in optimised.runner.model.modules())
    assert as_built.runner.model is depth_model
    assert not any(isinstance(m, FusedConv2d) for m in depth_model.modules())
    image = _image(40, 50, seed=5)
    np.testing.assert_allclose(optimised.predict(image).depth, as_built.predict(image).depth, rtol=1e-4, atol=1e-4)


def test_depth_is_metric_and_inside_the_range(depth_model):
    task = depth_model.config.task()
    for resize in ("fit", "none"):
        result = Predictor(depth_model, resize=resize).predict(_image(33, 70))
        assert isinstance(result, DepthResult) and result.task == "depth"
        assert result.depth.shape == (33, 70) and result.depth.dtype == np.float32
        assert task.min_depth <= result.depth.min() and result.depth.max() <= task.max_depth
        assert result.depth.std() > 0


def test_normals_are_unit_vectors_at_the_original_size(normals_model):
    result = Predictor(normals_model).predict(_image(45, 20))
    assert result.normals.shape == (45, 20, 3)
    np.testing.assert_allclose(np.linalg.norm(result.normals, axis=-1), 1.0, atol=1e-4)


def test_fit_geometry_keeps_the_aspect_ratio(panoptic_model):
    predictor = Predictor(panoptic_model)            # kmax_tiny_test: crop 65×65
    plan = predictor.geometry((1500, 900))
    assert plan.content == (65, 39) and plan.network == (65, 65)
    assert Predictor(panoptic_model, resize="none").geometry((17, 23)).network == (33, 33)
    assert Predictor(panoptic_model, size=(129, 257)).geometry((100, 100)).content == (129, 129)


def test_resize_none_on_a_large_image(panoptic_model):
    result = Predictor(panoptic_model, resize="none").predict(_image(900, 1500))
    assert result.panoptic.shape == (900, 1500)


def test_from_pretrained_gives_the_same_results(tmp_path, depth_model):
    save_pretrained(depth_model, tmp_path / "model")
    image = _image(30, 30)
    loaded = Predictor.from_pretrained(tmp_path / "model").predict(image)
    np.testing.assert_allclose(loaded.depth, Predictor(depth_model).predict(image).depth, atol=1e-6)


@pytest.mark.parametrize("bad, words", [
    (np.zeros((3, 20, 20), dtype=np.float32), "transpose(1, 2, 0)"),
    (np.zeros((20, 20, 3), dtype=np.int16), "dtype int16"),
    (np.zeros((0, 20, 3), dtype=np.uint8), "empty"),
    (np.full((4, 4, 3), np.nan, dtype=np.float32), "NaN"),
    ("picture.jpg", "image not found: picture.jpg"),
])
def test_bad_arrays_give_clear_errors(panoptic_model, bad, words):
    with pytest.raises(UserError) as error:
        Predictor(panoptic_model).predict(bad)
    assert words in str(error.value)


def test_bad_options_give_clear_errors(panoptic_model):
    with pytest.raises(UserError, match="resize"):
        Predictor(panoptic_model, resize="stretch")
    with pytest.raises(UserError, match="batch size"):
        Predictor(panoptic_model, batch_size=0)


def test_newer_checkpoint_version_is_refused_with_a_clear_message(tmp_path, depth_model):
    directory = save_pretrained(depth_model, tmp_path / "model")
    header = json.loads((directory / "config.json").read_text())
    header["format_version"] = 99
    (directory / "config.json").write_text(json.dumps(header))
    with pytest.raises(UserError, match="newer than this polymax understands.*upgrade polymax"):
        Predictor.from_pretrained(directory)

    header["format_version"] = 2
    header["config"]["tasks"][0]["future_option"] = True
    (directory / "config.json").write_text(json.dumps(header))
    with pytest.raises(UserError, match="newer or different version of polymax"):
        polymax.load_model(directory)


def test_a_huge_image_is_shrunk_before_the_network_and_mapped_back(depth_model):
    image = _image(300, 500)
    capped = Predictor(depth_model, resize="none", max_size=100)
    plan = capped.geometry((300, 500))
    assert plan.content == (60, 100) and plan.network == (65, 129) and plan.original == (300, 500)
    result = capped.predict(image)
    assert result.depth.shape == (300, 500)                        # written at the image's full size
    # The same as predicting the image shrunk beforehand (in uint8, antialiased) and resizing the answer.
    small = np.asarray(Image.fromarray(image).resize((100, 60), Image.BILINEAR))
    # ... in the full-size image's metres: the shrink by 1/5 made everything look 5× farther (tasks/depth.py).
    expected = Predictor(depth_model, resize="none", max_size=None).predict(small).depth * (60 / 300)
    assert np.abs(result.depth[::5, ::5] - expected).max() < 0.05 * float(expected.max())
    # Images within the cap are not touched: the default cap changes nothing for them.
    uncapped = Predictor(depth_model, max_size=None).predict(image).depth
    np.testing.assert_array_equal(Predictor(depth_model, max_size=500).predict(image).depth, uncapped)


def test_the_prepared_input_of_a_capped_image_is_never_full_size_float(depth_model, monkeypatch):
    import polymax.inference.predictor as module

    seen = []
    original = module.resize_bilinear

    def spy(maps, size):
        seen.append((maps.dtype, tuple(maps.shape[-2:])))
        return original(maps, size)
    monkeypatch.setattr(module, "resize_bilinear", spy)
    Predictor(depth_model, max_size=200).predict(_image(400, 800))
    assert seen and all(shape[1] <= 200 for _, shape in seen)      # the float resize starts at the capped size


def test_a_pil_phone_photo_is_predicted_upright(depth_model, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6                                   # display rotated 90° clockwise
    Image.fromarray(_image(10, 16)).save(tmp_path / "phone.png", exif=exif)
    result = Predictor(depth_model).predict(Image.open(tmp_path / "phone.png"))
    assert result.depth.shape == (16, 10)


def test_every_input_kind_gives_the_same_result(tmp_path):
    """Path, PIL image, HWC numpy, CHW tensor (uint8 and float), and the batched forms: identical results."""
    torch.manual_seed(0)
    predictor = Predictor(polymax.build_model("polymax_tiny_synth_depth").eval(), batch_size=2)
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (40, 52, 3), dtype=np.uint8) for _ in range(2)]
    Image.fromarray(arrays[0]).save(tmp_path / "a.png")
    reference = predictor.predict(arrays[0]).depth
    tensor = torch.from_numpy(arrays[0]).permute(2, 0, 1)
    for single in (str(tmp_path / "a.png"), tmp_path / "a.png", Image.fromarray(arrays[0]), tensor, tensor.float()):
        np.testing.assert_array_equal(predictor.predict(single).depth, reference)
    batched = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    for batch in (batched, np.stack(arrays), [tmp_path / "a.png", arrays[1]]):
        results = predictor.predict_batch(batch)
        assert len(results) == 2
        np.testing.assert_array_equal(results[0].depth, reference)
        np.testing.assert_array_equal(results[1].depth, predictor.predict(arrays[1]).depth)
    with pytest.raises(UserError, match="got a batch of 2; use predict_batch"):
        predictor.predict(batched)


def test_bf16_autocast_is_close_to_fp32_and_onnx_refuses_it():
    torch.manual_seed(0)
    model = polymax.build_model("polymax_tiny_synth_depth").eval()
    image = np.random.default_rng(1).integers(0, 256, (40, 52, 3), dtype=np.uint8)
    exact = Predictor(model).predict(image).depth
    half = Predictor(model, precision="bf16").predict(image).depth
    assert half.dtype == exact.dtype and not np.array_equal(half, exact)      # it did run in bf16
    assert np.abs(half - exact).max() < 0.05 * np.abs(exact).max()
    with pytest.raises(UserError, match="precision must be"):
        Predictor(model, precision="int8")
