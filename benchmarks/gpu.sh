#!/usr/bin/env bash
# The GPU check, one command on a machine with a CUDA GPU (about 5-8 minutes on one GPU):
#
#   benchmarks/gpu.sh [OUT_DIR]          # default OUT_DIR: gpu_bench_out
#
# It records, each as one JSON file in OUT_DIR plus a summary table (OUT_DIR/summary.md, for docs/benchmarks.md):
#   * kMaX-R50 (COCO preset) inference at 1200×800 (W×H, the paper's setting: 22.8 FPS on a V100): fp32,
#     bf16, bf16 + channels-last, bf16 + channels-last + torch.compile — FPS and peak allocator memory;
#   * training steps of kMaX-R50 at 641×641 in bf16 and in fp16 (with loss scaling), batch 4: step time, memory;
#   * with two or more GPUs, a 2-process NCCL training run (torchrun, the tiny synthetic preset, 20 steps).
# Without a GPU it says so and exits 0 (nothing measured). Every figure comes from `polymax bench`.
#
# Environment: PYTHON (default python), GPU_SH_DRY_RUN=1 prints the commands instead of running them, and
# GPU_SH_GPUS=N pretends N GPUs are present (both for the CPU test of this script's logic).
set -euo pipefail

OUT=${1:-gpu_bench_out}
PY=${PYTHON:-python}
DRY=${GPU_SH_DRY_RUN:-0}

if [ -n "${GPU_SH_GPUS:-}" ]; then
  GPUS=$GPU_SH_GPUS
else
  GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
fi
if [ "$GPUS" -lt 1 ]; then
  echo "gpu.sh: no CUDA GPU visible to PyTorch; skipped (nothing measured)"
  exit 0
fi

step() {  # step NAME COMMAND...: run COMMAND, its stdout into OUT/NAME.json (or print it in a dry run)
  local name=$1; shift
  if [ "$DRY" = 1 ]; then echo "$*"; return 0; fi
  echo "== $name"
  local start=$SECONDS
  if "$@" > "$OUT/$name.json.tmp"; then
    mv "$OUT/$name.json.tmp" "$OUT/$name.json"
  else
    echo "gpu.sh: $name failed (see above); continuing" >&2
    rm -f "$OUT/$name.json.tmp"
  fi
  echo "   $((SECONDS - start)) s"
}

[ "$DRY" = 1 ] || mkdir -p "$OUT"
[ "$DRY" = 1 ] || { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.csv" 2>/dev/null \
                    || true; }

BENCH=("$PY" -m polymax bench --preset kmax_r50_coco --device cuda --json)
INFER=(--size 800 1200 --batch 1 --warmup 3 --repeats 30)
step infer_fp32            "${BENCH[@]}" "${INFER[@]}" --dtype fp32
step infer_bf16            "${BENCH[@]}" "${INFER[@]}" --dtype bf16
step infer_bf16_cl         "${BENCH[@]}" "${INFER[@]}" --dtype bf16 --channels-last
step infer_bf16_cl_fold    "${BENCH[@]}" "${INFER[@]}" --dtype bf16 --channels-last --fold
step infer_bf16_cl_compile "${BENCH[@]}" "${INFER[@]}" --dtype bf16 --channels-last --fold --compile

TRAIN=(--train --size 641 --batch 4 --warmup 2 --repeats 5)
step train_bf16 "${BENCH[@]}" "${TRAIN[@]}" --dtype bf16
step train_fp16 "${BENCH[@]}" "${TRAIN[@]}" --dtype fp16

if [ "$GPUS" -ge 2 ]; then
  DDP=("$PY" -m torch.distributed.run --standalone --nproc_per_node=2 -m polymax train
       --preset polymax_tiny_synth_semantic --steps 20 --batch-size 8 --device cuda --no-progress)
  if [ "$DRY" = 1 ]; then
    echo "${DDP[*]} --out $OUT/ddp_nccl"
  else
    echo "== ddp_nccl (2 processes)"
    start=$SECONDS
    if "${DDP[@]}" --out "$OUT/ddp_nccl" > "$OUT/ddp_nccl.log" 2>&1; then
      echo "{\"ddp_nccl_2proc_seconds\": $((SECONDS - start)), \"ok\": true}" > "$OUT/ddp_nccl.json"
    else
      echo "gpu.sh: the 2-process NCCL run failed; see $OUT/ddp_nccl.log" >&2
      echo "{\"ddp_nccl_2proc_seconds\": $((SECONDS - start)), \"ok\": false}" > "$OUT/ddp_nccl.json"
    fi
  fi
else
  echo "gpu.sh: one GPU; the 2-process NCCL run needs two (skipped)"
fi

[ "$DRY" = 1 ] && exit 0
"$PY" - "$OUT" <<'PYEOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
rows = ["| run | size (H×W) | batch | dtype | options | median ms | images/s | peak MiB |", "|---" * 8 + "|"]
for path in sorted(out.glob("*.json")):
    r = json.loads(path.read_text())
    if "latency_ms_median" not in r:
        continue
    options = ", ".join(k for k in ("channels_last", "fold", "compile") if r.get(k)) or "-"
    rows.append(f"| {path.stem} | {r['size'][0]}×{r['size'][1]} | {r['batch']} | {r['dtype']} | {options} | "
                f"{r['latency_ms_median']:.1f} | {r['throughput_per_s']:.1f} | {r['peak_memory_mb']:.0f} |")
machine = next((json.loads(p.read_text())["machine"] for p in out.glob("infer_*.json")), {})
text = f"GPU: {machine.get('gpu', '?')}; CPU: {machine.get('cpu', '?')}; torch {machine.get('torch', '?')}\n\n"
text += "\n".join(rows) + "\n"
ddp = out / "ddp_nccl.json"
if ddp.exists():
    text += f"\n2-process NCCL run: {json.loads(ddp.read_text())}\n"
(out / "summary.md").write_text(text)
print(text)
PYEOF
