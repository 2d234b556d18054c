"""Portable model directories: ``config.json`` + ``model.safetensors`` (no pickle).

``save_pretrained(model, path)`` writes both files atomically (temporary name, then rename), so an
interrupted save never leaves a half-written model that loads. ``load_model(path)`` rebuilds the model
from the saved :class:`~polymax.config.model.ModelConfig` and loads the weights strictly.

Format versions: 2 (this release) holds a tuple of task configs and one head per task (``heads.<task>.…``);
folders of version 1 (one ``task`` with a ``kind``; weights ``task_head.…`` / ``head.…``) load through
:func:`~polymax.config.model.migrate_config_dict` and :func:`migrate_state_dict`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from polymax.config.model import ModelConfig
from polymax.errors import UserError
from polymax.tokenizer.config import TokenizerConfig, is_tokenizer_dict

FORMAT_NAME = "polymax"
FORMAT_VERSION = 2
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def save_pretrained(model: nn.Module, path: str | os.PathLike, *, extra: dict | None = None,
                    metrics: dict[str, float] | None = None) -> Path:
    """Write ``model`` (which must carry ``model.config: ModelConfig``) to the directory ``path``, with a
    README.md model card (:mod:`polymax.io.model_card`; ``metrics`` go into it)."""
    from safetensors.torch import save_file

    from polymax import __version__

    config = getattr(model, "config", None)
    if not isinstance(config, (ModelConfig, TokenizerConfig)):
        raise TypeError("save_pretrained needs a model built by polymax.build_model (it has no .config)")
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the model directory {directory}: {error.strerror}") from error
    header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "polymax_version": __version__,
              "config": config.to_dict()}
    if extra:
        header["extra"] = extra
    # safetensors refuses shared / non-contiguous storage: store independent contiguous copies.
    tensors = {key: value.detach().cpu().contiguous().clone() for key, value in model.state_dict().items()}
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    atomic_write(directory / CONFIG_FILE, lambda tmp: tmp.write_text(json.dumps(header, indent=2) + "\n"))
    from polymax.io.model_card import write_model_card
    write_model_card(directory, config, metrics=metrics)
    return directory


def read_config(path: str | os.PathLike) -> ModelConfig | TokenizerConfig:
    """The ModelConfig (a tokenizer folder: TokenizerConfig) of a saved model directory (or Hub repo id), with
    clear errors for missing or foreign files."""
    from polymax.io.hub import resolve_model_path
    directory = resolve_model_path(path)
    config_path = directory / CONFIG_FILE
    if not directory.is_dir():
        raise UserError(f"model directory {directory} does not exist; pass a folder written by save_pretrained, "
                        "`polymax train` or `polymax convert`")
    if not config_path.is_file():
        raise UserError(f"{config_path} is missing; {directory} is not a polymax model directory")
    try:
        header = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{config_path} is not valid JSON ({error}); the file is corrupt") from error
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise UserError(f"{config_path} was not written by polymax (no 'format: polymax' field)")
    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise UserError(f"{config_path} has format version {version}, newer than this polymax understands "
                        f"({FORMAT_VERSION}); upgrade polymax (`pip install -U polymax`)")
    if "config" not in header:
        raise UserError(f"{config_path} has no 'config' section; the file is incomplete")
    try:
        if is_tokenizer_dict(header["config"]):
            return TokenizerConfig.from_dict(header["config"])
        return ModelConfig.from_dict(header["config"])
    except UserError as error:
        raise UserError(f"{config_path}: {error}") from None


def load_model(path: str | os.PathLike, *, map_location: str | torch.device = "cpu",
               revision: str | None = None) -> nn.Module:
    """Rebuild and load a model written by :func:`save_pretrained`, from its folder or a Hugging Face Hub repo
    id ``owner/name`` (at ``revision``; the ``hub`` extra, :mod:`polymax.io.hub`); returned in eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from polymax.build import build_model
    from polymax.io.hub import resolve_model_path

    path = resolve_model_path(path, revision=revision)

    config = read_config(path)
    weights_path = Path(path) / WEIGHTS_FILE
    if not weights_path.is_file():
        raise UserError(f"{weights_path} is missing; the model directory is incomplete")
    try:
        state = load_file(str(weights_path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as error:
        raise UserError(f"{weights_path} could not be read ({error}); the file is corrupt or truncated") from error
    try:
        model = build_model(config)
    except UserError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError) as error:   # well-typed but inconsistent
        raise UserError(f"{Path(path) / CONFIG_FILE} does not describe a model that can be built "
                        f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from None
    if isinstance(config, ModelConfig):
        state = migrate_state_dict(state, config)
    for key, tensor in state.items():   # a NaN weight makes every output NaN: refuse it here, by name
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UserError(f"{weights_path}: tensor {key!r} holds NaN or infinite values; the weights are corrupt")
    expected = model.state_dict()
    misshaped = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    # Loading runs the model's own state-dict hooks (e.g. statistics kept per query group by an older version).
    result = None if misshaped else model.load_state_dict(state, strict=False)
    missing = sorted(set(expected) - set(state)) if result is None else sorted(result.missing_keys)
    unexpected = sorted(set(state) - set(expected)) if result is None else sorted(result.unexpected_keys)
    if missing or unexpected or misshaped:
        raise UserError(f"{weights_path} does not match preset {config.preset!r}: "
                        f"{_summary('missing', missing)}{_summary('unexpected', unexpected)}"
                        f"{_summary('mis-shaped', misshaped)}".rstrip("; "))
    return model.eval()


def migrate_state_dict(state: dict, config: ModelConfig) -> dict:
    """Weights of a version-1 folder under today's names: the single task head ``task_head.…`` (kMaX) or
    ``head.…`` (the per-pixel baseline) becomes ``heads.<task>.…``. Current weights pass unchanged."""
    old_prefix = "head." if config.architecture == "deeplabv3plus" else "task_head."
    if not any(key.startswith(old_prefix) for key in state) or len(config.tasks) != 1:
        return state
    new_prefix = f"heads.{config.tasks[0].name}."
    return {(new_prefix + key[len(old_prefix):] if key.startswith(old_prefix) else key): value
            for key, value in state.items()}


def _summary(label: str, keys: list[str]) -> str:
    if not keys:
        return ""
    shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
    return f"{len(keys)} {label} ({shown}); "


def atomic_write(target: Path, write) -> None:
    """``write(tmp)`` to a temporary name beside ``target``, then rename: readers see the old file or the
    complete new one, never a partial one. Failures become a one-line UserError naming ``target``."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as handle:   # on the disk before the rename makes it visible
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {target}: {error.strerror or error}") from error
