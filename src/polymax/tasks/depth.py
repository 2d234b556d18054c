"""The depth task (PolyMaX): K adaptive depth bins, one per cluster; depth(x) = Σ_k P_k(x) · b_k, in metres.

Trains on metric depth (0 = invalid) with the task's recipe (``TaskConfig.depth_loss``: 'silog' = SILog + relative
squared + multi-scale gradient, NYU; 'charbonnier', Taskonomy and the per-pixel baseline), each weight
overridable in ``TrainConfig.depth_loss``. Evaluates RMS, AbsRel, SqRel, log10, RMS-log, SILog and δ1–3 (on
Eigen's crop when ``TaskConfig.depth_eval_crop`` is 'nyu'). Flip TTA averages depth and clamps it to the range.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from polymax.config.model import ModelConfig, TaskConfig
from polymax.errors import UserError
from polymax.geometry import Geometry
from polymax.losses.polymax_criterion import CHARBONNIER_DEPTH_WEIGHTS, NYU_DEPTH_WEIGHTS, DepthCriterion
from polymax.metrics import DepthMetrics
from polymax.model.heads.depth import DepthHead
from polymax.model.heads.per_pixel import PerPixelDepthHead
from polymax.structures import DepthOutput, DepthResult, Targets, TaskOutput
from polymax.tasks.base import LabelField, Picture, Saver, Task
from polymax.tasks.keys import depth_bar, with_key
from polymax.tasks.segmentation import save_uint16
from polymax.tasks.visualize import colorize_depth

if TYPE_CHECKING:
    from polymax.data.sample import Sample

MAX_DEPTH_MM = 65535
RECIPES = {"silog": NYU_DEPTH_WEIGHTS, "charbonnier": CHARBONNIER_DEPTH_WEIGHTS}


class DepthTask(Task):
    name = "depth"
    labels = (LabelField("depth", "scalar"),)
    output_type = DepthOutput
    result_type = DepthResult
    loss_section = "depth_loss"
    export_names = ("mask_logits", "depth", "cluster_depth")

    def build_head(self, config: ModelConfig, task: TaskConfig, *, num_predictions: int,
                   num_queries: int) -> nn.Module:
        return DepthHead(in_channels=config.kmax_decoder.hidden, num_predictions=num_predictions,
                         min_depth=task.min_depth, max_depth=task.max_depth, mlp_layers=task.value_mlp_layers)

    def build_baseline_head(self, config: ModelConfig, task: TaskConfig, *, in_channels: int) -> nn.Module:
        return PerPixelDepthHead(in_channels=in_channels, min_depth=task.min_depth, max_depth=task.max_depth)

    def build_criterion(self, config: ModelConfig, task: TaskConfig, options=None) -> nn.Module:
        if task.depth_loss not in RECIPES:
            raise UserError(f"depth_loss must be one of {sorted(RECIPES)}, got {task.depth_loss!r}")
        weights = RECIPES[task.depth_loss]
        overrides = {} if options is None else {k: v for k, v in vars(options).items() if v is not None}
        return DepthCriterion(min_depth=task.min_depth, max_depth=task.max_depth,
                              weights=replace(weights, **overrides))

    def perfect_output(self, targets: Targets, config: ModelConfig, task: TaskConfig, *, num_queries: int,
                       confidence: float = 50.0) -> DepthOutput:
        """The labelled depth where valid (the middle of the range elsewhere); uniform cluster probabilities."""
        depth = targets.depth.float()
        depth = torch.where(depth > 0, depth, torch.full_like(depth, 0.5 * (task.min_depth + task.max_depth)))
        batch, height, width = depth.shape
        mask_logits = torch.zeros(batch, num_queries, height, width)
        return DepthOutput(mask_logits=mask_logits, pixel_features=mask_logits, depth=depth[:, None],
                           cluster_depth=torch.full((batch, num_queries), float(depth.mean())))

    def build_metrics(self, config: ModelConfig, task: TaskConfig) -> DepthTaskMetrics:
        return DepthTaskMetrics(task)

    def build_decoder(self, config: ModelConfig, task: TaskConfig):
        return decode_depth

    def pictures(self, result: DepthResult, config: ModelConfig) -> list[Picture]:
        rgb = self.picture_map(result, config)
        return [Picture("depth_color", "depth", with_key(rgb, self.key([result], config, height=rgb.shape[0])))]

    def write_files(self, result: DepthResult, config: ModelConfig, save: Saver, *, base_name: str,
                    source: str | None, npy: bool) -> None:
        """NAME_depth.png: 16-bit millimetres (clipped to 65535); NAME_depth.npy: float32 metres (``npy``)."""
        save("depth.png", lambda path: save_uint16(depth_to_millimetres(result.depth), path))
        if npy:
            save("depth.npy", lambda path: np.save(path, result.depth.astype(np.float32)))

    def tta_values(self, output: TaskOutput) -> Tensor:
        if getattr(output, "depth", None) is None:
            raise ValueError("the output has no depth; is this a depth model?")
        return output.depth.float()

    def finish_tta(self, values: Tensor, task: TaskConfig) -> Tensor:
        return clamp_depth(values, task.min_depth, task.max_depth)

    def trivial_result(self, config: ModelConfig, task: TaskConfig,
                       train: Sequence[Sample]) -> Callable[[Sample], DepthResult]:
        """The per-pixel mean depth of the training samples (invalid zeros included), the same for every image."""
        mean = torch.stack([sample.depth for sample in train]).mean(dim=0).numpy()          # (H, W) metres

        def predict(sample: Sample) -> DepthResult:
            return DepthResult(task=self.name, size=tuple(sample.image.shape[-2:]), depth=mean)
        return predict

    def ground_truth_result(self, sample: Sample, config: ModelConfig) -> DepthResult:
        return DepthResult(task=self.name, size=tuple(sample.depth.shape), depth=sample.depth.numpy())

    def picture_map(self, result: DepthResult, config: ModelConfig, *,
                    reference: DepthResult | None = None) -> np.ndarray:
        """Colour-mapped depth on the range of ``reference`` (default: the result's own valid range)."""
        low, high = depth_range(reference if reference is not None else result)
        return colorize_depth(result.depth, min_depth=low, max_depth=high)

    def key(self, results: Sequence[DepthResult], config: ModelConfig, *, reference: DepthResult | None = None,
            height: int = 150):
        """The colour bar in metres on the scale ``picture_map`` uses (``reference``'s range, or the first
        result's); at most 300 pixels tall beside a large picture."""
        low, high = depth_range(reference if reference is not None else results[0])
        return depth_bar(low, high, height=min(max(height, 150), 300))

    def range_note(self, result: DepthResult) -> str:
        low, high = depth_range(result)
        return f"{low:.1f}-{high:.1f} m"

    def cluster_captions(self, output: TaskOutput, config: ModelConfig) -> list[tuple[float, str]]:
        """Each cluster's bin depth, nearest first (the per-pixel baseline has no bins: cluster indices)."""
        if getattr(output, "cluster_depth", None) is None:
            return super().cluster_captions(output, config)
        return [(value, f"{value:.2f} m") for value in output.cluster_depth[0].tolist()]


def depth_range(result: DepthResult) -> tuple[float, float]:
    """(lowest valid, highest) depth of a map in metres; 0 marks invalid pixels; (0, 1) when none is valid."""
    valid = result.depth[result.depth > 0]
    return (float(valid.min()), float(valid.max())) if valid.size else (0.0, 1.0)


def decode_depth(output: DepthOutput, geometry: Geometry) -> DepthResult:
    """Depth on the original image, in the original image's metres. An image resized by s before the network
    (``geometry.content`` vs ``original``: the predictor's fit or max-size shrink, eval's resize_longer_side)
    looks as if seen from 1/s times farther (a pinhole camera's apparent size is ∝ 1/depth, and resizing scales
    the focal length in pixels by s), so the network's depth is multiplied by s; at s = 1 nothing changes."""
    depth = geometry.dense(output.depth)[0, 0] * resize_scale(geometry)
    return DepthResult(task="depth", size=geometry.original, depth=depth.cpu().numpy())


def resize_scale(geometry: Geometry) -> float:
    """s, the factor the image was resized by before the network: the geometric mean of the two axes' ratios."""
    (height, width), (content_h, content_w) = geometry.original, geometry.content
    return float(((content_h / height) * (content_w / width)) ** 0.5)


def clamp_depth(depth: Tensor, min_depth: float, max_depth: float) -> Tensor:
    """Clamp to [min_depth, max_depth]; NaN → min_depth, +inf → max_depth, −inf → min_depth."""
    depth = torch.nan_to_num(depth, nan=min_depth, posinf=max_depth, neginf=min_depth)
    return depth.clamp(min_depth, max_depth)


def depth_to_millimetres(depth: np.ndarray) -> np.ndarray:
    """(H, W) metres → uint16 millimetres, rounded, clipped to 0..65535 (65.5 m)."""
    return np.clip(np.round(np.asarray(depth, dtype=np.float64) * 1000.0), 0, MAX_DEPTH_MM).astype(np.uint16)


class DepthTaskMetrics:
    def __init__(self, task: TaskConfig) -> None:
        self.depth = DepthMetrics(min_depth=task.min_depth, max_depth=task.max_depth, eval_crop=task.depth_eval_crop)
        self.protocol = None

    def use_protocol(self, protocol) -> None:
        """Score as the data set is scored (a :class:`polymax.data.protocol.DepthProtocol`): its crop, its valid
        range, predictions clamped to it (the depth cap) — instead of the model's own range and crop."""
        self.protocol = protocol
        self.depth = DepthMetrics(min_depth=protocol.min_depth, max_depth=protocol.max_depth,
                                  eval_crop=protocol.eval_crop)

    def update(self, result: DepthResult, targets: Targets, index: int) -> None:
        target = targets.depth[index: index + 1]
        size = tuple(target.shape[-2:])
        if self.protocol is not None and self.protocol.size is not None and size != self.protocol.size:
            raise UserError(f"depth protocol {self.protocol.name!r} scores {self.protocol.size[1]}x"
                            f"{self.protocol.size[0]} ground truth, got {size[1]}x{size[0]}; evaluate at the "
                            "original resolution or give the data set its own eval_crop")
        self.depth.update(torch.from_numpy(result.depth)[None, None], target)

    def compute(self) -> dict[str, float]:
        return self.depth.compute()


def depth_range_changes(source, target) -> list[str]:
    """What loading ``source``'s depth-head weights (a ModelConfig) into a ``target`` model does to the bins, one
    line per depth task whose range differs. The head maps a cluster to b = lo + (hi − lo)·σ(t): the same weights
    give the same σ(t), so in the new range every bin moves to lo' + (b − lo)·(hi' − lo')/(hi − lo)."""
    notes = []
    ranges = {task.name: (task.min_depth, task.max_depth) for task in source.tasks if task.name == "depth"}
    for task in target.tasks:
        if task.name not in ranges or ranges[task.name] == (task.min_depth, task.max_depth):
            continue
        (low, high), (new_low, new_high) = ranges[task.name], (task.min_depth, task.max_depth)
        factor = (new_high - new_low) / (high - low)
        notes.append(f"{task.name} head: the loaded bins were trained for {low:g}-{high:g} m, this model's range is "
                     f"{new_low:g}-{new_high:g} m, so every bin b becomes {new_low:g} + (b - {low:g}) x {factor:.4g} "
                     f"(a {high:g} m bin now means {new_high:g} m); set model.init_depth_range=keep to train in "
                     f"the source's {low:g}-{high:g} m range instead")
    return notes


def source_depth_ranges(source, target) -> dict[str, float]:
    """``build_model`` overrides giving ``target``'s depth tasks the depth range of ``source``'s same-named task
    (fine-tuning with model.init_depth_range=keep)."""
    ranges = {task.name: task for task in source.tasks if task.name == "depth"}
    overrides: dict[str, float] = {}
    for task in target.tasks:
        if task.name in ranges:
            overrides[f"tasks.{task.name}.min_depth"] = ranges[task.name].min_depth
            overrides[f"tasks.{task.name}.max_depth"] = ranges[task.name].max_depth
    return overrides
