"""The depth_tokens task (AiT on our trunk, docs/ait.md): metric depth predicted as a grid of soft tokens of a
frozen VQ-VAE and decoded by its decoder.

Everything a person sees of it is the depth task's: the same labels, metrics (RMS, AbsRel, δ… on Eigen's crop
when asked), pictures, files and flip rule; what differs is the head (token distributions per grid cell), the
loss (token cross-entropy + SILog of the soft decode, ``TrainConfig.depth_tokens_loss``) and the output
(``token_logits`` beside ``depth``). The tokenizer: ``TaskConfig.tokenizer`` (preset) and ``tokenizer_weights``
(a folder written by ``polymax train-tokenizer``); its weights are saved inside the model folder.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from polymax.config.model import ModelConfig, TaskConfig
from polymax.errors import UserError
from polymax.geometry import Geometry
from polymax.losses.depth_tokens import DepthTokensCriterion
from polymax.model.heads.depth_tokens import DepthTokensOutput, TokenDepthHead
from polymax.structures import DepthResult, Targets
from polymax.tasks.depth import DepthTask
from polymax.tokenizer.frozen import build_frozen_tokenizer


def prediction_strides(config: ModelConfig) -> tuple[int, ...]:
    """The pixel stride of each kMaX prediction: the layers at os32, os16, os8, then the final one."""
    layers = config.kmax_decoder.num_layers
    return (32,) * layers[0] + (16,) * layers[1] + (8,) * layers[2] + (config.high_res_stride,)


def frozen_tokenizer(task: TaskConfig):
    return build_frozen_tokenizer(task.tokenizer, task.tokenizer_weights)


class DepthTokensTask(DepthTask):
    name = "depth_tokens"
    output_type = DepthTokensOutput
    loss_section = "depth_tokens_loss"
    export_names = ("mask_logits", "depth", "token_logits")

    def build_head(self, config: ModelConfig, task: TaskConfig, *, num_predictions: int,
                   num_queries: int) -> nn.Module:
        strides = prediction_strides(config)
        if len(strides) != num_predictions:
            raise UserError(f"depth_tokens: {num_predictions} predictions but kmax_decoder.num_layers gives "
                            f"{len(strides)}")
        if task.token_decode not in ("soft", "hard"):
            raise UserError(f"tasks.{task.name}.token_decode must be 'soft' or 'hard', got {task.token_decode!r}")
        return TokenDepthHead(pixel_channels=config.head.mask_dim, cluster_channels=config.kmax_decoder.hidden,
                              strides=strides, tokenizer=frozen_tokenizer(task), hidden=config.kmax_decoder.hidden,
                              decode=task.token_decode, min_depth=task.min_depth, max_depth=task.max_depth)

    def build_baseline_head(self, config: ModelConfig, task: TaskConfig, *, in_channels: int) -> nn.Module | None:
        return None

    def build_criterion(self, config: ModelConfig, task: TaskConfig, options=None) -> nn.Module:
        if task.tokenizer_weights and not Path(task.tokenizer_weights).is_dir():
            raise UserError(f"tokenizer folder {task.tokenizer_weights} does not exist; train one with "
                            "`polymax train-tokenizer` or set tasks.depth_tokens.tokenizer_weights")
        weights = {} if options is None else vars(options)
        return DepthTokensCriterion(tokenizer=frozen_tokenizer(task), **weights)

    def perfect_output(self, targets: Targets, config: ModelConfig, task: TaskConfig, *, num_queries: int,
                       confidence: float = 50.0) -> DepthTokensOutput:
        """The labelled depth (the middle of the range where invalid), and one-hot token logits at the frozen
        tokenizer's codes of the labels."""
        plain = super().perfect_output(targets, config, task, num_queries=num_queries, confidence=confidence)
        tokenizer = frozen_tokenizer(task)
        height, width = targets.depth.shape[-2:]
        ratio = tokenizer.ratio
        grid = ((height - 1) // ratio, (width - 1) // ratio)
        with torch.no_grad():
            tokens = tokenizer.encode(targets.depth[:, None, : grid[0] * ratio, : grid[1] * ratio].float())
        logits = confidence * F.one_hot(tokens, tokenizer.config.num_codes).permute(0, 3, 1, 2).float()
        return DepthTokensOutput(mask_logits=plain.mask_logits, pixel_features=plain.pixel_features,
                                 depth=plain.depth, cluster_depth=plain.cluster_depth, token_logits=logits)

    def build_decoder(self, config: ModelConfig, task: TaskConfig):
        def decode(output: DepthTokensOutput, geometry: Geometry) -> DepthResult:
            depth = geometry.dense(output.depth)[0, 0].cpu().numpy()
            return DepthResult(task=self.name, size=geometry.original, depth=depth)
        return decode
