"""Measure a model where it runs: parameters, counted FLOPs, latency, throughput, peak memory, and how
much of the machine's own dense matrix-multiply throughput the model achieves.

    result = run_benchmark(BenchSettings(preset="kmax_r50_coco", size=(641, 641)))
    print(format_report(result))

Timing: ``warmup`` untimed runs (the first one counts the FLOPs; with ``compile`` it also compiles), then
``repeats`` timed runs. After every timed run one square matmul of the same dtype is timed too, so that the
model and the machine's reference throughput are sampled at the same moments: on a machine shared with
other work both slow down together, and their ratio (``achieved_fraction``) stays meaningful.

Peak memory: on CPU the process's resident-set high-water mark during the timed model runs (reset through
``/proc/self/clear_refs`` before each, where Linux allows it, otherwise the peak since the process started;
it includes the weights, PyTorch itself and the 32 MiB matmul operands); on CUDA the caching allocator's peak
during the model runs, less the matmul operands. ``train`` times a full step: forward, losses, backward and
optimiser update.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from polymax.config.model import DatasetInfo
from polymax.errors import UserError
from polymax.runtime import resolve_device
from polymax.tools.analysis import flop_counter

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class BenchSettings:
    preset: str = "kmax_r50_coco"
    size: tuple[int, int] = (641, 641)
    batch: int = 1
    device: str = "cpu"
    dtype: str = "fp32"            # fp32, or bf16 / fp16 autocast (weights stay float32; fp16 trains with a GradScaler)
    compile: bool = False
    channels_last: bool = False
    fold: bool = False             # fold BatchNorms into the preceding convs (inference only)
    fuse: bool = False             # also fuse activations / residual adds into the convs (implies fold)
    train: bool = False
    warmup: int = 2
    repeats: int = 5
    threads: int | None = None     # torch intra-op threads on CPU (default: torch's choice)
    matmul_size: int | None = None  # side of the reference matmul (default 2048 on CPU, 8192 on CUDA)
    overrides: dict[str, Any] = field(default_factory=dict)


def machine_description(device: torch.device) -> dict[str, Any]:
    """CPU model name and core count (and the GPU's name on CUDA), for every reported figure."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    from polymax.runtime import malloc_tuned

    info = {"cpu": cpu, "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "malloc_keeps_freed_memory": malloc_tuned()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def check_settings(settings: BenchSettings, device: torch.device) -> None:
    if settings.dtype not in DTYPES:
        raise UserError(f"unknown dtype {settings.dtype!r}; use fp32, bf16 or fp16")
    if settings.dtype == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError(f"{torch.cuda.get_device_name(device)} has no bfloat16 support; use --dtype fp32")
    if settings.batch < 1 or min(settings.size) < 1:
        raise UserError(f"batch and size must be positive, got batch {settings.batch}, size {settings.size}")
    if settings.repeats < 1 or settings.warmup < 1:
        raise UserError("need at least one warm-up and one timed run (it also counts the FLOPs)")
    if settings.fuse and settings.compile:
        raise UserError("--fuse is the eager CPU path; with --compile use --fold --channels-last (Inductor fuses "
                        "activations and pre-packs weights itself)")
    if (settings.fold or settings.fuse) and settings.train:
        raise UserError("--fold / --fuse remove the BatchNorms, so they are for inference only; drop them or --train")


# ---------------------------------------------------------------------------------------------- memory
class PeakMemory:
    """Peak memory over a region: RSS high-water mark on CPU, allocator peak on CUDA (in MiB)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.resettable = False

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:  # "5" resets the VmHWM peak to the current RSS (Linux >= 4.0)
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
            self.resettable = True
        except OSError:
            self.resettable = False

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        try:
            with open("/proc/self/status") as handle:
                for line in handle:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        import resource  # not on Windows; ru_maxrss is in KiB on Linux, bytes on macOS
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if platform.system() == "Darwin" else peak / 1024


# --------------------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall-clock seconds of one call, with the device synchronised on both sides."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


class MatmulProbe:
    """Times one n×n @ n×n product in ``dtype``: the machine's dense throughput at that moment (GFLOP/s)."""

    def __init__(self, device: torch.device, dtype: torch.dtype, n: int | None = None) -> None:
        n = n or (8192 if device.type == "cuda" else 2048)
        generator = torch.Generator(device="cpu").manual_seed(0)
        self.a = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
        self.b = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
        self.device = device
        self.flops = 2 * n**3
        self.resident_mb = 2 * self.a.numel() * self.a.element_size() / 2**20
        self.sample()  # warm-up (library initialisation, caches)

    def sample(self) -> float:
        return self.flops / timed(lambda: torch.mm(self.a, self.b), self.device) / 1e9


# ------------------------------------------------------------------------------------ model and step
def synthetic_targets(model: nn.Module, batch: int, size: tuple[int, int], device: torch.device):
    """Plausible ground truth for every task of the model: a 4×4 grid of regions, each with its own value for
    the kind of each label the tasks read (``Task.labels``): 'ids' a class and an instance (semantic, panoptic,
    crowd and semantic-loss weights together, as the segmentation criteria read them), 'scalar' a value in the
    task's depth range, 'vector' a unit vector.

    Labels cover the padded (32k+1) size the model predicts at, as the training data does; the padding is
    invalid (ignore label, 0 / the zero vector).
    """
    from polymax.geometry import padded_size
    from polymax.structures import Targets
    from polymax.tasks import get_task

    config = model.config
    height, width = size
    full_h, full_w = padded_size(size)
    rows = torch.arange(full_h, device=device)[:, None] * 4 // height
    cols = torch.arange(full_w, device=device)[None, :] * 4 // width
    cell = (rows * 4 + cols).expand(batch, full_h, full_w)                   # (B, Hp, Wp) region id 0..15
    inside = ((rows < 4) & (cols < 4)).expand(batch, full_h, full_w)         # (B, Hp, Wp) False on the padding
    labels: dict[str, torch.Tensor] = {}
    for task in config.tasks:
        for label in get_task(task.name).labels:
            if label.kind == "ids":
                labels.update(_segmentation_labels(config.dataset, cell, inside))
            elif label.kind == "scalar":                                     # 16 levels spread over the range
                value = task.min_depth + (cell.float() + 1) / 17 * (task.max_depth - task.min_depth)
                labels[label.name] = torch.where(inside, value, torch.zeros(()))
            elif label.kind == "vector":                                     # (B, 3, Hp, Wp): +z inside
                vectors = torch.zeros(batch, 3, full_h, full_w, device=device)
                vectors[:, 2] = inside.float()
                labels[label.name] = vectors
            else:
                raise ValueError(f"the {task.name} task reads a {label.kind!r} label, which the benchmark cannot make")
    return Targets(**labels)


def _segmentation_labels(info: DatasetInfo, cell: torch.Tensor, inside: torch.Tensor) -> dict[str, torch.Tensor]:
    """Classes cycle over the regions; thing regions get instance ids 1, 2, ... (the region's class round)."""
    classes = cell % max(info.num_classes, 1)
    things = torch.zeros(max(info.num_classes, 1), dtype=torch.bool, device=cell.device)
    things[list(info.thing_classes)] = True
    instance = torch.where(things[classes], cell // max(info.num_classes, 1) + 1, torch.zeros_like(cell))
    semantic = torch.where(inside, classes, torch.full_like(classes, info.ignore_label))
    panoptic = torch.where(inside, classes * info.label_divisor + instance,
                           torch.full_like(classes, info.ignore_label * info.label_divisor))
    return {"semantic": semantic, "panoptic": panoptic, "crowd": torch.zeros_like(cell, dtype=torch.bool),
            "semantic_weight": inside.float()}


def training_step(model: nn.Module, images: torch.Tensor, *, autocast, scaled: bool = False) -> Callable[[], None]:
    """A closure running one optimiser step of the official recipe, every task of the model on one trunk
    pass (as ``polymax train`` runs it), on synthetic targets. ``scaled``: through a GradScaler (fp16)."""
    from polymax.engine.objective import build_objective
    from polymax.engine.optim import build_optimizer
    from polymax.engine.train import to_float

    device = images.device
    objective = build_objective(model.config).to(device)
    optimizer, _ = build_optimizer(model, lr=1e-4, weight_decay=0.05, backbone_lr_multiplier=0.1,
                                   betas=(0.9, 0.999), eps=1e-7, warmup_steps=0, total_steps=1000, power=0.9)
    targets = synthetic_targets(model, images.shape[0], tuple(images.shape[-2:]), device)
    tasks = model.config.task_names
    model.train()
    scaler = torch.amp.GradScaler(device.type, enabled=scaled)

    def step() -> None:
        with autocast():
            output = model(images, task=tasks)
        scaler.scale(objective(to_float(output), targets).total).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    return step


def build_for_bench(settings: BenchSettings, device: torch.device) -> tuple[nn.Module, int]:
    """The model prepared as ``settings`` ask, and its parameter count before any folding."""
    from polymax.build import build_model
    from polymax.inference.fold import fold_batch_norms
    from polymax.inference.fuse import fuse_for_inference
    from polymax.tools.analysis import count_parameters

    model = build_model(settings.preset, **settings.overrides).to(device)
    model.train(settings.train)
    params = count_parameters(model, inference=not settings.train)
    if settings.fold or settings.fuse:
        model = fold_batch_norms(model, inplace=True)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if settings.fuse:
        model = fuse_for_inference(model, inplace=True)
    return model, params


def compile_model(model: nn.Module, *, inference: bool) -> Callable:
    """``torch.compile(model)``; for inference with Inductor's freezing on, which treats the weights as
    constants (folds them into the graph, pre-packs convolution weights on CPU). For kMaX-R50 on CPU at 641²
    it took ~30% off the eager time, plain compilation ~13% (docs/benchmarks.md). A process-wide setting."""
    if inference:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
    return torch.compile(model)


def count_step_flops(step: Callable[[], Any]) -> int:
    """FLOPs of one call, counted by torch's FlopCounterMode (matmul / conv / attention ops)."""
    with flop_counter() as counter:
        step()
    return int(counter.get_total_flops())


def run_benchmark(settings: BenchSettings) -> dict[str, Any]:
    """Measure ``settings``; returns a flat dict (see the module docstring and ``format_report``)."""
    from polymax.tools.analysis import count_flops

    device = resolve_device(settings.device)
    check_settings(settings, device)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(0)
    dtype = DTYPES[settings.dtype]
    model, params = build_for_bench(settings, device)
    images = torch.rand(settings.batch, 3, *settings.size, generator=torch.Generator().manual_seed(0)) * 255
    images = images.to(device)
    if settings.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)

    def autocast():
        return torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()

    runner = compile_model(model, inference=not settings.train) if settings.compile else model
    if settings.train:
        step = training_step(runner, images, autocast=autocast, scaled=dtype == torch.float16)
        # FLOPs do not depend on the dtype: count in float32 (FlopCounterMode and autocast do not mix).
        flops = count_step_flops(training_step(model, images, autocast=nullcontext))
        grad_mode = nullcontext
    else:
        tasks = model.config.task_names                # every task of the model, on one trunk pass

        def step() -> None:
            with autocast():
                runner(images, task=tasks)
        flops = count_flops(model, settings.size, batch=settings.batch)    # eager, float32: a first warm-up
        grad_mode = torch.inference_mode

    with grad_mode():
        for index in range(settings.warmup):
            try:
                step()
            except Exception as error:                    # compile failures surface at the first call
                if settings.compile and index == 0:
                    raise UserError(f"torch.compile failed ({type(error).__name__}: {error}); "
                                    "run without --compile") from error
                raise
        probe = MatmulProbe(device, dtype, settings.matmul_size)
        memory = PeakMemory(device)
        latencies, matmul, peaks = [], [], []
        for _ in range(settings.repeats):
            memory.reset()                                # the peak of the model runs, not of the matmuls
            latencies.append(timed(step, device))
            peaks.append(memory.peak_mb())
            matmul.append(probe.sample())
        # On CUDA the probe's two operands stay allocated during the model runs; they are not the model's.
        peak = max(peaks) - (probe.resident_mb if device.type == "cuda" else 0.0)

    median = statistics.median(latencies)
    matmul_gflops = statistics.median(matmul)
    model_gflops = flops / median / 1e9
    return {
        "preset": settings.preset, "size": list(settings.size), "batch": settings.batch, "device": str(device),
        "dtype": settings.dtype, "compile": settings.compile, "channels_last": settings.channels_last,
        "fold": settings.fold or settings.fuse, "fuse": settings.fuse, "train": settings.train,
        "warmup": settings.warmup, "repeats": settings.repeats,
        "params": params, "flops": flops,
        "latency_ms_median": 1000 * median, "latency_ms_min": 1000 * min(latencies),
        "latency_ms_max": 1000 * max(latencies), "latency_ms_all": [1000 * t for t in latencies],
        "throughput_per_s": settings.batch / median,
        "peak_memory_mb": peak, "peak_memory_kind": _memory_kind(device, memory),
        "model_gflops_per_s": model_gflops, "matmul_gflops": matmul_gflops,
        "matmul_gflops_all": matmul, "achieved_fraction": model_gflops / matmul_gflops,
        # Best cases (fastest model run, fastest matmul): on a shared machine the least disturbed figures.
        "achieved_fraction_best": flops / min(latencies) / 1e9 / max(matmul),
        "machine": machine_description(device), "settings": asdict(settings),
    }


def _memory_kind(device: torch.device, memory: PeakMemory) -> str:
    if device.type == "cuda":
        return "cuda allocator peak over the timed runs"
    return "process RSS peak over the timed runs" if memory.resettable else "process RSS peak since start"


def format_report(result: dict[str, Any]) -> str:
    """A short human-readable summary of :func:`run_benchmark`'s result."""
    machine = result["machine"]
    where = machine.get("gpu") or f"{machine['cpu']}, {machine['cpu_cores']} cores, {machine['torch_threads']} threads"
    mode = "training step" if result["train"] else "inference"
    options = [name for name in ("compile", "channels_last", "fold", "fuse") if result.get(name)]
    lines = [
        f"{result['preset']}  {mode}  {result['size'][0]}×{result['size'][1]}  batch {result['batch']}  "
        f"{result['device']} {result['dtype']}" + (f"  [{', '.join(options)}]" if options else ""),
        f"  machine      {where}; torch {machine['torch']}",
        f"  parameters   {result['params'] / 1e6:.2f} M",
        f"  FLOPs        {result['flops'] / 1e9:.4g} G (counted; multiply-adds = half)",
        f"  latency      median {result['latency_ms_median']:.1f} ms  (min {result['latency_ms_min']:.1f}, "
        f"max {result['latency_ms_max']:.1f}; {result['repeats']} runs after {result['warmup']} warm-up)",
        f"  throughput   {result['throughput_per_s']:.2f} images/s",
        f"  peak memory  {result['peak_memory_mb']:.0f} MiB ({result['peak_memory_kind']})",
        f"  compute      {result['model_gflops_per_s']:.1f} GFLOP/s = {100 * result['achieved_fraction']:.1f}% of "
        f"this machine's matmul ({result['matmul_gflops']:.1f} GFLOP/s, measured between the runs)",
    ]
    return "\n".join(lines)
