"""AiT evidence on the synthetic rooms: the tokenizer's upper bound, soft vs hard decoding, the auxiliary loss,
mask augmentation, and the token head vs the PolyMaX cluster head vs the per-pixel baseline on one tiny trunk.

    python benchmarks/ait_evidence.py --out ait_evidence_out            # 3 seeds; docs/ait.md has the figures
    # or one process per seed, then: python benchmarks/ait_evidence.py --out OUT --merge OUT0 OUT1 OUT2

Per seed: two tokenizers (vqvae_tiny_synth_depth, with and without mask augmentation), then five depth models
trained the same number of steps with the same recipe as ``polymax demo`` (crop 65, batch 8, seeded), each
evaluated on the same held-out rooms with the standard depth metrics:

    ait            ait_tiny_synth_depth, mask-augmented tokenizer, CE + SILog of the soft decode; decoded soft and hard
    ait_no_aux     the same without the SILog term (token cross-entropy only)
    ait_no_mask    the same with the tokenizer trained without mask augmentation
    polymax        polymax_tiny_synth_depth (16 depth clusters)
    per_pixel      deeplabv3plus_tiny_synth_depth (the per-pixel baseline on the same backbone)

Writes OUT/results.json (every figure of every seed), OUT/table.md (mean ± std over seeds) and OUT/ait.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

SIZE = 65
METRICS = ("rms", "abs_rel", "delta1")


def train_tokenizer_for(seed: int, *, mask_ratio: float, steps: int, out: Path) -> dict:
    from polymax import build_model, save_pretrained
    from polymax.cli.train_tokenizer import load_depth_maps
    from polymax.data.synthetic import SYNTH_MAX_DEPTH, SYNTH_MIN_DEPTH
    from polymax.tokenizer.train import TokenizerTrainOptions, evaluate_tokenizer, train_tokenizer

    torch.manual_seed(seed)
    model = build_model("vqvae_tiny_synth_depth")
    train = load_depth_maps("synth", root=None, split="train", count=256, size=SIZE, seed=seed)
    held_out = load_depth_maps("synth", root=None, split="val", count=32, size=SIZE, seed=0)
    options = TokenizerTrainOptions(steps=steps, batch_size=16, lr=1e-3, mask_ratio=mask_ratio, seed=seed)
    train_tokenizer(model, train, options)
    scores = evaluate_tokenizer(model, held_out, min_depth=SYNTH_MIN_DEPTH, max_depth=SYNTH_MAX_DEPTH)
    save_pretrained(model, out, extra={"held_out": scores})
    return scores


def train_solver(preset: str, run_dir: Path, *, seed: int, steps: int, overrides: list[str]):
    from polymax.config.train import load_config
    from polymax.engine.assemble import build_collate, build_train_set, build_training_model
    from polymax.engine.objective import build_objective
    from polymax.engine.precise_bn import recalibrate_batch_norm
    from polymax.engine.train import fit
    from polymax.io.pretrained import load_model

    config = load_config(None, overrides=[
        f"model.preset={preset}", f"data.crop_size=[{SIZE},{SIZE}]", "data.workers=0", "data.batch_size=8",
        f"steps={steps}", "optim.lr=2e-3", "optim.warmup_steps=20", "augment.min_scale=0.75",
        "augment.max_scale=1.25", "augment.copy_paste=false", "augment.autoaugment_magnitude=0.5",
        f"checkpoint_every={steps}", "log_every=50", f"seed={seed}", "progress=false", "tensorboard=false",
        f"out_dir={run_dir}", "device=cpu", *overrides])
    model = build_training_model(config)
    fit(config, model=model, objective=build_objective(model.config, config),
        train_set=build_train_set(config, model.config), collate_fn=build_collate(model.config), resume=False)
    model = load_model(run_dir / "last")
    rooms = synth("train", 64)
    images = (torch.stack([rooms[i].image for i in range(start, start + 8)]).float() for start in range(0, 64, 8))
    recalibrate_batch_norm(model, images)     # a short run leaves BN's running statistics behind (as the demo)
    return model.eval()


def synth(split: str, count: int):
    from polymax.data import build_dataset
    return build_dataset("synth", split=split, size=(SIZE, SIZE), num_samples=count)


def evaluate(model, task: str, count: int, metrics: tuple[str, ...] = METRICS) -> dict[str, float]:
    from polymax.inference.evaluate import evaluate as run
    scores = run(model, dataset=synth("val", count), task=task, batch_size=1)
    return {key: float(scores[key]) for key in metrics}


def score_run(name: str, preset: str, overrides: list[str], *, seed: int, steps: int, eval_rooms: int,
              run_dir: Path, metrics: tuple[str, ...] = METRICS):
    """Train one run and score it on held-out rooms → (model, {name: figures}); the run named 'ait' is scored
    decoded soft (AiT) and again decoded hard ('ait_hard'). CPU seconds include the training."""
    started = time.process_time()
    model = train_solver(preset, run_dir, seed=seed, steps=steps, overrides=overrides)
    task = model.tasks[0]
    figures = {name: evaluate(model, task, eval_rooms, metrics)}
    if name == "ait":
        head = model.heads[task]
        head.decode = "hard"
        figures["ait_hard"] = evaluate(model, task, eval_rooms, metrics)
        head.decode = "soft"
    figures[name]["cpu_seconds"] = round(time.process_time() - started, 1)
    print(f"seed {seed} {name}: {figures[name]}", flush=True)
    return model, figures


def run_seed(seed: int, args: argparse.Namespace, out: Path) -> dict:
    figures: dict[str, dict] = {}
    tokenizers = {}
    for name, ratio in (("mask", 0.5), ("no_mask", 0.0)):
        tokenizers[name] = out / f"seed{seed}" / f"tokenizer_{name}"
        figures[f"tokenizer_{name}"] = train_tokenizer_for(seed, mask_ratio=ratio, steps=args.tokenizer_steps,
                                                           out=tokenizers[name])
    weights = "model.tasks.depth_tokens.tokenizer_weights"
    runs = {
        "ait": ("ait_tiny_synth_depth", [f"{weights}={tokenizers['mask']}"]),
        "ait_no_aux": ("ait_tiny_synth_depth", [f"{weights}={tokenizers['mask']}", "depth_tokens_loss.soft_silog=0"]),
        "ait_no_mask": ("ait_tiny_synth_depth", [f"{weights}={tokenizers['no_mask']}"]),
        "polymax": ("polymax_tiny_synth_depth", []),
        "per_pixel": ("deeplabv3plus_tiny_synth_depth", []),
    }
    models = {}
    for name, (preset, overrides) in runs.items():
        models[name], scores = score_run(name, preset, overrides, seed=seed, steps=args.steps,
                                         eval_rooms=args.eval_rooms, run_dir=out / f"seed{seed}" / name)
        figures.update(scores)
    if seed == args.seeds[0]:
        picture(models, tokenizers["mask"], out / "ait.png")
    return figures


def picture(models: dict, tokenizer_dir: Path, path: Path) -> None:
    """One held-out room: image, ground truth, tokenizer round trip, AiT soft / hard, PolyMaX, per-pixel."""
    from PIL import Image, ImageDraw

    from polymax import load_model
    from polymax.tasks.visualize import colorize_depth

    sample = synth("val", 4)[3]
    depth = sample.depth.numpy()
    low, high = float(depth[depth > 0].min()), float(depth.max())
    tokenizer = load_model(tokenizer_dir)
    with torch.no_grad():
        crop = sample.depth[None, None, :64, :64]
        round_trip = np.zeros_like(depth)
        round_trip[:64, :64] = tokenizer.decode(tokenizer.encode(crop))[0, 0].clamp(0.1, 10).numpy()
        panels = [("image", sample.image.permute(1, 2, 0).numpy()), ("ground truth", depth),
                  ("tokenizer round trip", round_trip)]
        head = models["ait"].heads["depth_tokens"]
        for label, model, decode in (("AiT soft", models["ait"], "soft"), ("AiT hard", models["ait"], "hard"),
                                     ("PolyMaX clusters", models["polymax"], None),
                                     ("per-pixel", models["per_pixel"], None)):
            if decode:
                head.decode = decode
            task = model.tasks[0]
            output = model(sample.image[None].float(), task=task)[task].final
            prediction = torch.nn.functional.interpolate(output.depth.float(), size=(SIZE, SIZE), mode="bilinear",
                                                         align_corners=True)[0, 0].numpy()
            panels.append((label, prediction))
        head.decode = "soft"
    scale = 3
    tiles = []
    for label, array in panels:
        rgb = array if array.ndim == 3 else colorize_depth(array, min_depth=low, max_depth=high)
        tile = Image.fromarray(np.asarray(rgb, dtype=np.uint8)).resize((SIZE * scale, SIZE * scale), Image.NEAREST)
        canvas = Image.new("RGB", (tile.width, tile.height + 16), "white")
        canvas.paste(tile, (0, 16))
        ImageDraw.Draw(canvas).text((4, 2), label, fill="black")
        tiles.append(canvas)
    sheet = Image.new("RGB", (sum(t.width for t in tiles) + 4 * (len(tiles) - 1), tiles[0].height), "white")
    x = 0
    for tile in tiles:
        sheet.paste(tile, (x, 0))
        x += tile.width + 4
    sheet.save(path)


def table_row(label: str, runs: list[dict[str, float]], metrics) -> str:
    """One markdown row: ``label``, then mean ± standard deviation over the runs (0 for one run) per metric."""
    cells = []
    for metric in metrics:
        values = [run[metric] for run in runs]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        cells.append(f"{statistics.mean(values):.3f} ± {spread:.3f}")
    return f"| {label} | " + " | ".join(cells) + " |"


def table(results: dict[int, dict]) -> str:
    rows = [("tokenizer round trip, mask aug. 0.5 (upper bound)", "tokenizer_mask"),
            ("tokenizer round trip, no mask aug.", "tokenizer_no_mask"),
            ("AiT-P token head, soft decode, CE + SILog aux", "ait"), ("… same model, hard decode", "ait_hard"),
            ("… without the aux loss (CE only), soft", "ait_no_aux"),
            ("… tokenizer without mask aug., soft", "ait_no_mask"),
            ("PolyMaX cluster depth head (16 clusters)", "polymax"), ("per-pixel DeepLabv3+ baseline", "per_pixel")]
    lines = ["| model (held-out rooms) | RMS (m) ↓ | AbsRel ↓ | δ1 ↑ |", "|---|---|---|---|"]
    lines += [table_row(label, [results[seed][key] for seed in results], METRICS) for label, key in rows]
    codes = [results[seed]["tokenizer_mask"]["codes_used"] for seed in results]
    lines.append(f"\nTokenizer codes used on held-out rooms (mask aug.): {codes} of 64 (per seed).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("ait_evidence_out"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tokenizer-steps", type=int, default=600)
    parser.add_argument("--steps", type=int, default=300, help="training steps of every depth model")
    parser.add_argument("--eval-rooms", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--merge", type=Path, nargs="*", default=None,
                        help="only merge the results.json of earlier runs (e.g. one process per seed) into OUT")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.process_time()
    if args.merge:
        results = {}
        for folder in args.merge:
            results.update(json.loads((folder / "results.json").read_text())["results"])
    else:
        results = {seed: run_seed(seed, args, args.out) for seed in args.seeds}
    (args.out / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                       "results": results}, indent=1))
    text = table(results)
    (args.out / "table.md").write_text(text + "\n")
    print(text)
    print(f"CPU time: {time.process_time() - started:.0f} s")


if __name__ == "__main__":
    main()
