"""The PolyMaX paper's two claims on the synthetic rooms, in one command: cluster prediction against its
per-pixel twin, and the number of clusters K.

    python benchmarks/cluster_vs_pixel.py                     # ~20 min on 2 CPU cores; writes docs/cluster_vs_pixel.*
    python benchmarks/cluster_vs_pixel.py --steps 2 --out smoke   # a smoke run

Every run trains with the same steps, batch, learning rate, crop, seed and augmentation through the regular
training loop (``polymax.engine.train.fit``, precise BN at the end), then is evaluated on the same synthetic
validation rooms:
* cluster vs per-pixel: ``polymax_tiny_synth_{depth,normals}`` (kMaX trunk, K clusters) against
  ``deeplabv3plus_tiny_synth_{depth,normals}`` (the same backbone, DeepLabv3+ decoder, per-pixel head);
* K ablation: ``polymax_tiny_synth_depth`` with K ∈ {4, 8, 16, 32} and ``polymax_tiny_synth_normals`` with
  K ∈ {4, 8, 16} (``kmax_decoder.num_queries``), as the paper's Tab. 4 / 5.
Writes ``OUT/cluster_vs_pixel.md`` (a table) and ``OUT/cluster_vs_pixel.png`` (bars of depth RMS and normals
mean angle per run). A tiny model and a few hundred steps measure the synthetic rooms, not NYUD-v2.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

RUNS = ([("depth", "cluster", "polymax_tiny_synth_depth", None),
         ("depth", "per-pixel", "deeplabv3plus_tiny_synth_depth", None),
         ("normals", "cluster", "polymax_tiny_synth_normals", None),
         ("normals", "per-pixel", "deeplabv3plus_tiny_synth_normals", None)]
        + [("depth", f"K={k}", "polymax_tiny_synth_depth", k) for k in (4, 8, 16, 32)]
        + [("normals", f"K={k}", "polymax_tiny_synth_normals", k) for k in (4, 8, 16)])
HEADLINE = {"depth": ("rms", "m"), "normals": ("mean", "°")}


def train_and_evaluate(task: str, preset: str, clusters: int | None, *, steps: int, batch: int, lr: float,
                       size: int, seed: int, work: Path) -> dict[str, float]:
    from polymax.config.train import load_config
    from polymax.data import build_dataset
    from polymax.engine.assemble import build_collate, build_train_set, build_training_model
    from polymax.engine.objective import build_objective
    from polymax.engine.train import fit
    from polymax.inference.evaluate import evaluate

    overrides = [f"model.preset={preset}", f"data.crop_size=[{size},{size}]", "data.workers=0", "data.check=false",
                 f"data.batch_size={batch}", f"steps={steps}", f"optim.lr={lr}", f"optim.warmup_steps={steps // 10}",
                 "augment.min_scale=0.75", "augment.max_scale=1.25", "augment.copy_paste=false",
                 "augment.autoaugment_magnitude=0", f"precise_bn_batches={min(8, steps)}", "log_every=1000",
                 f"checkpoint_every={steps}", f"seed={seed}", "progress=false", "tensorboard=false",
                 f"out_dir={work / preset / str(clusters)}", "device=cpu"]
    if clusters is not None:
        overrides.append(f"model.kmax_decoder.num_queries={clusters}")
    config = load_config(None, overrides=overrides)
    model = build_training_model(config)
    fit(config, model=model, objective=build_objective(model.config, config),
        train_set=build_train_set(config, model.config), collate_fn=build_collate(model.config))
    rooms = build_dataset("synth", split="val", size=(size, size), num_samples=32)
    return evaluate(model.eval(), dataset=rooms, task=task)


def write_table(rows: list[dict], path: Path, settings: dict) -> None:
    lines = ["# Cluster prediction vs per-pixel, and K, on the synthetic rooms",
             "", f"`python benchmarks/cluster_vs_pixel.py {settings['command']}` — {settings['steps']} steps, "
             f"batch {settings['batch']}, lr {settings['lr']}, {settings['size']}² crops, seed {settings['seed']}; "
             "32 validation rooms.", "",
             "| task | run | preset | K | RMS (m) | AbsRel | δ1 | mean (°) | median (°) | < 11.25° | train s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        # Normals metrics also have an "rms" (of the angle): each task fills its own columns only.
        m = {f"{row['task']}/{key}": value for key, value in row["metrics"].items()}
        cell = lambda key, fmt="{:.4f}", m=m: fmt.format(m[key]) if key in m else "–"
        angles = (f"{cell('normals/mean', '{:.2f}')} | {cell('normals/median', '{:.2f}')} | "
                  f"{cell('normals/within_11_25')}")
        lines.append(f"| {row['task']} | {row['run']} | `{row['preset']}` | {row['k'] or 'preset'} | "
                     f"{cell('depth/rms')} | {cell('depth/abs_rel')} | {cell('depth/delta1')} | {angles} | "
                     f"{row['seconds']:.0f} |")
    path.write_text("\n".join(lines) + "\n")


def write_plot(rows: list[dict], path: Path) -> None:
    """Two bar groups (depth RMS, normals mean angle), one bar per run, drawn with PIL (no plotting library)."""
    from PIL import Image, ImageDraw

    width, height, margin = 900, 420, 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for column, task in enumerate(("depth", "normals")):
        key, unit = HEADLINE[task]
        runs = [r for r in rows if r["task"] == task and key in r["metrics"]]
        if not runs:
            continue
        left, top = margin + column * width // 2, margin
        area_w, area_h = width // 2 - 2 * margin, height - 3 * margin
        top_value = max(r["metrics"][key] for r in runs) * 1.1 or 1.0
        draw.text((left, 10), f"{task}: {key} ({unit}), lower is better", fill="black")
        bar = area_w // len(runs)
        for i, run in enumerate(runs):
            value = run["metrics"][key]
            h = int(area_h * value / top_value)
            x0, y1 = left + i * bar + 4, top + area_h
            colour = (200, 80, 60) if run["run"] == "per-pixel" else (60, 110, 200)
            draw.rectangle([x0, y1 - h, x0 + bar - 8, y1], fill=colour)
            draw.text((x0, y1 - h - 12), f"{value:.3g}", fill="black")
            draw.text((x0, y1 + 4), run["run"], fill="black")
    image.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--size", type=int, default=65)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--only", choices=("depth", "normals"), help="run one task's rows only")
    args = parser.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for task, run, preset, k in RUNS:
            if args.only and task != args.only:
                continue
            started = time.perf_counter()
            metrics = train_and_evaluate(task, preset, k, steps=args.steps, batch=args.batch, lr=args.lr,
                                         size=args.size, seed=args.seed, work=Path(scratch))
            rows.append({"task": task, "run": run, "preset": preset, "k": k, "metrics": metrics,
                         "seconds": time.perf_counter() - started})
            key, unit = HEADLINE[task]
            print(f"{task:8} {run:10} {preset:34} {key} {metrics[key]:.4f} {unit}  ({rows[-1]['seconds']:.0f} s)",
                  flush=True)
    command = " ".join(f"--{k} {v}" for k, v in (("steps", args.steps), ("batch", args.batch), ("lr", args.lr),
                                                   ("size", args.size), ("seed", args.seed)))
    settings = {**vars(args), "command": command}
    write_table(rows, args.out / "cluster_vs_pixel.md", settings)
    write_plot(rows, args.out / "cluster_vs_pixel.png")
    (args.out / "cluster_vs_pixel.json").write_text(json.dumps(rows, indent=1))
    print(f"wrote {args.out / 'cluster_vs_pixel.md'} and {args.out / 'cluster_vs_pixel.png'}")


if __name__ == "__main__":
    main()
