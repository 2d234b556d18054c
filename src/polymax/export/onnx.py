"""ONNX export of the network, and an onnxruntime runner for :class:`~polymax.inference.predictor.Predictor`.

The graph holds the network for one task (a multi-task model is exported once per ``--task``): ``images``
float32 (B, 3, H, W), RGB 0..255 → the model-resolution fields the task names in ``export_names``
(:mod:`polymax.tasks`):

    mask_logits (B, K, h, w), and by task: class_logits (B, K, C + 1) | depth (B, 1, h, w) + cluster_depth (B, K)
    | normals (B, 3, h, w) + cluster_normals (B, K, 3),   h = (H − 1)/s + 1 for the padded H (stride s = 4 or 2).

Post-processing is a separate, documented step in PyTorch / numpy (it is data-dependent: mask-wise merging
pastes a varying number of segments): :class:`OnnxRunner` feeds the graph and
:class:`~polymax.inference.predictor.Predictor` resizes, merges and crops exactly as for a PyTorch model.

Geometry. A *static* graph (``height``/``width``, default the preset's crop size) takes one image of exactly
that size and pads it to 32k+1 inside the graph. A ``dynamic`` graph takes any batch and any H, W **of the
form 32k+1** (e.g. 513, 641): the padding to 32k+1 is the caller's job (value 127.5, bottom / right), which
the Predictor does. The model's config travels in the file's metadata (``polymax_config``), so a graph is
usable without its model directory; ``polymax_task`` names the task it runs.

Exporters: 'torchscript' (default; fast, needs only ``onnx``) or 'dynamo' (``torch.export``; needs
``onnxscript``; much slower to export).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from polymax.config.model import ModelConfig
from polymax.errors import UserError
from polymax.geometry import padded_size
from polymax.structures import TaskOutput
from polymax.tasks import get_task
from polymax.tasks.base import rebuild_output

INPUT_NAME = "images"
METADATA_CONFIG = "polymax_config"
METADATA_DYNAMIC = "polymax_dynamic"
METADATA_TASK = "polymax_task"


@dataclass(frozen=True)
class ExportResult:
    """path: the .onnx file; task: the task it runs; outputs: its output names; input_size: (H, W), None when
    dynamic."""

    path: Path
    task: str
    outputs: tuple[str, ...]
    input_size: tuple[int, int] | None


class _Network(nn.Module):
    """model(images, task) → the tuple of the task output's fields in ``names`` (what the graph returns)."""

    def __init__(self, model: nn.Module, task: str, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.task, self.names = model, task, names

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        final = self.model(images, task=self.task)[self.task].final
        return tuple(getattr(final, name) for name in self.names)


def export_onnx(model: nn.Module, path: str | Path, *, task: str | None = None, height: int | None = None,
                width: int | None = None, dynamic: bool = False, opset: int = 17,
                exporter: str = "torchscript") -> ExportResult:
    """Write ``model`` (a polymax model with ``.config``) as an ONNX graph of one task (None = the model's only
    task); see the module docstring."""
    onnx = _require("onnx")
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise TypeError("export_onnx needs a model built by polymax.build_model / polymax.load_model")
    task = config.task(task).name
    if exporter not in ("torchscript", "dynamo"):
        raise UserError(f"exporter must be 'torchscript' or 'dynamo', got {exporter!r}")
    if dynamic and (height or width):
        raise UserError("give either --dynamic or --height/--width, not both")
    if (height is None) != (width is None):
        raise UserError("give both --height and --width (or neither, for the preset's crop size)")
    size = padded_size(tuple(config.crop_size)) if dynamic else (height, width) if height else tuple(config.crop_size)
    if min(size) < 1:
        raise UserError(f"--height and --width must be positive, got {size[0]}x{size[1]}")

    model = model.cpu().eval()
    # Batch 2 when dynamic, so no exporter treats the batch axis as the constant 1.
    sample = torch.full((2 if dynamic else 1, 3, *size), 127.5)
    sample[:, :, ::3] = 30.0
    with torch.no_grad():
        produced = model(sample[:1], task=task)[task].final
    names = tuple(name for name in get_task(task).export_names if getattr(produced, name, None) is not None)
    spatial = {name for name in names if getattr(produced, name).ndim == 4}
    network = _Network(model, task, names).eval()   # the exporter restores this module's mode afterwards
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {target.parent}: {error.strerror}") from error
    options = {"input_names": [INPUT_NAME], "output_names": list(names), "opset_version": opset}
    # The tracer warns about every Python-side shape check; they are constant for the geometry documented above.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            axes = None
            if dynamic:
                axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
                axes.update({n: ({0: "batch", 2: "map_height", 3: "map_width"} if n in spatial else {0: "batch"})
                             for n in names})
            torch.onnx.export(network, (sample,), str(target), dynamo=False, dynamic_axes=axes,
                              do_constant_folding=True, **options)
        else:
            _require("onnxscript")
            shapes = None
            if dynamic:
                shapes = ({0: torch.export.Dim("batch"), 2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO},)
            torch.onnx.export(network, (sample,), str(target), dynamo=True, dynamic_shapes=shapes, **options)
        model.eval()

    graph = onnx.load(str(target))
    header = {"format": "polymax", "format_version": _format_version(), "config": config.to_dict()}
    metadata = ((METADATA_CONFIG, json.dumps(header)), (METADATA_DYNAMIC, json.dumps(dynamic)), (METADATA_TASK, task))
    for key, value in metadata:
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(graph)
    onnx.save(graph, str(target))
    return ExportResult(path=target, task=task, outputs=names, input_size=None if dynamic else tuple(size))


class OnnxRunner:
    """Runs an exported graph in onnxruntime on the CPU; a :class:`~polymax.inference.predictor.Runner`."""

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        ort = _require("onnxruntime")
        path = Path(path)
        if not path.is_file():
            raise UserError(f"ONNX file not found: {path}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3   # constant-folding notices are not the user's business
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types for bad files
            raise UserError(f"{path}: not a loadable ONNX graph ({str(error).splitlines()[0]})") from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.config = _read_metadata(path, metadata)
        # Graphs of release 0.1 carry no task name: their model had exactly one task.
        self.task = metadata.get(METADATA_TASK) or self.config.task().name
        shape = self.session.get_inputs()[0].shape                          # [B, 3, H, W]; str = dynamic
        self.fixed_size = (shape[2], shape[3]) if all(isinstance(n, int) for n in shape[2:]) else None
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        self.output_names = [output.name for output in self.session.get_outputs()]

    def run_arrays(self, images: Tensor) -> dict[str, Tensor]:
        """(B, 3, H, W) → {output name: tensor}, in chunks of the graph's fixed batch size if it has one."""
        images = images.detach().float().cpu()
        step = self.fixed_batch or images.shape[0]
        parts = [self.session.run(None, {INPUT_NAME: images[i: i + step].numpy()})
                 for i in range(0, images.shape[0], step)]
        return {name: torch.cat([torch.from_numpy(part[j]) for part in parts])
                for j, name in enumerate(self.output_names)}

    def __call__(self, images: Tensor) -> TaskOutput:
        """The task's final output from the graph's outputs (fields the graph does not return are None)."""
        return rebuild_output(get_task(self.task).output_type, self.run_arrays(images))


def _read_metadata(path: Path, metadata: dict[str, str]) -> ModelConfig:
    """The ModelConfig stored by :func:`export_onnx`, with the saved-model version check."""
    text = metadata.get(METADATA_CONFIG)
    if text is None:
        raise UserError(f"{path} was not written by `polymax export onnx` (no {METADATA_CONFIG} metadata)")
    try:
        header = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: the {METADATA_CONFIG} metadata is not valid JSON ({error})") from error
    version = header.get("format_version")
    if header.get("format") != "polymax" or not isinstance(version, int) or version > _format_version():
        raise UserError(f"{path} holds a polymax config of format version {version}, newer than this polymax "
                        f"understands ({_format_version()}); upgrade polymax (`pip install -U polymax`)")
    return ModelConfig.from_dict(header["config"])


def _format_version() -> int:
    from polymax.io.pretrained import FORMAT_VERSION
    return FORMAT_VERSION


def _require(module: str):
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"the Python package {module!r} is needed for ONNX; install it with "
                        "`pip install 'polymax[onnx]'`" + (" and `pip install onnxscript`" if module == "onnxscript"
                                                           else "")) from None
