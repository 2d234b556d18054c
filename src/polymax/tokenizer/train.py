"""Training a depth or instance-mask tokenizer (``polymax train-tokenizer``): AiT's recipe with the collapse
fixes.

    each step: a batch of S × S depth crops (metres, 0 = invalid) or S × S instance-mask crops (0 / 1; the maps
               are the crops themselves, ``polymax.tokenizer.masks.instance_crops``)
               input  = the crops with ceil(mask_ratio · #patches) random patch × patch squares set to 0 (AiT's mask
                        augmentation; the target stays the unmasked crop)
               loss   = MSE over valid target pixels + commitment · ‖sg(e) − z‖²; Adam; the EMA codebook updates
    step 0:    every code starts at an encoder output of the first batch (data-dependent initialisation)
    every restart_every steps: codes no input chose in that window move onto encoder outputs of the current batch

The reconstruction upper bound is the hard round trip decode(encode(depth)) on held-out maps, scored with the
standard depth metrics (RMS, AbsRel, δ1) over valid pixels, with the codes it used; for masks, the mean IoU of
the thresholded (0.5) round trip with the crop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from polymax.tokenizer.vqvae import VQVAE, crop_to_ratio


@dataclass(frozen=True)
class TokenizerTrainOptions:
    """steps, batch_size, lr (Adam; AiT: 3e-4, batch 8); mask_ratio / mask_patch: the mask augmentation (AiT: 0.5,
    16; ratio 0 = off); restart_every: the dead-code window in steps (0 = off); data_init: codes start at encoder
    outputs; seed: crops, masks and restarts."""

    steps: int = 1000
    batch_size: int = 8
    lr: float = 3e-4
    mask_ratio: float = 0.5
    mask_patch: int = 16
    restart_every: int = 20
    data_init: bool = True
    seed: int = 0


def mask_patches(maps: Tensor, *, ratio: float, patch: int, generator: torch.Generator) -> Tensor:
    """(B, 1, H, W) → a copy with ceil(ratio · #patches) random patch × patch squares per image set to 0 (the
    grid of whole patches from the top-left; H, W multiples of ``patch`` are covered completely)."""
    if ratio <= 0:
        return maps
    batch, _, height, width = maps.shape
    rows, cols = max(height // patch, 1), max(width // patch, 1)
    count = math.ceil(ratio * rows * cols)
    keep = torch.ones(batch, rows * cols)
    for image in range(batch):
        keep[image, torch.randperm(rows * cols, generator=generator)[:count]] = 0.0
    keep = keep.view(batch, 1, rows, cols).repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)
    full = torch.ones(batch, 1, height, width)
    full[..., : keep.shape[-2], : keep.shape[-1]] = keep[..., :height, :width]
    return maps * full.to(maps.device, maps.dtype)


def random_crops(maps: Sequence[Tensor], *, size: int, count: int, generator: torch.Generator) -> Tensor:
    """``count`` random size × size crops (zero-padded where a map is smaller) of (H, W) maps → (count, 1, S, S)."""
    crops = torch.zeros(count, 1, size, size)
    for slot in range(count):
        depth = maps[int(torch.randint(len(maps), (1,), generator=generator))]
        height, width = depth.shape
        top = int(torch.randint(max(height - size, 0) + 1, (1,), generator=generator))
        left = int(torch.randint(max(width - size, 0) + 1, (1,), generator=generator))
        piece = depth[top: top + size, left: left + size]
        crops[slot, 0, : piece.shape[0], : piece.shape[1]] = piece
    return crops


def train_tokenizer(model: VQVAE, maps: Sequence[Tensor], options: TokenizerTrainOptions, *,
                    log: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, float]:
    """Train ``model`` in place on random crops of the (H, W) depth ``maps``; returns the last step's figures."""
    generator = torch.Generator().manual_seed(options.seed)
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=options.lr)
    size = model.config.image_size - model.config.image_size % model.ratio
    usage = torch.zeros(model.config.num_codes)
    figures: dict[str, float] = {}
    model.train()
    for step in range(options.steps):
        target = random_crops(maps, size=size, count=options.batch_size, generator=generator)
        inputs = mask_patches(target, ratio=options.mask_ratio, patch=options.mask_patch, generator=generator)
        if step == 0 and options.data_init:
            with torch.no_grad():
                model.codebook.init_from_data(model.embed(inputs), generator=generator)
        run = model(inputs, target=target)
        optimiser.zero_grad(set_to_none=True)
        run.total.backward()
        optimiser.step()
        usage += torch.bincount(run.indices.flatten(), minlength=usage.numel()).float()
        restarted = 0
        if options.restart_every and (step + 1) % options.restart_every == 0:
            with torch.no_grad():
                restarted = model.codebook.restart_codes(usage == 0, model.embed(inputs), generator=generator)
            usage.zero_()
        figures = {"loss": float(run.total.detach()), "reconstruction": float(run.reconstruction.detach()),
                   "commitment": float(run.commitment.detach()), "perplexity": float(run.perplexity),
                   "restarted": float(restarted)}
        if log is not None:
            log(step, figures)
    return figures


@torch.no_grad()
def evaluate_tokenizer(model: VQVAE, maps: Sequence[Tensor], *, min_depth: float, max_depth: float,
                       batch_size: int = 16) -> dict[str, float]:
    """The hard round trip on (H, W) held-out depth maps (each cropped to a multiple of the ratio): the depth
    metrics over valid pixels, ``codes_used`` (distinct codes over all maps) and ``perplexity`` of their usage."""
    from polymax.metrics import DepthMetrics

    model.eval()
    metrics = DepthMetrics(min_depth=min_depth, max_depth=max_depth)
    counts = torch.zeros(model.config.num_codes)
    for start in range(0, len(maps), batch_size):
        batch = torch.stack([crop_to_ratio(depth, model.ratio) for depth in maps[start: start + batch_size]])[:, None]
        indices = model.encode(batch)
        counts += torch.bincount(indices.flatten(), minlength=counts.numel()).float()
        recon = model.decode(indices).clamp(min_depth, max_depth)
        metrics.update(recon, batch[:, 0])
    scores = metrics.compute()
    usage = counts / counts.sum()
    return {"rms": scores["rms"], "abs_rel": scores["abs_rel"], "delta1": scores["delta1"],
            "codes_used": int((counts > 0).sum()), "perplexity": float(torch.exp(-(usage * torch.log(usage + 1e-10))
                                                                                .sum()))}


@torch.no_grad()
def evaluate_mask_tokenizer(model: VQVAE, crops: Sequence[Tensor], *, batch_size: int = 64) -> dict[str, float]:
    """The hard round trip on (S, S) held-out 0 / 1 instance crops: ``iou`` (mean over crops of the IoU of
    decode(encode(crop)) > 0.5 with the crop), ``pixel_accuracy``, ``codes_used`` and ``perplexity``."""
    model.eval()
    counts = torch.zeros(model.config.num_codes)
    ious, correct, total = [], 0.0, 0
    for start in range(0, len(crops), batch_size):
        batch = torch.stack(list(crops[start: start + batch_size]))[:, None].float()
        indices = model.encode(batch)
        counts += torch.bincount(indices.flatten(), minlength=counts.numel()).float()
        predicted, truth = model.decode(indices) > 0.5, batch > 0.5
        union = (predicted | truth).flatten(1).sum(dim=1).float()
        inter = (predicted & truth).flatten(1).sum(dim=1).float()
        ious.append(torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)))
        correct += float((predicted == truth).sum())
        total += truth.numel()
    usage = counts / counts.sum()
    return {"iou": float(torch.cat(ious).mean()), "pixel_accuracy": correct / total,
            "codes_used": int((counts > 0).sum()),
            "perplexity": float(torch.exp(-(usage * torch.log(usage + 1e-10)).sum()))}
