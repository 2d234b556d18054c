"""Latency and peak memory against input size, one line per backbone, as a PNG (and the numbers as JSON).

    python benchmarks/scaling.py --out docs/scaling.png                 # default presets and sizes
    python benchmarks/scaling.py --presets kmax_r50_coco kmax_convnext_base_coco --sizes 321 641 1281
    python benchmarks/scaling.py --replot docs/scaling.json --out docs/scaling.png

Every point is one ``polymax bench --json`` run in a fresh process (so that the RSS peak belongs to that
model and size alone), with the options given here (default: --fuse --channels-last, 1 warm-up, 3 timed runs,
median latency). Points run at different moments; on a shared machine the load differs between them, so
the latency panel also shows each latency rescaled by the reference matmul speed measured in the same run
(latency × matmul GFLOP/s ÷ the median over all points), which cancels most of that difference. Log-log
against the number of pixels, with a dotted line of slope 1 through each backbone's smallest size: a curve
on or under it grows no faster than linearly.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

DEFAULT_PRESETS = ("kmax_r50_coco", "kmax_axial_r50_coco", "kmax_convnext_tiny_coco")
DEFAULT_SIZES = (321, 641, 961, 1281)


def measure(preset: str, size: int, *, options: list[str]) -> dict:
    command = [sys.executable, "-m", "polymax", "bench", "--preset", preset, "--size", str(size), "--json", *options]
    print("$", " ".join(command[1:]), flush=True)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{preset} at {size}: bench failed\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def plot(results: list[dict], out: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("the plot needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    presets = sorted({r["preset"] for r in results}, key=[r["preset"] for r in results].index)
    reference = sorted(r["matmul_gflops"] for r in results)[len(results) // 2]
    for preset in presets:
        rows = sorted((r for r in results if r["preset"] == preset), key=lambda r: r["size"][0] * r["size"][1])
        pixels = [r["size"][0] * r["size"][1] / 1e6 for r in rows]
        latency = [r["latency_ms_median"] / 1000 for r in rows]
        rescaled = [t * r["matmul_gflops"] / reference for t, r in zip(latency, rows)]
        (line,) = left.plot(pixels, rescaled, marker="o", label=preset)
        left.plot(pixels, latency, marker="x", linestyle="none", color=line.get_color(), alpha=0.6)
        left.plot(pixels, [rescaled[0] * p / pixels[0] for p in pixels], linestyle=":", color=line.get_color())
        right.plot(pixels, [r["peak_memory_mb"] / 1024 for r in rows], marker="o", label=preset)
    machine = results[0]["machine"]
    options = [name for name in ("fuse", "fold", "channels_last", "compile") if results[0].get(name)]
    title = (f"{machine['cpu']}, {machine['torch_threads']} thread(s), batch {results[0]['batch']}, "
             f"{results[0]['dtype']}" + (f", {'+'.join(options)}" if options else ""))
    left_label = f"median latency (s) at {reference:.0f} GFLOP/s matmul\n(x: as measured)"
    for axis, label in ((left, left_label), (right, "peak memory (GiB, process RSS)")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("input pixels (millions)")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8, title="dotted: linear in pixels", title_fontsize=8)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=list(DEFAULT_PRESETS))
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--plain", action="store_true", help="time the model as built (no --fuse --channels-last)")
    parser.add_argument("--out", type=Path, default=Path("docs/scaling.png"))
    parser.add_argument("--replot", type=Path, default=None, help="plot a JSON file written earlier; measure nothing")
    args = parser.parse_args()

    if args.replot:
        plot(json.loads(args.replot.read_text()), args.out)
        return
    options = ["--threads", str(args.threads), "--repeats", str(args.repeats), "--warmup", "1"]
    options += [] if args.plain else ["--fuse", "--channels-last"]
    results = []
    for preset in args.presets:
        for size in args.sizes:
            result = measure(preset, size, options=options)
            results.append(result)
            print(f"  {preset} {size}: {result['latency_ms_median']:.0f} ms, {result['peak_memory_mb']:.0f} MiB, "
                  f"{result['flops'] / 1e9:.0f} GFLOPs", flush=True)
    numbers = args.out.with_suffix(".json")
    numbers.write_text(json.dumps(results, indent=1))
    print(f"wrote {numbers}")
    plot(results, args.out)


if __name__ == "__main__":
    main()
