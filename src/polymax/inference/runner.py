"""What runs the network for the :class:`~polymax.inference.predictor.Predictor`: a PyTorch model
(:class:`TorchRunner`) or an exported graph (``polymax.export.onnx.OnnxRunner``). Both take (B, 3, H, W) float RGB
0..255 with H, W of the form 32k+1 and return the final :class:`~polymax.structures.TaskOutput` of one task at the
model resolution of that padded input (the predictor takes each image's slice of it in float32). A TorchRunner also
runs several tasks in one model call (``run_tasks``); an exported graph runs one task per call (a graph with a task
input, a :class:`TaskInputRunner`, answers each of its tasks).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from polymax.config.model import ModelConfig
from polymax.runtime import resolve_device
from polymax.structures import TaskOutput

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Runner(Protocol):
    """config: the model's ModelConfig; task: the task it runs; fixed_size: the only input (H, W) a static graph
    takes (None = any)."""

    config: ModelConfig
    task: str
    fixed_size: tuple[int, int] | None

    def __call__(self, images: Tensor) -> TaskOutput: ...


@runtime_checkable
class TaskInputRunner(Runner, Protocol):
    """A runner of one graph that answers several tasks (an ONNX graph with a task input): ``tasks`` lists them;
    ``for_task`` is the runner of another of them (the same session)."""

    tasks: tuple[str, ...]

    def for_task(self, task: str) -> TaskInputRunner: ...


class TorchRunner:
    """A PyTorch model (built by polymax) on a device, in eval mode, without autograd, running one task.

    With ``optimise`` (the default) it runs ``optimise_for_inference``'s copy of the model: BatchNorms folded
    and, on a CPU, channels-last memory and fused oneDNN convolutions (1.21–1.29× faster for kMaX-R50 at 641²
    on two cores; the same outputs to float32 rounding). Without, the model itself, moved to the device.
    ``task``: the task to run (None = the model's only task; a one-line error listing the choices otherwise).
    ``precision``: 'fp32', or 'bf16' / 'fp16' autocast (weights stay float32; results are decoded in float32).
    ``compile``: run the model through ``torch.compile`` (the first batch of each input size pays the compilation).
    """

    fixed_size: tuple[int, int] | None = None

    def __init__(self, model: nn.Module, *, task: str | None = None, device: str | torch.device = "cpu",
                 optimise: bool = True, precision: str = "fp32", compile: bool = False) -> None:
        config = getattr(model, "config", None)
        if not isinstance(config, ModelConfig):
            raise TypeError("Predictor needs a model built by polymax.build_model / polymax.load_model")
        self.task = config.task(task).name
        self.device = resolve_device(device)
        self.model: Callable[..., Any]
        if optimise:
            from polymax.inference.fuse import optimise_for_inference
            self.model = optimise_for_inference(model, device=self.device)
        else:
            self.model = model.to(self.device).eval()
        if precision not in AUTOCAST:
            raise ValueError(f"precision must be one of {sorted(AUTOCAST)}, got {precision!r}")
        self.autocast = AUTOCAST[precision]
        if compile:
            self.model = torch.compile(self.model)
        self.config = config

    def for_task(self, task: str) -> TorchRunner:
        """This runner for another task of the same model, sharing its prepared (optimised, compiled) module:
        a model with several tasks is folded, fused and compiled once, not once per task."""
        other = copy.copy(self)
        other.task = self.config.task(task).name
        return other

    def __call__(self, images: Tensor) -> TaskOutput:
        return self.run_tasks(images, (self.task,))[self.task]

    def run_tasks(self, images: Tensor, tasks: tuple[str, ...]) -> dict[str, TaskOutput]:
        """The final outputs of several tasks of the model from ONE model call: the backbone and pixel decoder run
        once and each query group its decoder pass (``KMaX.forward`` with a tuple of tasks), in ``tasks``' order."""
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.autocast or torch.bfloat16,
                                                    enabled=self.autocast is not None):
            output = self.model(images.to(self.device), task=tasks)
        return {task: output[task].final for task in tasks}


