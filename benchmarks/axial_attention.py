"""Axial attention internals: the eval-mode path (BNs folded on the fly) against the per-term BN path.

    python benchmarks/axial_attention.py --lengths 41 81 --rounds 5 --threads 1

Times only what happens after the qkv projection, for N = L sequences of length L with kMaX-R50's
stride-16 pixel-decoder shape (8 heads, key depth 32, value depth 64 per head) — at 641² inputs L = 41, at
1281² L = 81. Both paths run alternately in one process with the same random BN statistics; the largest
difference between their outputs is printed too.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[41, 81])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from polymax.model.layers.axial_attention import AxialAttention

    heads, key_depth, value_depth = 8, 32, 64
    torch.manual_seed(0)
    attention = AxialAttention(heads * value_depth, key_depth=heads * key_depth, value_depth=heads * value_depth,
                               num_heads=heads).eval()
    with torch.no_grad():
        for norm in (attention.bn_similarity, attention.bn_retrieved):
            norm.running_mean.normal_(0, 0.3)
            norm.running_var.uniform_(0.25, 2.0)
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_(0, 0.2)
    for length in args.lengths:
        q, k = torch.randn(2, length, heads, key_depth, length).unbind(0)
        v = torch.randn(length, heads, value_depth, length)
        paths = {"per-term BN": attention._attend, "folded": attention._attend_folded}
        times: dict[str, list[float]] = {name: [] for name in paths}
        with torch.inference_mode():
            difference = (paths["folded"](q, k, v) - paths["per-term BN"](q, k, v)).abs().max().item()
            for _ in range(args.rounds):
                for name, path in paths.items():
                    start = time.perf_counter()
                    path(q, k, v)
                    times[name].append(time.perf_counter() - start)
        medians = {name: 1000 * statistics.median(values) for name, values in times.items()}
        print(f"L = {length}: per-term BN {medians['per-term BN']:.1f} ms, folded {medians['folded']:.1f} ms "
              f"(×{medians['per-term BN'] / medians['folded']:.2f}); max |difference| {difference:.1e}")


if __name__ == "__main__":
    main()
