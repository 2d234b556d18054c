"""ONNX export of the network, and an onnxruntime runner for :class:`~polymax.inference.predictor.Predictor`.

The graph holds the network for one task (a multi-task model is exported once per ``--task``, or as one graph
with the task as an input, below): ``images`` float32 (B, 3, H, W), RGB 0..255 → the model-resolution fields the
task names in ``export_names`` (:mod:`polymax.tasks`):

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

The task as an input (``task="any"`` or several names; ``polymax export onnx --task any``). A model whose tasks
differ only by the task token of the task-guided queries (OneFormer: panoptic, semantic and instance share the
trunk, the decoder and one class head; only the prompt and the post-processing differ) exports as ONE graph
with a second input ``task``, an int64 scalar: the index of the task in the JSON list of the metadata entry
``polymax_tasks`` (``polymax_task`` is then "any"). The graph looks the task's 77 prompt ids up in a constant
(T, 77) table, so it runs only the task asked for. Tasks with query centres of their own, another head or other
outputs (depth, normals) cannot share a graph: a one-line error says to export one graph per task.

Exporters: 'torchscript' (default; opset 17; fast, needs only ``onnx``) or 'dynamo' (``torch.export``; opset 18
or newer; needs ``onnxscript``; 4–8× the CPU time to export, the same outputs: docs/benchmarks.md,
docs/decisions.md).
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from polymax.config.model import ModelConfig
from polymax.errors import UserError
from polymax.geometry import padded_size
from polymax.model.cluster_decoder.task_queries import TASK_PROMPT_IDS, prompt_ids
from polymax.structures import TaskOutput
from polymax.tasks import get_task
from polymax.tasks.base import rebuild_output

INPUT_NAME = "images"
TASK_INPUT = "task"           # int64 scalar: an index into the graph's ``polymax_tasks`` list
ANY_TASK = "any"              # task= value of export_onnx: every task of the model, chosen by the task input
METADATA_CONFIG = "polymax_config"
METADATA_DYNAMIC = "polymax_dynamic"
METADATA_TASK = "polymax_task"
METADATA_TASKS = "polymax_tasks"
# The ONNX opset each exporter writes by default (dynamo: the lowest it converts to correctly).
DEFAULT_OPSET = {"torchscript": 17, "dynamo": 18}


@dataclass(frozen=True)
class ExportResult:
    """path: the .onnx file; task: the task it runs ("any" for a graph with a task input); outputs: its output
    names; input_size: (H, W), None when dynamic; tasks: the task input's choices in index order (() when the
    graph runs one task)."""

    path: Path
    task: str
    outputs: tuple[str, ...]
    input_size: tuple[int, int] | None
    tasks: tuple[str, ...] = ()


class _Network(nn.Module):
    """model(images, task) → the tuple of the task output's fields in ``names`` (what the graph returns)."""

    def __init__(self, model: nn.Module, task: str, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.task, self.names = model, task, names

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        final = self.model(images, task=self.task)[self.task].final
        return tuple(getattr(final, name) for name in self.names)


class _TaskInputNetwork(nn.Module):
    """model(images, task index) → the shared head's fields in ``names``: the run of ``model(images, task=...)``
    for a task of the shared, task-guided query group, with the prompt ids gathered from a (T, 77) table by the
    index instead of looked up by name (the only place the task enters; see :func:`task_input_tasks`)."""

    def __init__(self, model: nn.Module, tasks: tuple[str, ...], names: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.tasks, self.names = model, tasks, names
        self.register_buffer("prompts", torch.stack([prompt_ids(name) for name in tasks]), persistent=False)

    def forward(self, images: Tensor, task: Tensor) -> tuple[Tensor, ...]:
        model, decoder = self.model, self.model.kmax_decoder
        model._use_group(None)                       # the shared group's BatchNorm statistics
        pixels = model.pixel_decoder(model.backbone(model.preprocess(images)))
        ids = self.prompts[task].expand(images.shape[0], -1)                                  # (B, 77)
        guided = decoder.task_queries(pixels.high_res, ids).queries                           # (B, N, E)
        centres = decoder.initial_centres(images.shape[0], guided=guided)
        for layer, read in zip(decoder.layers, decoder.read_pixels(pixels)):     # KMaXDecoder.forward's loop
            centres, _ = layer(centres, read=read)
        final = model.mask_head(pixels.high_res, decoder.mask_projection(centres), decoder.class_projection(centres))
        output = model.heads[self.tasks[0]](final, len(decoder.layers))     # one head object serves every task
        return tuple(getattr(output, name) for name in self.names)


def task_input_tasks(model: nn.Module, task: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The tasks a graph with a task input answers (``"any"``: every task of the model, or the names given, in
    the model's order); a one-line UserError when they cannot share one graph."""
    config = model.config
    names = config.task_names if task == ANY_TASK else tuple(dict.fromkeys(
        [n.strip() for n in task.split(",")] if isinstance(task, str) else task))
    for name in names:
        config.task(name)                           # the one-line error for a task the model lacks
    names = tuple(name for name in config.task_names if name in names)
    advice = "; export one graph per task (polymax export onnx --task NAME)"
    decoder = model.kmax_decoder
    if getattr(decoder, "task_queries", None) is None or decoder.task_embedding is not None:
        raise UserError(f"the tasks of {config.preset} are not chosen by a task token (task-guided queries), so "
                        f"the task cannot be a graph input{advice}")
    for name in names:
        if name in decoder.task_centres or name not in TASK_PROMPT_IDS:
            raise UserError(f"task {name} of {config.preset} has query centres of its own, not a task token{advice}")
        if model.heads[name] is not model.heads[names[0]] or \
                get_task(name).export_names != get_task(names[0]).export_names:
            raise UserError(f"tasks {names[0]} and {name} of {config.preset} have different heads / outputs, so "
                            f"they cannot share a graph{advice}")
    return names


def export_onnx(model: nn.Module, path: str | Path, *, task: str | tuple[str, ...] | None = None,
                height: int | None = None, width: int | None = None, dynamic: bool = False, opset: int | None = None,
                exporter: str = "torchscript") -> ExportResult:
    """Write ``model`` (a polymax model with ``.config``) as an ONNX graph of one task (None = the model's only
    task), or of several with the task as an input (``"any"``, a tuple of names or "a,b"); see the module
    docstring."""
    onnx = _require("onnx")
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise TypeError("export_onnx needs a model built by polymax.build_model / polymax.load_model")
    several = task == ANY_TASK or isinstance(task, (tuple, list)) or (isinstance(task, str) and "," in task)
    tasks = task_input_tasks(model, task) if several and task is not None else ()
    task = tasks[0] if tasks else config.task(task if isinstance(task, str) else None).name
    if exporter not in DEFAULT_OPSET:
        raise UserError(f"exporter must be 'torchscript' or 'dynamo', got {exporter!r}")
    opset = DEFAULT_OPSET[exporter] if opset is None else opset
    if exporter == "dynamo" and opset < 18:
        # Below 18 the dynamo exporter's down-conversion leaves opset-18 attributes behind (Split's num_outputs,
        # from nn.MultiheadAttention: every OneFormer model), an invalid graph; docs/decisions.md.
        raise UserError(f"--exporter dynamo writes opset 18 or newer, got --opset {opset}")
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
    network: nn.Module = (_TaskInputNetwork(model, tasks, names) if tasks else _Network(model, task, names)).eval()
    inputs: tuple[Tensor, ...] = (sample, torch.tensor(0, dtype=torch.int64)) if tasks else (sample,)
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {target.parent}: {error.strerror}") from error
    input_names = [INPUT_NAME, TASK_INPUT] if tasks else [INPUT_NAME]
    options = {"input_names": input_names, "output_names": list(names), "opset_version": opset}
    # The tracer warns about every Python-side shape check; they are constant for the geometry documented above.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            axes = None
            if dynamic:
                axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
                axes.update({n: ({0: "batch", 2: "map_height", 3: "map_width"} if n in spatial else {0: "batch"})
                             for n in names})
            torch.onnx.export(network, inputs, str(target), dynamo=False, dynamic_axes=axes,
                              do_constant_folding=True, **options)
        else:
            _require("onnxscript")
            shapes = None
            if dynamic:
                shapes = ({0: torch.export.Dim("batch"), 2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO},
                          *([None] if tasks else []))
            # One file, as the TorchScript path writes (the largest preset, ConvNeXt-L, is far below 2 GB).
            torch.onnx.export(network, inputs, str(target), dynamo=True, dynamic_shapes=shapes,
                              external_data=False, **options)
        model.eval()

    graph = onnx.load(str(target))
    header = {"format": "polymax", "format_version": _format_version(), "config": config.to_dict()}
    metadata = [(METADATA_CONFIG, json.dumps(header)), (METADATA_DYNAMIC, json.dumps(dynamic)),
                (METADATA_TASK, ANY_TASK if tasks else task)]
    if tasks:
        metadata.append((METADATA_TASKS, json.dumps(list(tasks))))
    for key, value in metadata:
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(graph)
    onnx.save(graph, str(target))
    return ExportResult(path=target, task=ANY_TASK if tasks else task, outputs=names,
                        input_size=None if dynamic else tuple(size), tasks=tasks)


class OnnxRunner:
    """Runs an exported graph in onnxruntime on the CPU; a :class:`~polymax.inference.predictor.Runner`.

    ``task``: for a graph with a task input, the task to run (one of ``tasks``; needed when it has several);
    :meth:`for_task` gives the runner of another of its tasks on the same session. A one-task graph ignores it
    (the Predictor names the graph's task when another is asked for)."""

    def __init__(self, path: str | Path, *, threads: int | None = None, task: str | None = None) -> None:
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
        self.path = path
        # A graph with a task input lists its tasks (the input's index order); one-task graphs name their task,
        # and those of release 0.1 carry no task name: their model had exactly one task.
        listed = json.loads(metadata.get(METADATA_TASKS, "[]"))
        self.task_input = bool(listed)
        self.tasks: tuple[str, ...] = tuple(listed) or (metadata.get(METADATA_TASK) or self.config.task().name,)
        self.task = self.tasks[0] if len(self.tasks) == 1 or not self.task_input else self._checked(task)
        shape = self.session.get_inputs()[0].shape                          # [B, 3, H, W]; str = dynamic
        self.fixed_size = (shape[2], shape[3]) if all(isinstance(n, int) for n in shape[2:]) else None
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        self.output_names = [output.name for output in self.session.get_outputs()]

    def _checked(self, task: str | None) -> str:
        """``task`` if the graph's task input offers it; a one-line UserError otherwise."""
        if task in self.tasks:
            return str(task)
        asked = "no task named" if task is None else f"not {task!r}"
        raise UserError(f"{self.path} takes the task as an input: choose one of {', '.join(self.tasks)} "
                        f"(--task NAME), {asked}")

    def for_task(self, task: str) -> OnnxRunner:
        """This graph's runner for another of its tasks (the same onnxruntime session)."""
        if task == self.task:
            return self
        other = copy.copy(self)
        other.task = self._checked(task)
        return other

    def run_arrays(self, images: Tensor) -> dict[str, Tensor]:
        """(B, 3, H, W) → {output name: tensor}, in chunks of the graph's fixed batch size if it has one."""
        images = images.detach().float().cpu()
        step = self.fixed_batch or images.shape[0]
        feed = {TASK_INPUT: np.array(self.tasks.index(self.task), dtype=np.int64)} if self.task_input else {}
        parts = [self.session.run(None, {INPUT_NAME: images[i: i + step].numpy(), **feed})
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
