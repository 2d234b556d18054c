"""ONNX export: onnxruntime on CPU matches PyTorch, and `polymax predict --onnx` uses the graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import polymax
from polymax.cli import main
from polymax.errors import UserError
from polymax.inference.predictor import Predictor

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from polymax.export.onnx import OnnxRunner, export_onnx  # noqa: E402  (after the skips)
from polymax.io.pretrained import save_pretrained

TOLERANCE = 1e-3   # max abs difference on logits / values allowed by the issue


@pytest.fixture(scope="module")
def panoptic_model():
    torch.manual_seed(0)
    return polymax.build_model("kmax_tiny_test").eval()


@pytest.fixture(scope="module")
def depth_model():
    torch.manual_seed(1)
    return polymax.build_model("polymax_tiny_synth_depth").eval()


@pytest.fixture(scope="module")
def static_graph(tmp_path_factory, panoptic_model):
    return export_onnx(panoptic_model, tmp_path_factory.mktemp("onnx") / "static.onnx")


@pytest.fixture(scope="module")
def dynamic_graph(tmp_path_factory, depth_model):
    return export_onnx(depth_model, tmp_path_factory.mktemp("onnx") / "dynamic.onnx", dynamic=True)


def _max_differences(runner: OnnxRunner, model, images: torch.Tensor) -> dict[str, float]:
    exported = runner.run_arrays(images)
    with torch.no_grad():
        reference = model(images).final
    return {name: float((value - getattr(reference, name)).abs().max()) for name, value in exported.items()}


def test_static_graph_matches_pytorch(static_graph, panoptic_model):
    assert static_graph.input_size == (65, 65)
    assert static_graph.outputs == ("mask_logits", "class_logits")
    runner = OnnxRunner(static_graph.path)
    assert runner.fixed_size == (65, 65)
    images = torch.rand(1, 3, 65, 65, generator=torch.Generator().manual_seed(0)) * 255
    differences = _max_differences(runner, panoptic_model, images)
    assert set(differences) == {"mask_logits", "class_logits"}
    assert max(differences.values()) <= TOLERANCE, differences
    assert runner.config == panoptic_model.config, "the model config travels in the graph's metadata"


def test_dynamic_graph_matches_pytorch_at_other_sizes(dynamic_graph, depth_model):
    assert dynamic_graph.input_size is None
    assert dynamic_graph.outputs == ("mask_logits", "depth", "cluster_depth")
    runner = OnnxRunner(dynamic_graph.path)
    assert runner.fixed_size is None
    for shape in [(1, 3, 129, 129), (2, 3, 97, 161)]:
        images = torch.rand(*shape, generator=torch.Generator().manual_seed(1)) * 255
        differences = _max_differences(runner, depth_model, images)
        assert max(differences.values()) <= TOLERANCE, (shape, differences)


def test_onnx_predictor_matches_the_pytorch_predictor(static_graph, dynamic_graph, panoptic_model, depth_model):
    image = np.random.default_rng(2).integers(0, 256, (23, 17, 3), dtype=np.uint8)
    from_onnx = Predictor.from_onnx(static_graph.path).predict(image)
    from_torch = Predictor(panoptic_model).predict(image)
    np.testing.assert_array_equal(from_onnx.semantic, from_torch.semantic)
    np.testing.assert_array_equal(from_onnx.panoptic, from_torch.panoptic)
    images = [image, np.zeros((40, 90, 3), dtype=np.uint8)]
    for resize in ("fit", "none"):
        onnx_results = Predictor.from_onnx(dynamic_graph.path, resize=resize, batch_size=2).predict_batch(images)
        torch_results = Predictor(depth_model, resize=resize).predict_batch(images)
        for a, b in zip(onnx_results, torch_results):
            np.testing.assert_allclose(a.depth, b.depth, atol=1e-4)


def test_static_graph_refuses_other_geometry(static_graph):
    with pytest.raises(UserError, match="exactly 65x65"):
        Predictor.from_onnx(static_graph.path, resize="none")


def test_predict_cli_runs_the_graph(tmp_path, dynamic_graph, capsys):
    from PIL import Image
    Image.fromarray(np.full((30, 50, 3), 90, dtype=np.uint8)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "a.png"), "--onnx", str(dynamic_graph.path), "--out", str(out),
                 "--no-progress"]) == 0
    assert (out / "a_depth.png").is_file() and (out / "a_depth_color.png").is_file()


def test_export_cli_with_check_and_bad_inputs(tmp_path, panoptic_model, capsys):
    save_pretrained(panoptic_model, tmp_path / "model")
    target = tmp_path / "graph.onnx"
    assert main(["export", "onnx", "--model", str(tmp_path / "model"), "--out", str(target),
                 "--height", "60", "--width", "70", "--check"]) == 0
    out = capsys.readouterr().out
    assert "images (1, 3, 60, 70)" in out and "max abs difference" in out
    values = [float(word.rstrip(",")) for word in out.split("difference:")[1].split()[1::2]]
    assert values and max(values) <= TOLERANCE

    assert main(["export", "onnx", "--model", str(tmp_path / "model"), "--out", str(target), "--height", "60"]) == 2
    assert "give both --height and --width" in capsys.readouterr().err
    (tmp_path / "junk.onnx").write_bytes(b"not a graph")
    with pytest.raises(UserError, match="not a loadable ONNX graph"):
        OnnxRunner(tmp_path / "junk.onnx")


def test_dynamo_exporter_refuses_opsets_below_18(tmp_path, panoptic_model, capsys):
    # At opset 17 its down-conversion leaves Split(num_outputs) of nn.MultiheadAttention: an invalid graph.
    with pytest.raises(UserError, match="opset 18 or newer, got --opset 17"):
        export_onnx(panoptic_model, tmp_path / "x.onnx", exporter="dynamo", opset=17)
    save_pretrained(panoptic_model, tmp_path / "model")
    assert main(["export", "onnx", "--model", str(tmp_path / "model"), "--out", str(tmp_path / "x.onnx"),
                 "--exporter", "dynamo", "--opset", "16"]) == 2
    assert "opset 18 or newer" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()


@pytest.mark.slow
def test_dynamo_exporter_matches_pytorch(tmp_path, panoptic_model):
    pytest.importorskip("onnxscript")
    result = export_onnx(panoptic_model, tmp_path / "dynamo.onnx", exporter="dynamo")
    images = torch.rand(1, 3, 65, 65, generator=torch.Generator().manual_seed(4)) * 255
    differences = _max_differences(OnnxRunner(result.path), panoptic_model, images)
    assert max(differences.values()) <= TOLERANCE, differences
