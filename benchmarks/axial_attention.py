"""One axial-attention pass: the eval-mode fast path against the per-term BN computation, alternating runs.

    python benchmarks/axial_attention.py --lengths 41 81 --rounds 5 --threads 2

Times one 1-D pass (qkv projection included) over an L×L map of kMaX-R50's stride-16 pixel-decoder shape
(512 input channels, 8 heads, key depth 32 and value depth 64 per head): at 641² inputs L = 41, at 1281²
L = 81. "per-term BN" is the training computation run with the BNs' running statistics, on (L, C, L)
sequences with a Conv1d projection; "fast" is ``AxialAttention.attend_rows`` on the channels-last map (one
GEMM, the BNs folded on the fly). Both get the same random BN statistics; the largest output difference is
printed too.
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
    from polymax.runtime import keep_freed_memory

    keep_freed_memory()             # as the polymax command does (polymax/runtime.py)
    if args.threads:
        torch.set_num_threads(args.threads)
    from polymax.model.layers.axial_attention import AxialAttention

    channels, heads, key_depth, value_depth = 512, 8, 32, 64
    torch.manual_seed(0)
    attention = AxialAttention(channels, key_depth=heads * key_depth, value_depth=heads * value_depth,
                               num_heads=heads).eval()
    with torch.no_grad():
        for norm in (attention.bn_qkv, attention.bn_similarity, attention.bn_retrieved):
            norm.running_mean.normal_(0, 0.3)
            norm.running_var.uniform_(0.25, 2.0)
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_(0, 0.2)

    def per_term(sequences: torch.Tensor) -> torch.Tensor:          # (N, C, L) → (N, Dv, L)
        n, _, length = sequences.shape
        q, k, v = attention.bn_qkv(attention.qkv(sequences)).split((heads * key_depth,) * 2 + (heads * value_depth,), 1)
        return attention._attend(q.reshape(n, heads, key_depth, length), k.reshape(n, heads, key_depth, length),
                                 v.reshape(n, heads, value_depth, length))

    for length in args.lengths:
        image = torch.randn(1, channels, length, length).contiguous(memory_format=torch.channels_last)
        rows = image.permute(0, 2, 3, 1)                                   # (1, H, W, C) view: W-axis sequences
        paths = {"per-term BN": lambda rows=rows: per_term(rows[0].transpose(1, 2).contiguous()),
                 "fast": lambda rows=rows: attention.attend_rows(rows)}
        times: dict[str, list[float]] = {name: [] for name in paths}
        with torch.inference_mode():
            reference, fast = paths["per-term BN"](), paths["fast"]()[0].transpose(1, 2)
            difference = ((fast - reference).abs().max() / reference.abs().max()).item()
            for _ in range(args.rounds):
                for name, path in paths.items():
                    start = time.perf_counter()
                    path()
                    times[name].append(time.perf_counter() - start)
        medians = {name: 1000 * statistics.median(values) for name, values in times.items()}
        print(f"L = {length}: per-term BN {medians['per-term BN']:.1f} ms, fast {medians['fast']:.1f} ms "
              f"(×{medians['per-term BN'] / medians['fast']:.2f}); max |difference| / max |output| {difference:.1e}")


if __name__ == "__main__":
    main()
