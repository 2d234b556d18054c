"""What a run tells its user: a tqdm progress bar (loss, lr, it/s, ETA) and scalar logs.

Scalars always go to ``OUT/scalars.jsonl`` (one JSON object per logged step; no dependency), and to
TensorBoard under ``OUT/tb`` when the optional ``log`` extra (tensorboard) is installed. Without it the run
says so once and carries on. TensorBoard also gets the resolved config (TEXT tab: the YAML; HPARAMS tab: the
flattened fields) and, after every evaluation, ``eval/predictions``: a few fixed held-out images with each task's
ground truth and prediction (:func:`prediction_grid`). ``TrainConfig.tracker`` sends the scalars and the config
to Weights & Biases or MLflow as well (the ``wandb`` / ``mlflow`` extras, imported only when asked for).
What the run prints (config, resumes, evaluations, losses every ``log_every``
steps, stops) also goes, time-stamped, through Python ``logging`` (logger ``polymax.train``) to ``OUT/log.txt``,
appended across resumes, so a cluster job's history survives its console.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from polymax.errors import UserError

if TYPE_CHECKING:
    from polymax.config.model import ModelConfig

LOG_FILE = "log.txt"
PICTURE_IMAGES = 4          # held-out images drawn after each evaluation (TensorBoard only)
logger = logging.getLogger("polymax.train")


@contextmanager
def run_log(out_dir: str | Path, *, enabled: bool) -> Iterator[None]:
    """Send ``logger`` (INFO and above) to ``out_dir/log.txt`` while the block runs (rank 0 only: ``enabled``)."""
    if not enabled:
        yield
        return
    handler = logging.FileHandler(Path(out_dir) / LOG_FILE, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        handler.close()


def progress_bar(*, total: int, initial: int, enabled: bool) -> tqdm:
    """Steps as the unit, so tqdm's rate and ETA are it/s and time to the last step."""
    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True,
                file=sys.stderr, desc="train")


class ScalarLog:
    """Append-only scalar log; a no-op on ranks other than 0 (``enabled=False``). ``config``: the resolved
    TrainConfig as a dict, for TensorBoard's TEXT / HPARAMS tabs and the tracker. ``tracker``: '', 'wandb' or
    'mlflow' (checked beforehand with :func:`require_tracker`)."""

    def __init__(self, out_dir: str | Path, *, enabled: bool, tensorboard: bool, tracker: str = "",
                 config: dict[str, Any] | None = None) -> None:
        self.enabled = enabled
        self._writer: Any = None
        self._jsonl: Any = None
        self._tracker: Any = None
        if not enabled:
            return
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = (out_dir / "scalars.jsonl").open("a")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                print("tensorboard is not installed (pip install 'polymax[log]'); scalars go to "
                      f"{out_dir / 'scalars.jsonl'} only", file=sys.stderr)
            else:
                self._writer = SummaryWriter(log_dir=str(out_dir / "tb"))
                if config is not None:
                    _write_config(self._writer, config)
        if tracker:
            self._tracker = TRACKERS[tracker](require_tracker(tracker), out_dir=out_dir, config=config or {})

    @property
    def draws_pictures(self) -> bool:
        """Whether :meth:`picture` goes anywhere (TensorBoard on and installed, rank 0): drawing costs a forward."""
        return self._writer is not None

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        finite = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        self._jsonl.write(json.dumps({"step": step, **finite}) + "\n")
        self._jsonl.flush()
        if self._writer is not None:
            for name, value in finite.items():
                self._writer.add_scalar(name, value, step)
        if self._tracker is not None and finite:
            self._tracker.log(step, finite)

    def picture(self, tag: str, step: int, image: np.ndarray) -> None:
        """(H, W, 3) uint8 picture to TensorBoard's IMAGES tab."""
        if self._writer is not None:
            self._writer.add_image(tag, image, step, dataformats="HWC")
            self._writer.flush()

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._writer is not None:
            self._writer.close()
        if self._tracker is not None:
            self._tracker.close()


def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """``{"optim": {"lr": 5e-4}}`` → ``{"optim.lr": 5e-4}``: numbers, booleans and strings as they are, anything
    else (None, lists, empty mappings) as its JSON text — the value types TensorBoard and MLflow accept."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_config(value, prefix=name + "."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = json.dumps(value)
    return flat


def _write_config(writer: Any, config: dict[str, Any]) -> None:
    """The config as indented YAML (TEXT tab renders Markdown: four spaces make a code block) and as flat
    hyper-parameters in this run's own event file (HPARAMS tab; ``add_hparams`` would open a second run)."""
    import yaml
    from torch.utils.tensorboard.summary import hparams

    text = yaml.safe_dump(config, sort_keys=False)
    writer.add_text("config", "\n".join("    " + line for line in text.splitlines()), 0)
    for summary in hparams(flatten_config(config), {}):
        writer.file_writer.add_summary(summary)


# --------------------------------------------------------------------------------------------- pictures
@torch.no_grad()
def prediction_grid(model: nn.Module, samples: Sequence[Any], *, tile_height: int = 96) -> np.ndarray:
    """(H, W, 3) uint8: one row per sample — the image, then each task's ground truth and prediction (the tasks'
    own colour maps, as the demo draws them; a prediction shares its truth's depth scale). The model (eval mode,
    with ``.config`` and ``.tasks``) runs on each image at its own size, as :func:`polymax.inference.evaluate`
    does; a task whose label a sample lacks gets a blank truth."""
    from polymax.geometry import Geometry, padded_size
    from polymax.tasks import get_task, visualize
    from polymax.tasks.base import output_slice

    # nn.Module types its attributes as Tensor | Module; a polymax model carries .config and .tasks.
    config: ModelConfig = model.config  # type: ignore[assignment]
    names: tuple[str, ...] = tuple(model.tasks)  # type: ignore[arg-type]
    device = next(model.parameters()).device
    decoders = {name: get_task(name).build_decoder(config, config.task(name)) for name in names}
    tiles: list[tuple[str, Any]] = []
    for sample in samples:
        size = tuple(sample.image.shape[-2:])
        image = sample.image.permute(1, 2, 0).numpy().astype(np.uint8)                      # (H, W, 3)
        output = model(sample.image[None].float().to(device), task=names)
        tiles.append(("image", image))
        for name in names:
            definition = get_task(name)
            result = decoders[name](output_slice(output[name].final, 0),
                                    Geometry(original=size, content=size, network=padded_size(size)))
            labelled = all(getattr(sample, field.name, None) is not None for field in definition.labels)
            truth = definition.ground_truth_result(sample, config) if labelled else None
            tiles += [(f"{name}: truth", definition.picture_map(truth, config)) if truth is not None
                      else (f"{name}: no label", np.full_like(image, 255)),
                      (f"{name}: prediction", definition.picture_map(result, config, reference=truth))]
    grid = visualize.panel(tiles, columns=1 + 2 * len(names), tile_height=tile_height)
    return np.asarray(grid.convert("RGB"))


# --------------------------------------------------------------------------------------------- trackers
def require_tracker(name: str) -> Any:
    """The tracker's module, imported now; one line naming the extra to install when it is missing."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise UserError(f"tracker={name} needs the {name} library: pip install 'polymax[{name}]' "
                        "(or set tracker to '' to log to scalars.jsonl / TensorBoard only)") from None


class WandbTracker:
    """One W&B run per training process (rank 0), named after the output folder; project $WANDB_PROJECT or
    'polymax'."""

    def __init__(self, wandb: Any, *, out_dir: Path, config: dict[str, Any]) -> None:
        import os

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "polymax"), name=out_dir.name,
                              dir=str(out_dir), config=config)

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class MlflowTracker:
    """One MLflow run (tracking URI and experiment from MLFLOW_TRACKING_URI / MLFLOW_EXPERIMENT_NAME), named
    after the output folder; the config as flattened parameters."""

    def __init__(self, mlflow: Any, *, out_dir: Path, config: dict[str, Any]) -> None:
        self.mlflow = mlflow
        mlflow.start_run(run_name=out_dir.name)
        mlflow.log_params({key: str(value)[:500] for key, value in flatten_config(config).items()})

    def log(self, step: int, values: dict[str, float]) -> None:
        self.mlflow.log_metrics(values, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


TRACKERS = {"wandb": WandbTracker, "mlflow": MlflowTracker}
