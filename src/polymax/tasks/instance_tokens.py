"""The instance_tokens task (AiT's instance masks as tokens on our trunk, docs/ait.md): every kMaX cluster
predicts a class, a box and the tokens of its mask crop over a frozen mask VQ-VAE; inference soft-decodes the
tokens into an S × S crop, pastes it into the box at the network input, thresholds it at 0.5 and scores it by
the class probability.

Everything a person sees of it is the instance task's: the same labels, result type, COCO mask AP, pictures and
files. The clusters train as the instance task's (the kMaX losses, ``TrainConfig.loss``) and, for every matched
thing instance, the box L1, the token cross-entropy and the dice of the decoded crop (``loss.token_*_weight``).
The tokenizer is referenced as depth_tokens references its own: ``TaskConfig.tokenizer`` (a mask preset, '' =
vqvae_tiny_synth_mask) and ``tokenizer_weights`` (a folder of ``polymax train-tokenizer``); its weights are saved
inside the model folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from polymax.config.model import ModelConfig, TaskConfig
from polymax.errors import UserError
from polymax.geometry import Geometry
from polymax.losses.instance_tokens import InstanceTokensCriterion
from polymax.model.heads.instance_tokens import InstanceTokenHead, InstanceTokensOutput
from polymax.structures import SegmentationResult, Targets
from polymax.tasks.instance import InstanceTask
from polymax.tasks.panoptic import PanopticTask, measure_segments
from polymax.tasks.panoptic_merge import Segment
from polymax.tasks.segmentation import perfect_segmentation, require_classes
from polymax.tokenizer.frozen import build_frozen_tokenizer
from polymax.tokenizer.masks import box_pixels, crop_mask, normalise_box, paste_mask, tight_box

DEFAULT_MASK_TOKENIZER = "vqvae_tiny_synth_mask"


def frozen_mask_tokenizer(task: TaskConfig):
    tokenizer = build_frozen_tokenizer(task.tokenizer or DEFAULT_MASK_TOKENIZER, task.tokenizer_weights)
    if tokenizer.config.kind != "mask":
        raise UserError(f"tasks.{task.name}.tokenizer {task.tokenizer!r} is a {tokenizer.config.kind} tokenizer; "
                        "use a mask one (vqvae_tiny_synth_mask, vqvae_coco_mask)")
    return tokenizer


class InstanceTokensTask(InstanceTask):
    """The instance task's labels, metrics, pictures, files, demo and cluster captions; its own head, loss,
    perfect output and decoding."""

    name = "instance_tokens"
    output_type = InstanceTokensOutput
    export_names = ("mask_logits", "class_logits", "boxes", "token_logits", "masks")

    def build_head(self, config: ModelConfig, task: TaskConfig, *, num_predictions: int,
                   num_queries: int) -> nn.Module:
        if task.token_decode not in ("soft", "hard"):
            raise UserError(f"tasks.{task.name}.token_decode must be 'soft' or 'hard', got {task.token_decode!r}")
        return InstanceTokenHead(num_classes=require_classes(config, task), in_channels=config.kmax_decoder.hidden,
                                 num_predictions=num_predictions, tokenizer=frozen_mask_tokenizer(task),
                                 hidden=config.kmax_decoder.hidden, decode=task.token_decode)

    def build_baseline_head(self, config: ModelConfig, task: TaskConfig, *, in_channels: int) -> nn.Module | None:
        return None

    def build_criterion(self, config: ModelConfig, task: TaskConfig, options) -> nn.Module:
        if task.tokenizer_weights and not Path(task.tokenizer_weights).is_dir():
            raise UserError(f"tokenizer folder {task.tokenizer_weights} does not exist; train one with "
                            f"`polymax train-tokenizer --preset {task.tokenizer or DEFAULT_MASK_TOKENIZER}` or set "
                            f"tasks.{task.name}.tokenizer_weights")
        kmax = PanopticTask.build_criterion(self, config, task, options)      # kMaX's, also under OneFormer
        return InstanceTokensCriterion(kmax=kmax, tokenizer=frozen_mask_tokenizer(task),
                                       box_weight=options.token_box_weight, token_ce=options.token_ce_weight,
                                       mask_weight=options.token_mask_weight)

    def build_decoder(self, config: ModelConfig, task: TaskConfig) -> TokenInstanceDecoder:
        return TokenInstanceDecoder(config, task=self.name)

    def perfect_output(self, targets: Targets, config: ModelConfig, task: TaskConfig, *, num_queries: int,
                       confidence: float = 50.0) -> InstanceTokensOutput:
        """The perfect segmentation's clusters (cluster k = the k-th segment); each thing cluster also has its
        tight box, its crop as the decoded mask and one-hot token logits at the tokenizer's codes of the crop."""
        info = config.dataset
        plain = perfect_segmentation(targets.panoptic, num_queries=num_queries, num_classes=info.num_classes,
                                     ignore_label=info.ignore_label, label_divisor=info.label_divisor,
                                     confidence=confidence)
        tokenizer = frozen_mask_tokenizer(task)
        crop, size = tokenizer.config.image_size, tuple(targets.panoptic.shape[-2:])
        batch = targets.panoptic.shape[0]
        grid = crop // tokenizer.ratio
        boxes = torch.zeros(batch, num_queries, 4)
        masks = torch.zeros(batch, num_queries, crop, crop)
        for b in range(batch):
            ids = [int(i) for i in targets.panoptic[b].unique() if int(i) // info.label_divisor != info.ignore_label]
            for slot, segment in enumerate(ids):
                mask = targets.panoptic[b] == segment
                box = tight_box(mask)
                if segment // info.label_divisor in info.thing_classes and box is not None:
                    boxes[b, slot] = normalise_box(box, size)
                    masks[b, slot] = crop_mask(mask, box, crop)
        with torch.no_grad():
            tokens = tokenizer.encode(masks.flatten(0, 1)[:, None]).view(batch, num_queries, grid, grid)
        logits = confidence * F.one_hot(tokens, tokenizer.config.num_codes).permute(0, 1, 4, 2, 3).float()
        return InstanceTokensOutput(mask_logits=plain.mask_logits, pixel_features=plain.pixel_features,
                                    class_logits=plain.class_logits, boxes=boxes, token_logits=logits, masks=masks)


class TokenInstanceDecoder:
    """AiT's instance inference on the token clusters: the clusters whose most likely class of the C + 1 (void
    included) is a thing class are the candidates, scored by that class probability; each one's decoded crop is
    pasted into its box at the network input and thresholded at 0.5. The ``top_k`` best are painted in score
    order, each on the pixels no better instance took (a result holds one map); empty ones are dropped."""

    def __init__(self, config: ModelConfig, *, task: str, top_k: int = 100) -> None:
        self.info, self.task = config.dataset, task
        self.top_k = min(top_k, self.info.label_divisor - 1)

    def __call__(self, output: InstanceTokensOutput, geometry: Geometry) -> SegmentationResult:
        info = self.info
        class_score, which = output.class_logits[0].float().softmax(dim=-1).max(dim=-1)        # (K,) over C + 1
        is_thing = torch.isin(which, torch.as_tensor(info.thing_classes, dtype=torch.int64, device=which.device))
        candidates = [k for k in class_score.argsort(descending=True).tolist() if is_thing[k]]
        size = tuple(geometry.network)
        void = info.ignore_label * info.label_divisor
        panoptic = torch.full(size, void, dtype=torch.int64)
        boxes, crops = output.boxes[0].float().cpu(), output.masks[0].float().cpu().clamp(0.0, 1.0)
        segments = []
        for k in candidates:
            if len(segments) == self.top_k:
                break
            box = box_pixels(boxes[k], size)
            free = (paste_mask(crops[k], box, size) > 0.5) & (panoptic == void)
            if not bool(free.any()):
                continue
            category = int(which[k])
            panoptic_id = category * info.label_divisor + len(segments) + 1
            panoptic[free] = panoptic_id
            segments.append(Segment(id=panoptic_id, category=category, is_thing=True, area=int(free.sum()),
                                    score=float(class_score[k]), slot=k))
        panoptic = geometry.labels(panoptic).cpu().numpy().astype(np.int64)
        segments = measure_segments(panoptic, segments, info.class_names)
        semantic = np.where(panoptic == void, info.ignore_label, panoptic // info.label_divisor).astype(np.int32)
        return SegmentationResult(task=self.task, size=geometry.original, semantic=semantic, panoptic=panoptic,
                                  segments=segments)
