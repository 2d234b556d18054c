"""Training checkpoints: a loadable model directory plus everything needed to continue bit for bit.

Layout of ``OUT/last/`` (the only checkpoint a run keeps; it is replaced as a whole):

    config.json, model.safetensors   the model, exactly as ``polymax.io.pretrained.save_pretrained`` writes it,
                                     so ``polymax.load_model(OUT/last)`` works on any checkpoint
    training_state.pt                optimiser and scheduler state, step, data-stream position and the RNG
                                     states of every rank (python, numpy, torch CPU / CUDA, extra generators)
    train_config.yaml                the resolved TrainConfig of the run

The directory is written under a temporary name and renamed into place; the previous checkpoint is moved
aside first and deleted last, so at every instant one complete checkpoint exists (``last`` or, for the
instant between the two renames, ``last.previous``). ``training_state.pt`` holds only tensors and plain
Python values and is read with ``torch.load(weights_only=True)``. Every file and the folder are fsynced before
the rename, so a power cut cannot leave a renamed checkpoint with empty files; the temporary folder of a save
that was killed is removed when the next run starts (:func:`remove_interrupted_saves`).

With ``TrainConfig.keep_best`` the run also keeps ``OUT/best/``, written the same way by the same function
(:mod:`polymax.engine.best`), and ``OUT/best.json`` saying which step and value it holds.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from polymax.errors import UserError

TRAINING_STATE_FILE = "training_state.pt"
TRAIN_CONFIG_FILE = "train_config.yaml"
LAST = "last"
BEST = "best"      # the best evaluation's checkpoint (TrainConfig.keep_best, polymax.engine.best), same layout
_PREVIOUS_SUFFIX = ".previous"


@dataclass
class TrainingState:
    """What a checkpoint restores besides the weights. step: optimiser steps done. samples_seen: global
    training-stream position (step × global batch). rng: one capture_rng() dict per rank (index = rank)."""

    step: int
    samples_seen: int
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    grad_scaler: dict[str, Any] = field(default_factory=dict)   # fp16 loss scale (empty for fp32 / bf16)
    objective: dict[str, Any] = field(default_factory=dict)   # the objective's own weights (OneFormer's text side)


def capture_rng(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """This process's random states: python, numpy, torch CPU, every CUDA device, and named generators."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "generators": {name: gen.get_state() for name, gen in (generators or {}).items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    """Inverse of :func:`capture_rng`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, generator in (generators or {}).items():
        if name in state["generators"]:
            generator.set_state(state["generators"][name])


def save_checkpoint(directory: str | os.PathLike, *, model: nn.Module, state: TrainingState,
                    config_yaml: str) -> Path:
    """Write ``model`` (unwrapped, with ``.config``) and ``state`` to ``directory`` atomically."""
    from polymax.io.pretrained import save_pretrained

    target = Path(directory)
    temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    previous = target.with_name(target.name + _PREVIOUS_SUFFIX)
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        save_pretrained(model, temporary)
        torch.save(_as_dict(state), temporary / TRAINING_STATE_FILE)
        (temporary / TRAIN_CONFIG_FILE).write_text(config_yaml)
        fsync_tree(temporary)
        shutil.rmtree(previous, ignore_errors=True)
        if target.exists():
            os.replace(target, previous)
        os.replace(temporary, target)
        fsync_tree(target.parent, files=False)   # the renames themselves
        shutil.rmtree(previous, ignore_errors=True)
    except OSError as error:
        shutil.rmtree(temporary, ignore_errors=True)
        raise UserError(f"cannot write the checkpoint {target}: {error.strerror or error}") from error
    return target


# The recipe a run may not silently change on --resume (section, field); ``steps`` may grow (a run is extended).
RECIPE_FIELDS = (("data", "batch_size"), ("optim", "lr"), ("", "steps"), ("data", "dataset"), ("data", "root"))


def recipe_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """'field old → new' for each recipe field that differs between a checkpoint's config and this run's
    (both ``TrainConfig.to_dict()``); a larger ``steps`` extends the run and is not a change."""
    changes = []
    for section, name in RECIPE_FIELDS:
        old = (saved.get(section) or {}).get(name) if section else saved.get(name)
        new = (current.get(section) or {}).get(name) if section else current.get(name)
        if name == "root" and old is not None and new is not None:
            same = Path(old).resolve() == Path(new).resolve()
        elif name == "steps" and isinstance(old, int) and isinstance(new, int):
            same = new >= old
        else:
            same = old == new
        if not same:
            changes.append(f"{section + '.' if section else ''}{name} {old} → {new}")
    return changes


def saved_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The TrainConfig (as a dict) a checkpoint was written with; {} when its file is missing or unreadable."""
    import yaml

    try:
        data = yaml.safe_load((Path(directory) / TRAIN_CONFIG_FILE).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def fsync_tree(directory: Path, *, files: bool = True) -> None:
    """Flush ``directory``'s files (with ``files``) and the folder entry itself to the disk."""
    if files:
        for path in sorted(directory.iterdir()):
            if path.is_file():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:          # some systems cannot open a folder; its files are safe already
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def remove_interrupted_saves(out_dir: str | os.PathLike) -> None:
    """Delete the temporary folders (``.last.tmp-PID``, ``.best.tmp-PID``) and files (``.best.json.tmp-PID``)
    that a save killed midway left in ``out_dir``."""
    for leftover in Path(out_dir).glob(".*.tmp-*"):
        if leftover.name.startswith((f".{LAST}.", f".{BEST}.")):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def find_checkpoint(out_dir: str | os.PathLike) -> Path:
    """The checkpoint to resume from in a run folder (``last``, or ``last.previous`` if a save was cut off
    between its two renames); a UserError when there is none."""
    out = Path(out_dir)
    for candidate in (out / LAST, out / (LAST + _PREVIOUS_SUFFIX)):
        if (candidate / TRAINING_STATE_FILE).is_file():
            return candidate
    raise UserError(f"--resume: no checkpoint in {out} (expected {out / LAST / TRAINING_STATE_FILE}); "
                    "start without --resume or point --out at an earlier run")


def load_checkpoint(directory: str | os.PathLike, *, model: nn.Module) -> TrainingState:
    """Load the weights of ``directory`` into ``model`` (strictly) and return the rest of the state."""
    from safetensors.torch import load_file

    from polymax.io.pretrained import WEIGHTS_FILE

    directory = Path(directory)
    try:
        weights = load_file(str(directory / WEIGHTS_FILE))
        raw = torch.load(directory / TRAINING_STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as error:  # safetensors, pickle and OS errors all mean: this checkpoint is unusable
        raise UserError(f"checkpoint {directory} cannot be read ({type(error).__name__}: {error})") from error
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise UserError(f"checkpoint {directory} does not fit this model "
                        f"({str(error).splitlines()[0]}); was it written with another preset?") from error
    return TrainingState(**raw)


def _as_dict(state: TrainingState) -> dict[str, Any]:
    return {"step": state.step, "samples_seen": state.samples_seen, "optimizer": state.optimizer,
            "scheduler": state.scheduler, "rng": state.rng, "config": state.config, "grad_scaler": state.grad_scaler,
            **({"objective": state.objective} if state.objective else {})}
