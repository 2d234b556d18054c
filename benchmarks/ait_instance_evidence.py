"""AiT's instance masks as tokens on the synthetic rooms: the mask tokenizer's round trip, then the instance_tokens
task (class + box + 16 mask tokens per kMaX cluster) against the kMaX instance task on the same tiny trunk, steps
and recipe, both scored with COCO mask AP on the same held-out rooms.

    python benchmarks/ait_instance_evidence.py --out ait_instance_out            # 3 seeds; docs/ait.md has figures
    # or one process per seed, then: python benchmarks/ait_instance_evidence.py --out OUT --merge OUT0 OUT1 OUT2

Per seed: a vqvae_tiny_synth_mask tokenizer (box crops of every thing instance of 256 training rooms), then

    ait         ait_tiny_synth_instance on that tokenizer; decoded soft (AiT) and hard (argmax codes)
    ait_no_aux  the same without the dice of the decoded crop (token cross-entropy and box L1 only)
    kmax        the instance task on the same trunk (polymax_tiny_synth_panoptic's, its panoptic task renamed)

Writes OUT/results.json (every figure of every seed) and OUT/table.md (mean ± std over seeds).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from ait_evidence import score_run, table_row

SIZE = 65
METRICS = ("ap", "ap50", "ap75")


def train_mask_tokenizer(seed: int, *, steps: int, out: Path) -> dict:
    from polymax import build_model, save_pretrained
    from polymax.cli.train_tokenizer import load_instance_crops
    from polymax.tokenizer.train import TokenizerTrainOptions, evaluate_mask_tokenizer, train_tokenizer

    torch.manual_seed(seed)
    model = build_model("vqvae_tiny_synth_mask")
    crop = model.config.image_size
    train = load_instance_crops("synth", root=None, split="train", count=256, size=SIZE, seed=seed, crop=crop)
    held_out = load_instance_crops("synth", root=None, split="val", count=32, size=SIZE, seed=0, crop=crop)
    train_tokenizer(model, train, TokenizerTrainOptions(steps=steps, batch_size=32, lr=3e-3, mask_ratio=0.0,
                                                        seed=seed))
    scores = evaluate_mask_tokenizer(model, held_out)
    scores["full_box_iou"] = float(torch.stack(held_out).flatten(1).mean(dim=1).mean())   # a crop of all ones
    save_pretrained(model, out, extra={"held_out": scores})
    return scores


def run_seed(seed: int, args: argparse.Namespace, out: Path) -> dict:
    tokenizer = out / f"seed{seed}" / "tokenizer"
    if (tokenizer / "config.json").is_file():          # an earlier run's (the same seed and steps)
        scores = json.loads((tokenizer / "config.json").read_text())["extra"]["held_out"]
    else:
        scores = train_mask_tokenizer(seed, steps=args.tokenizer_steps, out=tokenizer)
    figures: dict[str, dict] = {"tokenizer": scores}
    weights = f"model.tasks.instance_tokens.tokenizer_weights={tokenizer}"
    runs = {
        "ait": ("ait_tiny_synth_instance", [weights]),
        "ait_no_aux": ("ait_tiny_synth_instance", [weights, "loss.token_mask_weight=0"]),
        "kmax": ("polymax_tiny_synth_panoptic", ["model.overrides={tasks.panoptic.name: instance}"]),
    }
    for name, (preset, overrides) in runs.items():
        if name in args.runs:
            # the depth evidence's recipe with 1024 pixel-contrastive samples
            figures.update(score_run(name, preset, ["loss.inst_disc_samples=1024", *overrides], seed=seed,
                                     steps=args.steps, eval_rooms=args.eval_rooms,
                                     run_dir=out / f"seed{seed}" / name, metrics=METRICS)[1])
    return figures


def table(results: dict[int, dict]) -> str:
    rows = [("AiT instance tokens (ait_tiny_synth_instance), soft decode", "ait"),
            ("… same model, hard decode", "ait_hard"), ("… without the decoded-mask dice, soft", "ait_no_aux"),
            ("kMaX instance task (cluster masks), same trunk and steps", "kmax")]
    lines = ["| model (held-out rooms) | mask AP | AP50 | AP75 |", "|---|---|---|---|"]
    for label, key in rows:
        if not all(key in results[seed] for seed in results):
            continue
        lines.append(table_row(label, [results[seed][key] for seed in results], METRICS))
    tokenizers = [results[seed]["tokenizer"] for seed in results]
    lines.append("\nTokenizer round trip on held-out instance crops, IoU per seed: "
                 f"{[round(t['iou'], 3) for t in tokenizers]} (a full box: "
                 f"{[round(t['full_box_iou'], 3) for t in tokenizers]}); codes used "
                 f"{[t['codes_used'] for t in tokenizers]} of 64.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("ait_instance_out"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tokenizer-steps", type=int, default=300)
    parser.add_argument("--steps", type=int, default=250, help="training steps of every instance model")
    parser.add_argument("--eval-rooms", type=int, default=32)
    parser.add_argument("--runs", nargs="+", default=["ait", "ait_no_aux", "kmax"], help="which models to train")
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
            results.update({int(k): v for k, v in json.loads((folder / "results.json").read_text()).items()})
    else:
        results = {seed: run_seed(seed, args, args.out) for seed in args.seeds}
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    text = table(results)
    (args.out / "table.md").write_text(text + "\n")
    print(text)
    print(f"CPU time {time.process_time() - started:.0f} s")


if __name__ == "__main__":
    main()
