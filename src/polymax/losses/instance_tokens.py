"""The instance_tokens criterion: the kMaX losses on the clusters (class, masks — the instance task's), plus,
for every cluster the Hungarian matching pairs with a thing instance, its box and its mask tokens.

    match   = the kMaX criterion's Hungarian matching of the final output (``losses/matching.py``)
    crop_g  = the matched instance's mask cut out of its tight box, resized to S × S (``tokenizer/masks.py``)
    tokens  = tokenizer.encode(crop_g)                                              (M, n, n)
    total   = kMaX terms
              + Σ_outputs [ w_box · L1(box_k, box_g) + w_ce · CE(token_logits_k, tokens) ]   (final + each layer)
              + w_mask · dice(clamp(decoded crop_k, 0, 1), crop_g)                           (final only)

Means over the matched pairs of the batch (L1 also over the 4 coordinates, CE over the n × n tokens). The box
loss is plain L1 on normalised (x0, y0, x1, y1) (no GIoU). The clamp passes the gradient straight through, so a
decoded value outside [0, 1] still learns. A batch without a matched instance gives zero terms (in the graph).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polymax.losses.kmax_criterion import KMaXCriterion
from polymax.losses.targets import thing_instance_ids
from polymax.losses.terms import LossTerms
from polymax.structures import Targets, TaskRun
from polymax.tokenizer.masks import crop_mask, normalise_box, tight_box
from polymax.tokenizer.vqvae import VQVAE


def dice_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """() mean over the first axis of 1 − 2 Σ p·g / (Σ p + Σ g) on (M, S, S) maps (1e-5 smoothing both sides)."""
    inter = (prediction * target).flatten(1).sum(dim=1)
    total = prediction.flatten(1).sum(dim=1) + target.flatten(1).sum(dim=1)
    return (1 - (2 * inter + 1e-5) / (total + 1e-5)).mean()


class InstanceTokensCriterion(nn.Module):
    """``criterion(run, targets) -> LossTerms``: the kMaX terms and ``box_l1``, ``token_ce`` (and ``aux_<i>``
    versions of both) and ``token_mask_dice``."""

    def __init__(self, *, kmax: KMaXCriterion, tokenizer: VQVAE, box_weight: float = 5.0, token_ce: float = 1.0,
                 mask_weight: float = 5.0) -> None:
        super().__init__()
        self.kmax, self.tokenizer = kmax, tokenizer
        self.box_weight, self.token_ce, self.mask_weight = box_weight, token_ce, mask_weight

    def train(self, mode: bool = True) -> InstanceTokensCriterion:
        super().train(mode)
        self.tokenizer.eval()                       # frozen: its EMA codebook never updates
        return self

    @torch.no_grad()
    def matched_instances(self, run: TaskRun, targets: Targets) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The matched pairs of the final output: (M,) image and (M,) cluster indices, (M, 4) normalised GT boxes
        and (M, S, S) GT crops. The thing instances are numbered as the kMaX targets number them."""
        final, kmax = run.final, self.kmax
        mask_targets = kmax.prepare_targets(targets, tuple(final.mask_logits.shape[-2:]))
        match = kmax.match(final, mask_targets)
        size, crop = tuple(targets.panoptic.shape[-2:]), self.tokenizer.config.image_size
        images, slots, boxes, crops = [], [], [], []
        for b in range(targets.panoptic.shape[0]):
            things = match.gt_to_slot[b, : kmax.max_thing_id]
            if not bool((things >= 0).any()):
                continue
            ids, _ = thing_instance_ids(targets.panoptic[b].long(), None if targets.crowd is None else targets.crowd[b],
                                        thing_classes=kmax.thing_classes, ignore_label=kmax.ignore_label,
                                        label_divisor=kmax.label_divisor, max_thing_id=kmax.max_thing_id)
            for g in (things >= 0).nonzero().flatten().tolist():
                box = tight_box(ids == g)
                if box is None:
                    continue
                images.append(b)
                slots.append(int(things[g]))
                boxes.append(normalise_box(box, size))
                crops.append(crop_mask(ids == g, box, crop))
        device = final.mask_logits.device
        if not images:
            return (torch.zeros(0, dtype=torch.int64, device=device),) * 2 + (
                torch.zeros(0, 4, device=device), torch.zeros(0, crop, crop, device=device))
        return (torch.tensor(images, device=device), torch.tensor(slots, device=device),
                torch.stack(boxes).to(device), torch.stack(crops).to(device))

    def forward(self, run: TaskRun, targets: Targets) -> LossTerms:
        terms = self.kmax(run, targets)
        with torch.autocast(device_type=run.final.mask_logits.device.type, enabled=False):
            return terms.merged(LossTerms(self._token_terms(run, targets)))

    def _token_terms(self, run: TaskRun, targets: Targets) -> dict[str, Tensor]:
        images, slots, boxes, crops = self.matched_instances(run, targets)
        final = run.final
        if images.numel() == 0:
            zero = final.boxes.sum() * 0 + final.token_logits.sum() * 0
            return {"box_l1": zero, "token_ce": zero, "token_mask_dice": zero}
        self.tokenizer.to(crops.device)
        with torch.no_grad():
            tokens = self.tokenizer.encode(crops[:, None])                                      # (M, n, n)
        terms: dict[str, Tensor] = {}
        for prefix, output in [("", final)] + [(f"aux_{i}", aux) for i, aux in enumerate(run.aux)]:
            if self.box_weight:
                terms[prefix + "box_l1"] = self.box_weight * F.l1_loss(output.boxes[images, slots].float(), boxes)
            if self.token_ce:
                terms[prefix + "token_ce"] = self.token_ce * F.cross_entropy(
                    output.token_logits[images, slots].float(), tokens)
        if self.mask_weight and final.masks is not None:
            decoded = final.masks[images, slots].float()
            clamped = decoded + (decoded.clamp(0.0, 1.0) - decoded).detach()     # straight-through clamp
            terms["token_mask_dice"] = self.mask_weight * dice_loss(clamped, crops)
        return terms
