"""The OneFormer golden outputs (shared/fixtures/oneformer_hf, see its README): weights regenerated from the
manifest's seeded recipe (sha256 checked), the stored arrays, and loaders that put the reference's weights into
our modules under their names (README §6 maps the Hugging Face names to the pieces)."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from deeplab2_fixture import array_for


def _folder(shared: Path) -> Path:
    return shared / "fixtures" / "oneformer_hf"


@functools.cache
def manifest(shared: Path) -> dict:
    return json.loads((_folder(shared) / "manifest.json").read_text())


@functools.cache
def reference_weights(shared: Path) -> dict[str, torch.Tensor]:
    """Hugging Face state-dict name → float32 tensor, every sha256 verified."""
    weights = {}
    for entry in manifest(shared)["variables"]:
        array = array_for(entry)
        if hashlib.sha256(np.ascontiguousarray(array, dtype="<f4").tobytes()).hexdigest() != entry["sha256"]:
            raise AssertionError(f"recipe mismatch for {entry['name']}")
        weights[entry["name"]] = torch.from_numpy(array)
    return weights


@functools.cache
def golden(shared: Path) -> dict[str, np.ndarray]:
    with np.load(_folder(shared) / "oneformer_hf.npz") as data:
        return {key: data[key] for key in data.files}


def load_renamed(module: torch.nn.Module, weights: dict[str, torch.Tensor], renames: dict[str, str]) -> None:
    """Copy ``weights[reference name]`` into ``module``'s parameter ``renames[reference prefix] + rest``; every
    parameter of ``module`` must be filled exactly once."""
    state = {}
    for name, value in weights.items():
        for prefix, ours in renames.items():
            if name.startswith(prefix):
                state[ours + name[len(prefix):]] = value
                break
    missing, unexpected = module.load_state_dict(state, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
