"""Regenerates the deeplab2 parity fixtures' weights from their manifests (see the fixtures' README §3)."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np

FIXTURES = ("coco_r50", "coco_convnext_tiny")


def array_for(entry: dict) -> np.ndarray:
    rng = np.random.default_rng(entry["seed"])
    shape = tuple(entry["shape"])
    if entry["dist"] == "normal":
        return (rng.standard_normal(shape) * entry["b"] + entry["a"]).astype(np.float32)
    if entry["dist"] == "uniform":
        return rng.uniform(entry["a"], entry["b"], shape).astype(np.float32)
    raise ValueError(f"unknown distribution {entry['dist']!r} for {entry['name']}")


@functools.lru_cache(maxsize=2)
def load_manifest(parity: Path, fixture: str) -> dict:
    return json.loads((parity / f"{fixture}_manifest.json").read_text())


@functools.lru_cache(maxsize=2)
def official_variables(parity: Path, fixture: str) -> dict[str, np.ndarray]:
    """Checkpoint variable name (without /.ATTRIBUTES/VARIABLE_VALUE) → float32 array, hashes verified."""
    arrays = {}
    for entry in load_manifest(parity, fixture)["variables"]:
        array = array_for(entry)
        digest = hashlib.sha256(np.ascontiguousarray(array, dtype="<f4").tobytes()).hexdigest()
        if digest != entry["sha256"]:
            raise AssertionError(f"recipe mismatch for {entry['name']}")
        arrays[entry["name"]] = array
    return arrays


@functools.lru_cache(maxsize=2)
def golden_outputs(parity: Path, fixture: str) -> dict[str, np.ndarray]:
    """The stored official outputs, key → array (TF layouts: NHWC maps, [B, N, C] per-query tensors)."""
    with np.load(parity / f"{fixture}.npz") as data:
        return {key: data[key] for key in data.files}


def nhwc_to_nchw(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array.transpose(0, 3, 1, 2))


def assert_close_to_scale(actual: np.ndarray, expected: np.ndarray, name: str, rel: float = 1e-4) -> float:
    """max|Δ| ≤ rel · max|ref| (the fixtures' README §8). Returns the measured ratio."""
    scale = float(np.abs(expected).max())
    diff = float(np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max())
    ratio = diff / max(scale, 1e-12)
    assert ratio <= rel, f"{name}: max|Δ| = {diff:.3g} vs max|ref| = {scale:.3g} (ratio {ratio:.3g} > {rel})"
    return ratio
