"""Our models side by side with equally sized peers, timed in one process, alternating runs.

    python benchmarks/peer_comparison.py --task panoptic --size 641 --rounds 5
    python benchmarks/peer_comparison.py --task depth --rounds 5          # NYU depth crop 416×544

panoptic: kMaX-R50 (``kmax_r50_coco``) against Mask2Former-R50 (Hugging Face ``transformers``, ResNet-50
  backbone, 100 queries, 6 deformable-attention encoder layers, 9+1 decoder layers: 44.0 M parameters).
depth: PolyMaX-R50 (``polymax_r50_nyu_depth``) against GLPN with a MiT-b4 encoder (61.2 M parameters, the
  architecture of the NYU-v2 GLPN checkpoint).

Peers get random weights built from a config object (nothing is downloaded); speed does not depend on the
weights. Ours run twice: as built ("eager") and prepared for CPU inference ("fast": BatchNorms folded,
channels-last memory, activations and residual adds fused into the convolutions; the ``polymax bench --fuse
--channels-last`` setting and what ``polymax predict`` runs). Every round runs each contender once, in a rotating order,
so that load from other processes on a shared machine falls on all of them alike; the ratio of medians is the
figure to quote. Without ``transformers`` the peer is skipped with a message and ours are still timed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

PEER_NOTE = "pip install transformers  (the peer models are built from config objects; no download)"


def mask2former_r50() -> Callable[[torch.Tensor], object] | None:
    """Mask2Former with a ResNet-50 backbone and its COCO-panoptic head (133 classes), random weights."""
    try:
        from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, ResNetConfig
    except ImportError:
        return None
    backbone = ResNetConfig(depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048], layer_type="bottleneck",
                            out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(backbone_config=backbone, num_labels=133, use_pretrained_backbone=False)
    return Mask2FormerForUniversalSegmentation(config).eval()


def glpn_b4() -> Callable[[torch.Tensor], object] | None:
    """GLPN (hierarchical MiT-b4 encoder + light decoder) for depth up to 10 m, random weights."""
    try:
        from transformers import GLPNConfig, GLPNForDepthEstimation
    except ImportError:
        return None
    config = GLPNConfig(depths=[3, 8, 27, 3], hidden_sizes=[64, 128, 320, 512], decoder_hidden_size=64, max_depth=10)
    return GLPNForDepthEstimation(config).eval()


@dataclass(frozen=True)
class Match:
    """One comparison: our preset, the peer's name and builder, and the default input size (H[, W])."""

    preset: str
    peer_name: str
    peer: Callable[[], Callable[[torch.Tensor], object] | None]
    size: tuple[int, ...]


# Depth: the BTS / AdaBins NYU crop; GLPN needs multiples of 32 and ours pads it to 417×545 itself.
MATCHES = {"panoptic": Match("kmax_r50_coco", "mask2former-r50", mask2former_r50, (641,)),
           "depth": Match("polymax_r50_nyu_depth", "glpn-b4", glpn_b4, (416, 544))}


def ours(preset: str, *, fast: bool, fuse: bool = True) -> torch.nn.Module:
    """Our model for inference; its ``reported_parameters`` are counted before folding (folding adds biases)."""
    from polymax.tools.bench import BenchSettings, build_for_bench

    settings = BenchSettings(preset=preset, fold=fast, fuse=fast and fuse, channels_last=fast)
    model, params = build_for_bench(settings, torch.device("cpu"))
    model.reported_parameters = params
    return model


def count_flops(run: Callable[[], object]) -> int:
    from polymax.tools.analysis import flop_counter

    # Parameters are frozen instead of using no_grad: the counter's module tracker needs it that way.
    with flop_counter() as counter:
        run()
    return int(counter.get_total_flops())


def compare(contenders: dict[str, tuple[torch.nn.Module, Callable[[], object]]], rounds: int,
            eager_run: dict[str, Callable[[], object]]) -> dict[str, dict]:
    """{name: {params, flops, latencies}}; warm-up runs, then ``rounds`` rotating rounds. FLOPs are counted on
    the eager model (``eager_run`` for compiled contenders)."""
    results = {}
    for name, (model, run) in contenders.items():
        params = getattr(model, "reported_parameters", None) or sum(p.numel() for p in model.parameters())
        for p in model.parameters():
            p.requires_grad_(False)
        start = time.perf_counter()
        with torch.inference_mode():
            run()                                       # warm-up; compiles the compiled contenders
        results[name] = {"first_run_s": time.perf_counter() - start}
        flops = count_flops(eager_run.get(name, run))
        results[name].update(params=params, flops=flops, latency_s=[])
    names = list(contenders)
    with torch.inference_mode():
        for name in names:
            contenders[name][1]()                       # a second warm-up, inside inference mode
        for index in range(rounds):
            order = names[index % len(names):] + names[: index % len(names)]
            for name in order:
                start = time.perf_counter()
                contenders[name][1]()
                results[name]["latency_s"].append(time.perf_counter() - start)
                print(f"  round {index + 1}: {name:<14s} {1000 * results[name]['latency_s'][-1]:9.0f} ms", flush=True)
    for result in results.values():
        result["median_ms"] = 1000 * statistics.median(result["latency_s"])
        result["min_ms"] = 1000 * min(result["latency_s"])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=tuple(MATCHES), default="panoptic")
    parser.add_argument("--size", type=int, nargs="+", default=None, metavar="H [W]",
                        help="input size (default: 641 panoptic, 416 544 depth)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--compile", action="store_true",
                        help="add torch.compile'd contenders: ours folded + channels-last (Inductor freezing), "
                             "and the peer")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--system-malloc", action="store_true",
                        help="leave glibc's malloc as it is for every contender (default: tuned for all, as the "
                             "polymax command does; polymax/runtime.py)")
    args = parser.parse_args()
    if not args.system_malloc:
        from polymax.runtime import keep_freed_memory

        keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    from polymax.tools.bench import machine_description

    match = MATCHES[args.task]
    size = tuple(args.size) if args.size else match.size
    height, width = size[0], size[-1]
    preset = match.preset
    torch.manual_seed(0)
    images = torch.rand(args.batch, 3, height, width, generator=torch.Generator().manual_seed(0)) * 255
    images_cl = images.contiguous(memory_format=torch.channels_last)
    eager, fast = ours(preset, fast=False), ours(preset, fast=True)
    contenders = {"ours-eager": (eager, lambda: eager(images)), "ours-fast": (fast, lambda: fast(images_cl))}
    peer_name, peer = match.peer_name, match.peer()
    if peer is None:
        print(f"transformers is not installed: skipping the peer {peer_name}. {PEER_NOTE}")
    else:
        # Peers take mean/std-normalised pixels; the normalisation is not part of the timing for them or us.
        pixels = (images / 255 - 0.45) / 0.225
        contenders[peer_name] = (peer, lambda: peer(pixel_values=pixels))
    if args.compile:
        from polymax.tools.bench import compile_model

        # Inductor fuses and pre-packs by itself: it gets the folded channels-last model, not the fused one.
        folded = ours(preset, fast=True, fuse=False)
        folded_compiled = compile_model(folded, inference=True)
        contenders["ours-compiled"] = (folded, lambda: folded_compiled(images_cl))
        if peer is not None:
            peer_compiled = torch.compile(peer)
            contenders[peer_name + "-compiled"] = (peer, lambda: peer_compiled(pixel_values=pixels))

    machine = machine_description(torch.device("cpu"))
    print(f"{args.task}: {height}×{width}, batch {args.batch}, {args.rounds} rounds on {machine['cpu']} "
          f"({machine['cpu_cores']} cores, {machine['torch_threads']} torch threads, torch {machine['torch']}, malloc "
          f"{'keeps freed memory' if machine['malloc_keeps_freed_memory'] else 'as the system has it'})")
    eager_run = {"ours-compiled": contenders["ours-fast"][1]}
    if peer is not None:
        eager_run[peer_name + "-compiled"] = contenders[peer_name][1]
    results = compare(contenders, args.rounds, eager_run)
    print(f"\n{'model':<16s} {'params':>9s} {'GFLOPs':>8s} {'median ms':>10s} {'min ms':>9s}")
    for name, result in results.items():
        print(f"{name:<16s} {result['params'] / 1e6:8.2f}M {result['flops'] / 1e9:8.1f} "
              f"{result['median_ms']:10.0f} {result['min_ms']:9.0f}")
    if peer_name + "-compiled" in results and "ours-compiled" in results:
        ratio = results[peer_name + "-compiled"]["median_ms"] / results["ours-compiled"]["median_ms"]
        print(f"ours-compiled is {ratio:.2f}× faster than {peer_name}-compiled (ratio of medians)")
    if peer_name in results:
        for name in ("ours-eager", "ours-fast", "ours-compiled"):
            if name not in results:
                continue
            ratio = results[peer_name]["median_ms"] / results[name]["median_ms"]
            best = results[peer_name]["min_ms"] / results[name]["min_ms"]
            print(f"{name} is {ratio:.2f}× faster than {peer_name} (ratio of medians; of minima {best:.2f}×)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"task": args.task, "size": [height, width], "batch": args.batch, "machine": machine,
                       "results": results}, handle, indent=1)


if __name__ == "__main__":
    main()
