"""What a dense task is: the :class:`Task` interface every module of ``polymax.tasks`` implements.

A task owns everything that differs between dense tasks, so that the model, the training loop, the evaluator, the
predictor, the exporter, the server and the demo loop over tasks without reading a task-specific field:

=====================  ==============================================================================================
labels                 the :class:`~polymax.structures.Targets` fields it trains and evaluates on, with their kind
output_type            the typed :class:`~polymax.structures.TaskOutput` its head returns
build_head             its head on the kMaX trunk (one set of weights per prediction: 6 auxiliary + final)
build_baseline_head    its per-pixel head on the DeepLabv3+ baseline (None: no baseline for this task)
loss_section           the :class:`~polymax.config.train.TrainConfig` section holding its typed loss options
build_criterion        ``criterion(run: TaskRun, targets) -> LossTerms``
build_metrics          a :class:`TaskMetrics`: ``update(result, targets, index)`` per image, ``compute()``
build_decoder          ``decode(output, geometry) -> Result``: one image's raw output → maps at its own size
pictures / files       what a person looks at, and what ``polymax predict`` writes
tta_values / flip      the map flip-TTA averages, how a mirrored one is flipped back, and how it is finished
export_names           the fields of its output an ONNX graph returns
trivial_result, ...    the demo: a constant baseline fitted on training samples, the ground truth as a Result,
                       colour maps on a shared scale, and what each cluster stands for
=====================  ==============================================================================================

Adding a dense task is one module here plus its head and loss (docs/tasks.md has the recipe).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from polymax.config.model import ModelConfig, TaskConfig
from polymax.geometry import Geometry, resize_to_input
from polymax.structures import Result, Targets, TaskOutput

if TYPE_CHECKING:
    from polymax.data.sample import Sample


@dataclass(frozen=True)
class LabelField:
    """One ground-truth field a task reads. name: a field of Sample / Targets. kind: 'ids' (integer labels,
    nearest-neighbour resampling, a void value), 'scalar' (one float per pixel, 0 = invalid) or 'vector' (a
    unit vector per pixel, all-zero = invalid)."""

    name: str
    kind: str

    def present(self, values: torch.Tensor, *, ignore_label: int, label_divisor: int) -> torch.Tensor:
        """(B,) bool on the CPU: whether each image's ``values`` (B, ...) hold at least one valid label.
        Collation fills a missing label with its invalid value, so an image without this label reads False."""
        values = values.detach()
        if self.name == "panoptic":        # class * label_divisor + instance: void is the class
            valid = values // label_divisor != ignore_label
        elif self.kind == "ids":
            valid = values != ignore_label
        else:                              # 'scalar' / 'vector': 0 (all-zero) is invalid
            valid = values != 0
        return valid.flatten(1).any(dim=1).cpu()


@dataclass
class Picture:
    """A titled picture of one output (what the web page, the demo and the files show)."""

    key: str        # file-name suffix: NAME_{key}.png
    title: str
    image: Any      # PIL.Image.Image


class TaskMetrics(Protocol):
    """Accumulates one task's metrics over images at their original size."""

    def update(self, result: Result, targets: Targets, index: int) -> None: ...

    def compute(self) -> dict[str, float]: ...


Saver = Callable[[str, Callable[[Any], None]], None]   # save(suffix, write(path)) — see inference.outputs


class Task:
    """Base class of the task modules; one instance per task lives in ``polymax.tasks.TASKS``."""

    name: ClassVar[str]
    labels: ClassVar[tuple[LabelField, ...]]
    output_type: ClassVar[type[TaskOutput]]
    result_type: ClassVar[type[Result]]
    loss_section: ClassVar[str]
    export_names: ClassVar[tuple[str, ...]]
    needs_classes: ClassVar[bool] = False        # the label space must have classes (segmentation)
    # The data set's own submission format of the task's results (``predict --format official``): 'coco_panoptic'
    # (PNG + JSON), 'coco_results' (instance RLE JSON), 'label_png' (label-id PNGs), or None (no official format).
    official_format: ClassVar[str | None] = None

    # -- model --------------------------------------------------------------------------------------------------
    def build_head(self, config: ModelConfig, task: TaskConfig, *, num_predictions: int,
                   num_queries: int) -> nn.Module:
        """``head(layer: MaskPrediction, index) -> output_type`` on the kMaX trunk."""
        raise NotImplementedError

    def build_baseline_head(self, config: ModelConfig, task: TaskConfig, *, in_channels: int) -> nn.Module | None:
        """``head(features (B, Cin, h, w)) -> output_type`` on the per-pixel baseline, or None."""
        return None

    # -- training and evaluation ---------------------------------------------------------------------------------
    def build_criterion(self, config: ModelConfig, task: TaskConfig, options: Any) -> nn.Module:
        """``criterion(run: TaskRun, targets: Targets) -> LossTerms``; ``options``: the task's loss section."""
        raise NotImplementedError

    def build_metrics(self, config: ModelConfig, task: TaskConfig) -> TaskMetrics:
        raise NotImplementedError

    def build_decoder(self, config: ModelConfig, task: TaskConfig) -> Callable[[TaskOutput, Geometry], Result]:
        """``decode(output, geometry)``: one image's final output (batch of one, float32, at the network's
        model resolution) → the task's :class:`~polymax.structures.Result` at the image's original size."""
        raise NotImplementedError

    def perfect_output(self, targets: Targets, config: ModelConfig, task: TaskConfig, *, num_queries: int,
                       confidence: float = 50.0) -> TaskOutput:
        """The output a perfect model gives for ``targets`` (B, H, W labels), at the targets' resolution: what
        the task's output *means*, stated as data (the contract tests check that its loss is zero and that it
        decodes back to the labels). ``confidence``: the logit margin of the one-hot distributions."""
        raise NotImplementedError

    def mask_classes(self, panoptic: Tensor, crowd: Tensor | None, config: ModelConfig) -> list[int]:
        """The class of every ground-truth mask this task trains on in one image, in class order (what OneFormer
        writes one text per). panoptic: (H, W) ids class·label_divisor + instance; crowd: (H, W) bool or None —
        crowd segments and void are skipped."""
        raise NotImplementedError(f"the {self.name} task has no class masks")

    # -- pictures and files --------------------------------------------------------------------------------------
    def pictures(self, result: Result, config: ModelConfig) -> list[Picture]:
        return []

    def write_files(self, result: Result, config: ModelConfig, save: Saver, *, base_name: str,
                    source: str | None, npy: bool) -> None:
        """Write the task's files with ``save(suffix, write)`` (pictures are written by the caller)."""

    # -- flip test-time augmentation ----------------------------------------------------------------------------
    def tta_values(self, output: TaskOutput) -> Tensor:
        """The per-pixel map flip-TTA averages, (B, V, h, w) at model resolution."""
        raise ValueError(f"the {self.name} task has no flip test-time augmentation")

    def flip_back(self, values: Tensor) -> Tensor:
        """Undo a horizontal flip of the input on a (B, V, H, W) map of ``tta_values`` (default: mirror)."""
        return values.flip(-1)

    def finish_tta(self, values: Tensor, task: TaskConfig) -> Tensor:
        """After averaging: bring the map back into its valid set (unit normals, clamped depth)."""
        return values

    # -- the demo: a trivial baseline and a Fig.-8-style picture ---------------------------------------------------
    def trivial_result(self, config: ModelConfig, task: TaskConfig,
                       train: Sequence[Sample]) -> Callable[[Sample], Result]:
        """A constant predictor fitted on the ``train`` samples (the floor a trained model must beat):
        ``predict(sample)`` → this task's Result at the sample's size, whatever its image shows."""
        raise NotImplementedError(f"the {self.name} task has no trivial baseline")

    def ground_truth_result(self, sample: Sample, config: ModelConfig) -> Result:
        """The sample's labels as this task's Result, so that truth and prediction are drawn alike."""
        raise NotImplementedError(f"the {self.name} task cannot show its ground truth")

    def picture_map(self, result: Result, config: ModelConfig, *, reference: Result | None = None) -> np.ndarray:
        """(H, W, 3) uint8 colour map of the result's main output, without legend. ``reference`` (the ground
        truth) sets the colour scale of a continuous map, so that a prediction and its truth share one."""
        raise NotImplementedError(f"the {self.name} task has no colour map")

    def key(self, results: Sequence[Result], config: ModelConfig, *, reference: Result | None = None,
            height: int = 150) -> Any:
        """A PIL image that explains the colours ``picture_map`` gives ``results`` (a legend of the classes shown
        and void, a colour bar in metres on ``reference``'s scale, the normal colour code); ``height``: the height
        of the pictures it stands beside. None when the colours need no key."""
        return None

    def range_note(self, result: Result) -> str:
        """A short note on the value range ``picture_map`` shows for ``result`` (e.g. '0.8-5.1 m'); '' if none."""
        return ""

    def cluster_captions(self, output: TaskOutput, config: ModelConfig) -> list[tuple[float, str]]:
        """(sort key, caption) per cluster of a one-image output (batch of one): what each cluster stands for.
        The default names the clusters by index, for tasks whose clusters carry no value."""
        return [(float(k), f"cluster {k}") for k in range(output.mask_logits.shape[1])]


def output_slice(output: TaskOutput, index: int) -> TaskOutput:
    """The same output for one image of the batch (every tensor field sliced to index:index+1), in float32."""
    values = {}
    for item in fields(output):
        value = getattr(output, item.name)
        values[item.name] = value[index: index + 1].float() if isinstance(value, Tensor) else value
    return type(output)(**values)


def rebuild_output(output_type: type[TaskOutput], tensors: dict[str, Tensor]) -> TaskOutput:
    """A task output from named tensors (an exported graph's outputs); fields the graph lacks are None."""
    names = {item.name for item in fields(output_type)}
    return output_type(**{name: tensors.get(name) for name in names})


def probabilities_at_input(output: TaskOutput, geometry: Geometry) -> torch.Tensor:
    """(K, H, W) per-cluster probability maps on the original image (softmax at the network resolution)."""
    probabilities = resize_to_input(output.mask_logits.float(), geometry.network).softmax(dim=1)
    return geometry.dense(probabilities, network_resolution=True)[0]
