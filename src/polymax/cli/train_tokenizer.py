"""``polymax train-tokenizer``: train a VQ-VAE tokenizer (AiT) of depth maps (any data set with depth) or of
instance-mask box crops (any data set with panoptic labels), save it as a model folder (``config.json`` +
``model.safetensors``) and report its reconstruction upper bound on held-out maps."""

from __future__ import annotations

import argparse
import json
import time
from functools import partial

HELP = "train a VQ-VAE depth or instance-mask tokenizer (AiT) and report its reconstruction upper bound"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="vqvae_tiny_synth_depth",
                        help="tokenizer preset (vqvae_nyu_depth, vqvae_tiny_synth_depth; instance masks: "
                             "vqvae_coco_mask, vqvae_tiny_synth_mask)")
    parser.add_argument("--dataset", default="synth",
                        help="a data set with depth (synth, nyuv2, taskonomy, folder), or for a mask tokenizer one "
                             "with panoptic labels (synth, coco, …): every thing instance's box crop")
    parser.add_argument("--data-root", default=None, help="its files (not needed for synth)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--eval-split", default="val", help="held-out maps for the upper bound")
    parser.add_argument("--train-samples", type=int, default=256, help="synth: rooms to train on (others: all)")
    parser.add_argument("--eval-samples", type=int, default=64,
                        help="held-out maps (mask tokenizers: images, all their instances) to score (at most)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate (AiT: 3e-4)")
    parser.add_argument("--mask-ratio", type=float, default=None,
                        help="share of input patches zeroed (0 = off; default 0.5 for depth, 0 for masks)")
    parser.add_argument("--mask-patch", type=int, default=16, help="side of a masked patch in pixels")
    parser.add_argument("--restart-every", type=int, default=20,
                        help="steps between restarts of unused codes (0 = off)")
    parser.add_argument("--no-data-init", action="store_true", help="keep AiT's random normal codebook")
    parser.add_argument("--min-depth", type=float, default=None, help="metric range (default: the data set's)")
    parser.add_argument("--max-depth", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", required=True, help="the tokenizer model folder to write")
    parser.add_argument("--json", action="store_true", help="print the held-out figures as JSON")


def load_depth_maps(dataset: str, *, root: str | None, split: str, count: int, size: int, seed: int) -> list:
    """(H, W) float32 metre maps of ``split``, all held in memory (synth: ``count`` rooms rendered at size × size;
    other held-out splits: the first ``count``)."""
    from polymax.data import build_dataset
    from polymax.errors import UserError

    options = {"size": (size, size), "num_samples": count, "seed": seed} if dataset == "synth" else {}
    samples = build_dataset(dataset, root=root, split=split, **options)
    limit = len(samples) if dataset == "synth" or split == "train" else min(len(samples), count)
    maps = []
    for index in range(limit):
        depth = samples[index].depth
        if depth is None:
            raise UserError(f"data set {dataset!r} has no depth in split {split!r}; the tokenizer needs depth maps")
        maps.append(depth.float())
    if not maps:
        raise UserError(f"data set {dataset!r} split {split!r} is empty")
    return maps


def load_instance_crops(dataset: str, *, root: str | None, split: str, count: int, size: int, seed: int,
                        crop: int) -> list:
    """(crop, crop) float32 0 / 1 box crops of every thing instance of ``split`` (synth: ``count`` rooms rendered
    at size × size; other held-out splits: the first ``count`` images)."""
    from polymax.data import build_dataset, dataset_info
    from polymax.errors import UserError
    from polymax.tokenizer.masks import instance_crops

    options = {"size": (size, size), "num_samples": count, "seed": seed} if dataset == "synth" else {}
    samples = build_dataset(dataset, root=root, split=split, **options)
    info = dataset_info(dataset)
    limit = len(samples) if dataset == "synth" or split == "train" else min(len(samples), count)
    crops = []
    for index in range(limit):
        sample = samples[index]
        if sample.panoptic is None:
            raise UserError(f"data set {dataset!r} has no panoptic labels in split {split!r}; a mask tokenizer "
                            "needs instances")
        crops += instance_crops(sample.panoptic.long(), thing_classes=info.thing_classes,
                                ignore_label=info.ignore_label, label_divisor=info.label_divisor, size=crop,
                                crowd=sample.crowd)
    if not crops:
        raise UserError(f"data set {dataset!r} split {split!r} has no thing instances")
    return crops


def run(args: argparse.Namespace) -> int:
    import torch

    from polymax.errors import UserError
    from polymax.io.pretrained import save_pretrained
    from polymax.tokenizer.build import build_tokenizer_model, is_tokenizer
    from polymax.tokenizer.train import (
        TokenizerTrainOptions,
        evaluate_mask_tokenizer,
        evaluate_tokenizer,
        train_tokenizer,
    )

    if not is_tokenizer(args.preset):
        raise UserError(f"unknown tokenizer preset {args.preset!r}; use vqvae_nyu_depth, vqvae_tiny_synth_depth, "
                        "vqvae_coco_mask or vqvae_tiny_synth_mask")
    if args.steps <= 0 or args.batch_size <= 0:
        raise UserError(f"--steps and --batch-size must be positive, got {args.steps}, {args.batch_size}")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = build_tokenizer_model(args.preset)
    masks = model.config.kind == "mask"
    mask_ratio = args.mask_ratio if args.mask_ratio is not None else (0.0 if masks else 0.5)
    if not 0 <= mask_ratio < 1:
        raise UserError(f"--mask-ratio must be in [0, 1), got {mask_ratio}")
    size = model.config.image_size
    if masks:      # every thing instance's box, cut out of rooms rendered at 65 × 65 (the instance model's crop)
        load = partial(load_instance_crops, crop=size, size=65 if args.dataset == "synth" else size)
    else:
        load = partial(load_depth_maps, size=size)
    train = load(args.dataset, root=args.data_root, split=args.split, count=args.train_samples, seed=args.seed)
    held_out = load(args.dataset, root=args.data_root, split=args.eval_split, count=args.eval_samples,
                    seed=args.seed)
    held_out = held_out if masks else held_out[: args.eval_samples]
    options = TokenizerTrainOptions(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                    mask_ratio=mask_ratio, mask_patch=args.mask_patch,
                                    restart_every=args.restart_every, data_init=not args.no_data_init,
                                    seed=args.seed)
    start = time.perf_counter()

    def log(step: int, figures: dict[str, float]) -> None:
        if (step + 1) % max(args.steps // 10, 1) == 0 or step == 0:
            print(f"step {step + 1}/{args.steps}  loss {figures['loss']:.4f}  recon {figures['reconstruction']:.4f}  "
                  f"perplexity {figures['perplexity']:.1f}  restarted {int(figures['restarted'])}", flush=True)

    train_tokenizer(model, train, options, log=None if args.json else log)
    if masks:
        scores = evaluate_mask_tokenizer(model, held_out)
    else:
        low, high = _depth_range(args)
        scores = evaluate_tokenizer(model, held_out, min_depth=low, max_depth=high)
    scores["train_seconds"] = round(time.perf_counter() - start, 1)
    save_pretrained(model, args.out, extra={"held_out": scores, "dataset": args.dataset,
                                            "eval_split": args.eval_split, "steps": args.steps})
    if args.json:
        print(json.dumps(scores))
    elif masks:
        print(f"held-out round trip ({len(held_out)} instance crops): IoU {scores['iou']:.4f}  pixel accuracy "
              f"{scores['pixel_accuracy']:.4f}  codes used {scores['codes_used']}/{model.config.num_codes}  "
              f"perplexity {scores['perplexity']:.1f}")
        print(f"wrote {args.out}")
    else:
        print(f"held-out round trip ({len(held_out)} maps): RMS {scores['rms']:.4f} m  AbsRel {scores['abs_rel']:.4f}  "
              f"δ1 {scores['delta1']:.4f}  codes used {scores['codes_used']}/{model.config.num_codes}  "
              f"perplexity {scores['perplexity']:.1f}")
        print(f"wrote {args.out}")
    return 0


def _depth_range(args: argparse.Namespace) -> tuple[float, float]:
    """--min-depth / --max-depth, defaulting to the synthetic rooms' range or NYUD-v2's (1e-3, 10 m)."""
    if args.dataset == "synth":
        from polymax.data.synthetic import SYNTH_MAX_DEPTH, SYNTH_MIN_DEPTH
        low, high = SYNTH_MIN_DEPTH, SYNTH_MAX_DEPTH
    else:
        low, high = 1e-3, 10.0
    return (args.min_depth if args.min_depth is not None else low, args.max_depth if args.max_depth is not None
            else high)
