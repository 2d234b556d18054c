"""The surface-normal task (PolyMaX): K clusters, each a unit 3-vector; normal(x) = normalise(Σ_k P_k(x) · n_k).

Trains on camera-frame unit normals (all-zero = invalid) with the L2 (or angular) loss of ``TrainConfig.normals_loss``;
evaluates the mean / median / RMS angle and the share within 11.25° / 22.5° / 30°. Flip TTA mirrors the map
and negates x, then renormalises the average.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polymax.config.model import ModelConfig, TaskConfig
from polymax.geometry import Geometry
from polymax.losses.polymax_criterion import NormalsCriterion
from polymax.metrics import NormalMetrics
from polymax.model.heads.normals import NormalsHead
from polymax.model.heads.per_pixel import PerPixelNormalsHead
from polymax.structures import NormalsOutput, NormalsResult, Targets, TaskOutput
from polymax.tasks.base import LabelField, Picture, Saver, Task
from polymax.tasks.keys import normals_key, with_key
from polymax.tasks.visualize import colorize_normals

if TYPE_CHECKING:
    from polymax.data.sample import Sample


class NormalsTask(Task):
    name = "normals"
    labels = (LabelField("normals", "vector"),)
    output_type = NormalsOutput
    result_type = NormalsResult
    loss_section = "normals_loss"
    export_names = ("mask_logits", "normals", "cluster_normals")

    def build_head(self, config: ModelConfig, task: TaskConfig, *, num_predictions: int,
                   num_queries: int) -> nn.Module:
        return NormalsHead(in_channels=config.kmax_decoder.hidden, num_predictions=num_predictions,
                           mlp_layers=task.value_mlp_layers)

    def build_baseline_head(self, config: ModelConfig, task: TaskConfig, *, in_channels: int) -> nn.Module:
        return PerPixelNormalsHead(in_channels=in_channels)

    def build_criterion(self, config: ModelConfig, task: TaskConfig, options=None) -> nn.Module:
        return NormalsCriterion() if options is None else NormalsCriterion(loss=options.loss, weight=options.weight)

    def perfect_output(self, targets: Targets, config: ModelConfig, task: TaskConfig, *, num_queries: int,
                       confidence: float = 50.0) -> NormalsOutput:
        """The labelled unit normals where valid ((0, 0, 1) elsewhere); uniform cluster probabilities."""
        normals = targets.normals.float()                                           # (B, 3, H, W)
        valid = normals.abs().sum(dim=1, keepdim=True) > 0
        normals = torch.where(valid, normals, normals.new_tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1))
        batch, _, height, width = normals.shape
        mask_logits = torch.zeros(batch, num_queries, height, width)
        directions = normals.new_tensor([0.0, 0.0, 1.0]).expand(batch, num_queries, 3)
        return NormalsOutput(mask_logits=mask_logits, pixel_features=mask_logits, normals=normals,
                             cluster_normals=directions)

    def build_metrics(self, config: ModelConfig, task: TaskConfig) -> NormalsTaskMetrics:
        return NormalsTaskMetrics()

    def build_decoder(self, config: ModelConfig, task: TaskConfig):
        return decode_normals

    def pictures(self, result: NormalsResult, config: ModelConfig) -> list[Picture]:
        rgb = normals_rgb(result.normals)
        return [Picture("normals_color", "surface normals", with_key(rgb, self.key([result], config)))]

    def write_files(self, result: NormalsResult, config: ModelConfig, save: Saver, *, base_name: str,
                    source: str | None, npy: bool) -> None:
        """NAME_normals.png: RGB = (n + 1) / 2 · 255 per pixel (data, no key); NAME_normals.npy float32 (H, W, 3)."""
        from PIL import Image

        save("normals.png", lambda path: Image.fromarray(normals_rgb(result.normals)).save(path))
        if npy:
            save("normals.npy", lambda path: np.save(path, result.normals.astype(np.float32)))

    def tta_values(self, output: TaskOutput) -> Tensor:
        if getattr(output, "normals", None) is None:
            raise ValueError("the output has no normals; is this a normals model?")
        return output.normals.float()

    def flip_back(self, values: Tensor) -> Tensor:
        """A mirrored normal map: the image flips and each vector's x component changes sign."""
        return flip_normals(values)

    def finish_tta(self, values: Tensor, task: TaskConfig) -> Tensor:
        return F.normalize(values, dim=1, eps=1e-12)

    def trivial_result(self, config: ModelConfig, task: TaskConfig,
                       train: Sequence[Sample]) -> Callable[[Sample], NormalsResult]:
        """The most frequent normal direction of the training samples, the same at every pixel."""
        vector = most_frequent_normal(torch.stack([sample.normals for sample in train])).numpy()   # (3,)

        def predict(sample: Sample) -> NormalsResult:
            size = tuple(sample.image.shape[-2:])
            normals = np.ascontiguousarray(np.broadcast_to(vector, (*size, 3)))                # (H, W, 3)
            return NormalsResult(task=self.name, size=size, normals=normals)
        return predict

    def ground_truth_result(self, sample: Sample, config: ModelConfig) -> NormalsResult:
        normals = sample.normals.permute(1, 2, 0).contiguous().numpy()                        # (H, W, 3)
        return NormalsResult(task=self.name, size=tuple(normals.shape[:2]), normals=normals)

    def picture_map(self, result: NormalsResult, config: ModelConfig, *,
                    reference: NormalsResult | None = None) -> np.ndarray:
        return normals_rgb(result.normals)

    def key(self, results: Sequence[NormalsResult], config: ModelConfig, *, reference: NormalsResult | None = None,
            height: int = 150):
        return normals_key()

    def cluster_captions(self, output: TaskOutput, config: ModelConfig) -> list[tuple[float, str]]:
        """Each cluster's unit normal (x, y, z), ordered by its vertical component, largest y last (the
        per-pixel baseline has no cluster normals: cluster indices)."""
        if getattr(output, "cluster_normals", None) is None:
            return super().cluster_captions(output, config)
        return [(-v[1], "({:+.1f},{:+.1f},{:+.1f})".format(*v)) for v in output.cluster_normals[0].tolist()]


def most_frequent_normal(normals: Tensor, bins: int = 16) -> Tensor:
    """(N, 3, H, W) unit normals (all-zero = invalid) → (3,) the mean direction of the most populated cell of a
    bins³ grid over [−1, 1]³."""
    flat = normals.permute(1, 0, 2, 3).reshape(3, -1)
    flat = flat[:, flat.abs().sum(dim=0) > 0]                                               # (3, valid pixels)
    cells = ((flat + 1) / 2 * bins).long().clamp_(0, bins - 1)
    keys = cells[0] * bins * bins + cells[1] * bins + cells[2]
    mode = torch.bincount(keys).argmax()
    return F.normalize(flat[:, keys == mode].mean(dim=1), dim=0)


def flip_normals(normals: Tensor) -> Tensor:
    """Mirror a (B, 3, H, W) normal map left ↔ right, negating n_x."""
    sign = normals.new_tensor([-1.0, 1.0, 1.0]).view(1, 3, 1, 1)
    return normals.flip(-1) * sign


def decode_normals(output: NormalsOutput, geometry: Geometry) -> NormalsResult:
    normals = F.normalize(geometry.dense(output.normals), dim=1)      # bilinear shortens vectors: renormalise
    return NormalsResult(task="normals", size=geometry.original,
                         normals=normals[0].permute(1, 2, 0).contiguous().cpu().numpy())


def normals_rgb(normals: np.ndarray) -> np.ndarray:
    """(H, W, 3) unit normals → (H, W, 3) uint8 with RGB = (n + 1) / 2 · 255."""
    return colorize_normals(np.asarray(normals).transpose(2, 0, 1))


class NormalsTaskMetrics:
    def __init__(self) -> None:
        self.normals = NormalMetrics()

    def update(self, result: NormalsResult, targets: Targets, index: int) -> None:
        import torch

        prediction = torch.from_numpy(result.normals).permute(2, 0, 1)[None]          # (1, 3, H, W)
        self.normals.update(prediction, targets.normals[index: index + 1])

    def compute(self) -> dict[str, float]:
        return self.normals.compute()
