"""One model for every dense task, evidence on the synthetic rooms (docs/multitask.md, issue 19).

For each seed, trains with the regular engine on 65 × 65 rooms (CPU, batch 8):

    joint          polymax_multitask_tiny_synth (query groups), one task drawn per image, N steps
    joint_all      the same, every task on every image (oneformer.task_sampling=all), N steps
    tokens         polymax_multitask_tiny_synth_tokens (one shared task-guided group), a task per image, N steps
    single_<task>  five single-task models, N/5 steps each (the joint models' total): semantic, depth and normals
                   are polymax_tiny_synth_<task>; panoptic and instance are polymax_multitask_tiny_synth trained
                   on that task alone (its draw probability 1, the others 0), as oneformer_evidence's only_*
    long_<task>    the same five at N steps each (optional: --variants)

BN statistics are re-estimated on training rooms after training (as the demo does); every model is evaluated on
held-out validation rooms for each task it was trained on, beside the trivial baseline of each task. The tokens
model is also evaluated under every task token with every task's head and decoding (the wrong-token table), and
the joint model answering all five tasks is timed against the five single models.

    PYTHONPATH=src python benchmarks/multitask_evidence.py --steps 300 --seeds 0 1 2 --out multitask_evidence

Seeds may run in separate processes (``--seeds 0``, ``--seeds 1``, ... with the same --out). Writes
OUT/results_s<seeds>.json (every number) and prints the markdown tables of docs/multitask.md (mean ± std).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

TASKS = ("panoptic", "semantic", "instance", "depth", "normals")
# (metric key, higher is better) shown per task.
METRICS = {"panoptic": (("pq", True), ("pq_things", True)), "instance": (("ap", True),),
           "semantic": (("miou", True),), "depth": (("abs_rel", False), ("rms", False)),
           "normals": (("mean", False), ("within_11_25", True))}
GROUPS, TOKENS = "polymax_multitask_tiny_synth", "polymax_multitask_tiny_synth_tokens"
ALONE = {t: [f"oneformer.{o}_probability={int(o == t)}" for o in TASKS] for t in ("panoptic", "instance")}


def variants(steps: int) -> dict[str, tuple[str, list[str], tuple[str, ...], int]]:
    """name → (preset, overrides, tasks trained, steps)."""
    table = {"joint": (GROUPS, ["oneformer.task_sampling=image"], TASKS, steps),
             "joint_all": (GROUPS, ["oneformer.task_sampling=all"], TASKS, steps),
             "tokens": (TOKENS, [], TASKS, steps)}
    for prefix, count in (("single", max(steps // len(TASKS), 1)), ("long", steps)):
        for task in TASKS:
            preset = GROUPS if task in ALONE else f"polymax_tiny_synth_{task}"
            extra = ["oneformer.task_sampling=image", *ALONE[task]] if task in ALONE else []
            table[f"{prefix}_{task}"] = (preset, extra, (task,), count)
    return table


def train(preset: str, extra: list[str], tasks: tuple[str, ...], *, steps: int, seed: int, batch: int, lr: float,
          out: Path):
    from polymax.config.train import load_config
    from polymax.data import build_dataset
    from polymax.engine.assemble import build_collate, build_train_set, build_training_model
    from polymax.engine.objective import build_objective
    from polymax.engine.precise_bn import recalibrate_batch_norm
    from polymax.engine.train import fit

    # The recipe of configs/polymax_multitask_tiny_synth.yaml with the demo's short-run schedule, for every model
    # (a large lr: the recipe's 1e-3 leaves a few-hundred-step run of these tiny models far from trained).
    config = load_config("configs/polymax_multitask_tiny_synth.yaml", overrides=[
        f"model.preset={preset}", "data.workers=0", f"data.batch_size={batch}", f"steps={steps}", f"optim.lr={lr}",
        "optim.warmup_steps=20", "augment.min_scale=0.75", "augment.max_scale=1.25",
        "augment.autoaugment_magnitude=0.5", f"checkpoint_every={steps}", "log_every=10", f"seed={seed}",
        "progress=false", "tensorboard=false", f"out_dir={out}", "device=cpu", "eval_every=0", *extra])
    if (out / "last").is_dir():        # finished by an earlier call: its weights, not a second run
        from polymax.io.pretrained import load_model
        model = load_model(out / "last")
    else:
        model = build_training_model(config)
        result = fit(config, model=model, objective=build_objective(model.config, config),
                     train_set=build_train_set(config, model.config), collate_fn=build_collate(model.config))
        if result.interrupted is not None:     # Ctrl-C / SIGTERM: no numbers from a half-trained model
            raise SystemExit(f"interrupted; the checkpoint in {out / 'last'} is partial — delete it and rerun")
    rooms = build_dataset("synth", split="train", size=(65, 65), num_samples=batch * 8)
    images = (torch.stack([rooms[i].image for i in range(start, start + batch)]).float()
              for start in range(0, len(rooms), batch))
    # Only the trained tasks' passes: an untrained group's BN statistics do not matter.
    recalibrate_batch_norm(model, images, task=tasks)
    return model.eval()


def own_metrics(model, val, tasks: tuple[str, ...]) -> dict[str, dict[str, float]]:
    from polymax.inference.evaluate import evaluate

    return {task: {key: evaluate(model, dataset=val, task=task)[key] for key, _ in METRICS[task]} for task in tasks}


@torch.no_grad()
def wrong_tokens(model, val) -> dict[str, dict[str, dict[str, float]]]:
    """token → task → metrics: the centres computed under ``token``'s prompt, read out by ``task``'s head and
    decoded and scored as ``task`` (the diagonal is the model's normal use)."""
    from polymax.data.collate import collate
    from polymax.geometry import Geometry
    from polymax.tasks import get_task
    from polymax.tasks.base import output_slice

    config = model.config
    decoders = {task: get_task(task).build_decoder(config, config.task(task)) for task in TASKS}
    table = {}
    for token in TASKS:
        metrics = {task: get_task(task).build_metrics(config, config.task(task)) for task in TASKS}
        for sample in val:
            batch = collate([sample])
            size = tuple(batch.images.shape[-2:])
            geometry = Geometry(original=size, content=size, network=size)
            pixels = model.pixel_decoder(model.backbone(model.preprocess(batch.images.float())))
            centres = model.kmax_decoder(pixels, task=token)
            final = model.mask_head(pixels.high_res, centres.mask_embeddings, centres.class_embeddings)
            for task in TASKS:
                output = model.heads[task](final, len(centres.layers))
                metrics[task].update(decoders[task](output_slice(output, 0), geometry), batch.targets, 0)
        table[token] = {task: {k: metrics[task].compute()[k] for k, _ in METRICS[task]} for task in TASKS}
    return table


@torch.no_grad()
def timing(joint: dict[str, torch.nn.Module], singles: dict[str, torch.nn.Module], *,
           rounds: int = 20) -> dict[str, float]:
    """Median milliseconds per 65 × 65 image: each joint model answering all five tasks in one call (one trunk
    pass) vs the five single models one after the other; all measured here, interleaved round by round."""
    image = torch.full((1, 3, 65, 65), 128.0)
    runs = {name: (lambda model=model: model(image, task=TASKS)) for name, model in joint.items()}
    runs["singles"] = lambda: [singles[t](image, task=t) for t in TASKS]
    times = {name: [] for name in runs}
    for round_ in range(rounds + 2):
        for name, call in runs.items():
            started = time.perf_counter()
            call()
            if round_ >= 2:                                    # two warm-up rounds
                times[name].append(1000 * (time.perf_counter() - started))
    return {name: statistics.median(values) for name, values in times.items()}


def parameters(singles: dict[str, torch.nn.Module]) -> dict[str, int]:
    """Parameter counts of the deployed models: the joint presets, and each single model with only its own task
    (the panoptic / instance singles were trained inside the joint preset; their unused groups are left out)."""
    from dataclasses import replace

    from polymax.build import build_model, resolve_config

    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    result = {name: count(build_model(name)) for name in (GROUPS, TOKENS)}
    for task, model in singles.items():
        config = model.config
        if len(config.tasks) > 1:
            config = replace(resolve_config(GROUPS), tasks=(config.task(task),))
        result[f"single_{task}"] = count(build_model(config))
    return result


def trivial(val) -> dict[str, dict[str, float]]:
    from polymax.build import resolve_config
    from polymax.data import build_dataset
    from polymax.tools.demo import trivial_baseline_metrics

    config = resolve_config(GROUPS)
    rooms = build_dataset("synth", split="train", size=(65, 65), num_samples=64)
    table = {}
    for task in TASKS:
        try:
            computed = trivial_baseline_metrics(config, val, rooms, task)
        except NotImplementedError:      # instance: a constant prediction has no instances to score
            continue
        table[task] = {k: computed[k] for k, _ in METRICS[task]}
    return table


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


COLUMNS = [("panoptic", "pq"), ("panoptic", "pq_things"), ("instance", "ap"), ("semantic", "miou"),
           ("depth", "abs_rel"), ("depth", "rms"), ("normals", "mean"), ("normals", "within_11_25")]
HEADER = ("| PQ | PQ things | mask AP | mIoU | AbsRel ↓ | RMS ↓ | mean angle ↓ | < 11.25° |\n"
          "|---|---|---|---|---|---|---|---|")


def report(results: dict, steps: int) -> str:
    seeds = sorted(results)

    def cell(variant, task, key, part="metrics"):
        values = [results[s][variant][part][task][key] for s in seeds
                  if variant in results[s] and task in results[s][variant][part]]
        return mean_std(values) if values else "–"

    rows = [("trivial baseline", lambda t, k: cell("trivial", t, k, "trivial")),
            *((f"{v} ({steps} steps)", lambda t, k, v=v: cell(v, t, k)) for v in ("joint", "joint_all", "tokens"))]
    for prefix, label in (("single", f"five single models, {max(steps // 5, 1)} steps each"),
                          ("long", f"five single models, {steps} steps each")):
        if any(f"{prefix}_{t}" in results[s] for s in seeds for t in TASKS):
            rows.append((label, lambda t, k, p=prefix: cell(f"{p}_{t}", t, k)))
    from polymax.build import resolve_config
    from polymax.config.train import OneFormerOptions
    from polymax.engine.objective import task_sampling

    auto = {p: task_sampling(resolve_config(p), OneFormerOptions()) for p in (GROUPS, TOKENS)}
    lines = [f"task_sampling=auto resolves to: {auto}", "",
             f"(a) every model on the held-out rooms ({len(seeds)} seeds, mean ± std)", "",
             "| model " + HEADER.replace("\n", "\n|---"), ]
    lines += [f"| {label} | " + " | ".join(get(t, k) for t, k in COLUMNS) + " |" for label, get in rows]
    lines += ["", "(b) wrong-token table of the tokens model: rows = the task token the centres are computed "
              "under, columns = the task whose head, decoding and metric read them", "",
              "| token " + HEADER.replace("\n", "\n|---")]
    for token in TASKS:
        lines.append(f"| {token} | " + " | ".join(
            mean_std([results[s]["tokens"]["wrong_tokens"][token][t][k] for s in seeds]) for t, k in COLUMNS) + " |")
    lines += ["", "(c) size and speed (one thread, one 65 × 65 image, median of rounds; all five tasks)", "",
              "| model | parameters | ms (all five tasks) |", "|---|---|---|"]
    first = results[seeds[0]]
    sizes = {"joint": first["parameters"][GROUPS], "tokens": first["parameters"][TOKENS],
             "singles": sum(first["parameters"][f"single_{t}"] for t in TASKS)}
    for name, label in (("joint", "joint (groups), one call"), ("tokens", "tokens (one shared group), one call"),
                        ("singles", "five single models")):
        times = [results[s]["timing"][name] for s in seeds if name in results[s]["timing"]]
        lines.append(f"| {label} | {sizes[name]:,} | {mean_std(times) if times else '–'} |")
    lines += ["", "(d) training seconds per model (wall clock, this machine)", "",
              "| model | seconds |", "|---|---|"]
    for variant in sorted({v for s in seeds for v in results[s] if "seconds" in results[s][v]}):
        values = [results[s][variant]["seconds"] for s in seeds if variant in results[s]]
        lines.append(f"| {variant} | {mean_std(values)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="N: steps of each joint model")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=8e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--val", type=int, default=32, help="held-out validation rooms")
    default = ["joint", "joint_all", "tokens", *(f"single_{t}" for t in TASKS)]
    parser.add_argument("--variants", nargs="+", default=default, choices=list(variants(1)))
    parser.add_argument("--out", type=Path, default=Path("multitask_evidence"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from polymax.data import build_dataset

    val = build_dataset("synth", split="val", size=(65, 65), num_samples=args.val)
    table = variants(args.steps)
    path = args.out / f"results_s{'-'.join(map(str, args.seeds))}.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        mine = results.setdefault(str(seed), {})
        models = {}
        for variant in args.variants:
            started = time.perf_counter()
            preset, extra, tasks, steps = table[variant]
            model = train(preset, extra, tasks, steps=steps, seed=seed, batch=args.batch, lr=args.lr,
                          out=args.out / "runs" / f"{variant}_s{seed}")
            models[variant] = model
            if variant in mine:
                continue       # measured by an earlier call; the model (resumed from its run) is kept for (c)
            mine[variant] = {"metrics": own_metrics(model, val, tasks), "steps": steps,
                             "seconds": time.perf_counter() - started}
            if variant == "tokens":
                mine[variant]["wrong_tokens"] = wrong_tokens(model, val)
            path.write_text(json.dumps(results, indent=1))
            print(f"seed {seed} {variant}: {mine[variant]['seconds']:.0f} s "
                  + json.dumps(mine[variant]["metrics"]), flush=True)
        mine.setdefault("trivial", {"metrics": {}, "trivial": trivial(val)})
        singles = {t: models[f"single_{t}"] for t in TASKS if f"single_{t}" in models}
        if "joint" in models and len(singles) == len(TASKS):
            mine["timing"] = timing({v: models[v] for v in ("joint", "tokens") if v in models}, singles)
            mine["parameters"] = parameters(singles)
        path.write_text(json.dumps(results, indent=1))
    for other in sorted(args.out.glob("results_s*.json")):
        results = {**json.loads(other.read_text()), **results}
    complete = {s: r for s, r in results.items() if "timing" in r and "tokens" in r}
    if complete:
        print(report(complete, args.steps))


if __name__ == "__main__":
    main()
