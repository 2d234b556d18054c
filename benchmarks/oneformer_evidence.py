"""OneFormer on the kMaX trunk, evidence on the synthetic rooms (docs/oneformer.md, issue 14).

For each seed, trains ``oneformer_kmax_tiny_synth`` (65 × 65 rooms, CPU) with the regular engine in five ways,
each for the same number of steps and batch:

    joint            a task drawn per image (1/3 each), query-text contrastive loss on
    joint_no_text    the same without the contrastive loss (oneformer.contrastive_weight=0)
    only_panoptic    one task with probability 1 (single-task training of the same model), contrastive on
    only_semantic    ...
    only_instance    ...

and evaluates every model on held-out validation rooms with every task token and every task's post-processing
(the wrong-token table): PQ (panoptic merging), mask AP (instance decoding) and mIoU (semantic decoding). BN
statistics are re-estimated on training rooms after training, as the demo does.

    PYTHONPATH=src python benchmarks/oneformer_evidence.py --steps 300 --seeds 0 1 2 --out oneformer_evidence

Seeds may run in parallel (``--seeds 0``, ``--seeds 1``, ... in separate processes, same --out). Writes
OUT/results_s<seeds>.json (every number) and prints the markdown tables of docs/oneformer.md (mean ± std over
seeds). Reports whatever comes out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

TOKENS = ("panoptic", "semantic", "instance")
METRICS = {"panoptic": ("pq", "pq_things", "pq_stuff"), "instance": ("ap",), "semantic": ("miou",)}
VARIANTS = {
    "joint": [],
    "joint_no_text": ["oneformer.contrastive_weight=0"],
    "only_panoptic": ["oneformer.semantic_probability=0", "oneformer.instance_probability=0"],
    "only_semantic": ["oneformer.panoptic_probability=0", "oneformer.instance_probability=0"],
    "only_instance": ["oneformer.panoptic_probability=0", "oneformer.semantic_probability=0"],
}


def train(variant: str, *, seed: int, steps: int, batch: int, out: Path, lr: float = 2e-3):
    from polymax.config.train import load_config
    from polymax.data import build_dataset
    from polymax.engine.assemble import build_collate, build_train_set, build_training_model
    from polymax.engine.objective import build_objective
    from polymax.engine.precise_bn import recalibrate_batch_norm
    from polymax.engine.train import fit

    config = load_config("configs/oneformer_kmax_tiny_synth.yaml", overrides=[
        "data.workers=0", f"data.batch_size={batch}", f"steps={steps}", f"optim.lr={lr}", "optim.warmup_steps=20",
        "augment.min_scale=0.75", "augment.max_scale=1.25", "augment.autoaugment_magnitude=0.5",
        f"checkpoint_every={steps}", "log_every=10", f"seed={seed}", "progress=false", "tensorboard=false",
        f"out_dir={out}", "device=cpu", "eval_every=0", *VARIANTS[variant]])
    model = build_training_model(config)
    fit(config, model=model, objective=build_objective(model.config, config),
        train_set=build_train_set(config, model.config), collate_fn=build_collate(model.config))
    rooms = build_dataset("synth", split="train", size=(65, 65), num_samples=batch * 8)
    images = (torch.stack([rooms[i].image for i in range(start, start + batch)]).float()
              for start in range(0, len(rooms), batch))
    recalibrate_batch_norm(MixedTasks(model), images)
    return model.eval()


class MixedTasks(torch.nn.Module):
    """``model(images)`` with the images' tasks cycling through the three tokens (for BN re-estimation)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model(images, sample_tasks=[TOKENS[i % 3] for i in range(images.shape[0])])


@torch.no_grad()
def evaluate_tokens(model, val) -> dict[str, dict[str, float]]:
    """token → {metric: value}: the model run under each token, each task's decoding and metrics applied."""
    from polymax.data.collate import collate
    from polymax.geometry import Geometry
    from polymax.tasks import get_task

    config = model.config
    decoders = {task: get_task(task).build_decoder(config, config.task(task)) for task in TOKENS}
    table = {}
    for token in TOKENS:
        metrics = {task: get_task(task).build_metrics(config, config.task(task)) for task in TOKENS}
        for index in range(len(val)):
            batch = collate([val[index]])
            size = tuple(batch.images.shape[-2:])
            geometry = Geometry(original=size, content=size, network=size)
            output = model(batch.images.float(), task=token)[token].final
            for task in TOKENS:
                metrics[task].update(decoders[task](output, geometry), batch.targets, 0)
        values = {}
        for task in TOKENS:
            computed = metrics[task].compute()
            values.update({name: computed[name] for name in METRICS[task]})
        table[token] = values
    return table


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def report(results: dict) -> str:
    seeds = sorted(results)
    lines = ["(a) joint vs single-task models (each model's own token; same steps and batch for every model)", "",
             "| model | PQ (panoptic token) | mask AP (instance token) | mIoU (semantic token) |",
             "|---|---|---|---|"]

    def cell(variant, token, metric):
        return mean_std([results[s][variant][token][metric] for s in seeds])
    for variant in ("joint", "joint_no_text"):
        lines.append(f"| {variant} | {cell(variant, 'panoptic', 'pq')} | {cell(variant, 'instance', 'ap')} | "
                     f"{cell(variant, 'semantic', 'miou')} |")
    lines.append(f"| single-task (three models) | {cell('only_panoptic', 'panoptic', 'pq')} | "
                 f"{cell('only_instance', 'instance', 'ap')} | {cell('only_semantic', 'semantic', 'miou')} |")
    for variant in ("joint", "joint_no_text"):
        lines += ["", f"(b) wrong-token table, {variant} model: rows = the token the model runs with, columns = the "
                  "metric (its own post-processing)", "",
                  "| token | PQ | PQ things | PQ stuff | mask AP | mIoU |", "|---|---|---|---|---|---|"]
        for token in TOKENS:
            lines.append(f"| {token} | " + " | ".join(cell(variant, token, m) for m in
                                                       ("pq", "pq_things", "pq_stuff", "ap", "miou")) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--val", type=int, default=32, help="held-out validation rooms")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=Path("oneformer_evidence"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (the first tables: 2e-3)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from polymax.data import build_dataset

    val = build_dataset("synth", split="val", size=(65, 65), num_samples=args.val)
    # One file per call, so that seeds can run in parallel processes; the report reads them all.
    path = args.out / f"results_s{'-'.join(map(str, args.seeds))}.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    for seed in args.seeds:
        for variant in args.variants:
            if variant in results.get(str(seed), {}):
                continue          # a finished run of an earlier call
            started = time.perf_counter()
            model = train(variant, seed=seed, steps=args.steps, batch=args.batch, lr=args.lr,
                          out=args.out / "runs" / f"{variant}_s{seed}")
            table = evaluate_tokens(model, val)
            results.setdefault(str(seed), {})[variant] = table
            args.out.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results, indent=1))
            print(f"seed {seed} {variant}: {time.perf_counter() - started:.0f} s "
                  + json.dumps({t: {k: round(v, 3) for k, v in table[t].items()} for t in TOKENS}), flush=True)
    for other in sorted(args.out.glob("results_s*.json")):
        results = {**json.loads(other.read_text()), **results}
    complete = {s: r for s, r in results.items() if all(v in r for v in VARIANTS)}
    if complete:
        print(report(complete))


if __name__ == "__main__":
    main()
