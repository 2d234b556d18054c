"""The AiT VQ-VAE golden outputs (tests/fixtures/ait_vqvae, see its README): the official depth tokenizer's
weights regenerated from the manifest's seeded recipe (sha256 checked), loaded into our VQVAE, and the stored
arrays. A missing file fails the tests that use it; it never skips them."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from deeplab2_fixture import array_for

AIT_DIR = Path(__file__).resolve().parent / "fixtures" / "ait_vqvae"
AIT_FILES = ("manifest.json", "ait_vqvae.npz", "README.md")
# The reference's codebook buffer names → ours (encoder.* / decoder.* are the same).
RENAMES = {"_vq_vae._embedding": "codebook.embedding", "_vq_vae._ema_w": "codebook.ema_weight",
           "_vq_vae._ema_cluster_size": "codebook.ema_size"}


def folder() -> Path:
    missing = [name for name in AIT_FILES if not (AIT_DIR / name).is_file()]
    if missing:
        pytest.fail(f"AiT fixtures missing from {AIT_DIR}: {', '.join(missing)}", pytrace=False)
    return AIT_DIR


@functools.cache
def manifest() -> dict:
    return json.loads((folder() / "manifest.json").read_text())


@functools.cache
def reference_state() -> dict[str, torch.Tensor]:
    """Our state-dict name → float32 tensor of the reference's seeded weights, every sha256 verified."""
    state = {}
    for entry in manifest()["variables"]:
        array = array_for(entry)
        if hashlib.sha256(np.ascontiguousarray(array, dtype="<f4").tobytes()).hexdigest() != entry["sha256"]:
            raise AssertionError(f"recipe mismatch for {entry['name']}")
        state[RENAMES.get(entry["name"], entry["name"])] = torch.from_numpy(array)
    return state


@functools.cache
def golden() -> dict[str, np.ndarray]:
    with np.load(folder() / "ait_vqvae.npz") as data:
        return {key: data[key] for key in data.files}
