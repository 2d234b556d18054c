"""Pictures and files for one :class:`~polymax.inference.predictor.PredictionResult`.

Files written by :func:`write_outputs` for an image named NAME (all at the image's original size):

==============================  ===================================================================  ===========
file                            content                                                               tasks
==============================  ===================================================================  ===========
NAME_semantic.png               16-bit grey PNG, class index 0..C−1 per pixel, ignore label = void    panoptic, semantic
NAME_semantic_color.png         class colours, legend of the classes present on the right             panoptic, semantic
NAME_panoptic.png               16-bit grey PNG, segment id 1..N per pixel (0 = void), the ids of     panoptic
                                NAME_segments.json
NAME_segments.json              COCO-panoptic style record: ``segments_info`` with id, category_id   panoptic
                                (the model's class index), category_name, isthing, iscrowd, area,
                                bbox (x, y, w, h), score, panoptic_id (class·label_divisor + instance)
NAME_panoptic_color.png         class colours, instances shaded apart, dark boundaries, legend        panoptic
NAME_depth.png                  16-bit grey PNG, metric depth in millimetres (clipped to 65535)       depth
NAME_depth_color.png            colour-mapped depth (near dark blue → far yellow) with its scale      depth
NAME_depth.npy                  float32 (H, W) metres — with ``npy=True``                             depth
NAME_normals.png                RGB = (n + 1) / 2 · 255 per pixel, n = unit normal (x, y, z)          normals
NAME_normals.npy                float32 (H, W, 3) unit vectors — with ``npy=True``                    normals
NAME_probabilities.png          mosaic of the K per-cluster probability maps (0 dark → 1 yellow)      when asked
NAME_probabilities.npy          float16 (K, H, W) — when asked and with ``npy=True``                  when asked
==============================  ===================================================================  ===========
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from polymax.config.model import ModelConfig
from polymax.errors import UserError
from polymax.inference.predictor import PredictionResult
from polymax.inference.visualize import (
    colorize_depth,
    colorize_normals,
    colorize_panoptic,
    colorize_semantic,
    legend,
    probability_grid,
    ramp,
)

MAX_DEPTH_MM = 65535
_GRID_TILE = 128   # longest side of one probability map in the mosaic


@dataclass
class Picture:
    """A titled picture of one output (what the web page and the files show)."""

    key: str        # file-name suffix: NAME_{key}.png
    title: str
    image: Image.Image


def pictures(result: PredictionResult, config: ModelConfig) -> list[Picture]:
    """The colour pictures of every output the result holds, in a fixed order."""
    info = config.dataset
    shown: list[Picture] = []
    if result.panoptic is not None:
        rgb = colorize_panoptic(result.panoptic, colors=info.colors, num_classes=info.num_classes,
                                label_divisor=info.label_divisor, ignore_label=info.ignore_label)
        present = sorted({s.category for s in result.segments or []})
        shown.append(Picture("panoptic_color", "panoptic", _with_legend(rgb, config, present)))
    if result.semantic is not None:
        rgb = colorize_semantic(result.semantic, colors=info.colors, num_classes=info.num_classes,
                                ignore_label=info.ignore_label)
        present = [int(c) for c in np.unique(result.semantic) if 0 <= c < info.num_classes]
        shown.append(Picture("semantic_color", "semantic", _with_legend(rgb, config, present)))
    if result.depth is not None:
        low, high = float(np.min(result.depth)), float(np.max(result.depth))
        rgb = colorize_depth(result.depth, min_depth=low, max_depth=max(high, low + 1e-6))
        shown.append(Picture("depth_color", "depth", _with_depth_scale(rgb, low, high)))
    if result.normals is not None:
        shown.append(Picture("normals", "surface normals", Image.fromarray(normals_rgb(result.normals))))
    if result.probabilities is not None:
        shown.append(Picture("probabilities", f"{len(result.probabilities)} cluster probabilities",
                             Image.fromarray(probability_grid(_shrink(result.probabilities)))))
    return shown


def write_outputs(result: PredictionResult, *, config: ModelConfig, out_dir: str | Path, name: str,
                  source: str | None = None, npy: bool = False) -> list[Path]:
    """Write the files of the table above under ``out_dir`` (``name`` may hold sub-folders); returns them."""
    base = Path(out_dir) / name
    written: list[Path] = []

    def save(suffix: str, write) -> None:
        path = base.parent / f"{base.name}_{suffix}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write(path)
        except OSError as error:
            raise UserError(f"cannot write {path}: {error.strerror or error}") from error
        written.append(path)

    for picture in pictures(result, config):
        save(f"{picture.key}.png", picture.image.save)
    if result.semantic is not None:
        save("semantic.png", lambda p: _save_uint16(result.semantic, p))
    if result.panoptic is not None:
        segment_ids = segment_id_map(result)
        save("panoptic.png", lambda p: _save_uint16(segment_ids, p))
        record = segments_record(result, config, file_name=f"{base.name}_panoptic.png", source=source)
        save("segments.json", lambda p: p.write_text(json.dumps(record, indent=2) + "\n"))
    if result.depth is not None:
        save("depth.png", lambda p: _save_uint16(depth_to_millimetres(result.depth), p))
        if npy:
            save("depth.npy", lambda p: np.save(p, result.depth.astype(np.float32)))
    if result.normals is not None and npy:
        save("normals.npy", lambda p: np.save(p, result.normals.astype(np.float32)))
    if result.probabilities is not None and npy:
        save("probabilities.npy", lambda p: np.save(p, result.probabilities.astype(np.float16)))
    return written


def depth_to_millimetres(depth: np.ndarray) -> np.ndarray:
    """(H, W) metres → uint16 millimetres, rounded, clipped to 0..65535 (65.5 m)."""
    return np.clip(np.round(np.asarray(depth, dtype=np.float64) * 1000.0), 0, MAX_DEPTH_MM).astype(np.uint16)


def normals_rgb(normals: np.ndarray) -> np.ndarray:
    """(H, W, 3) unit normals → (H, W, 3) uint8 with RGB = (n + 1) / 2 · 255."""
    return colorize_normals(np.asarray(normals).transpose(2, 0, 1))


def segment_id_map(result: PredictionResult) -> np.ndarray:
    """(H, W) int64: the 1-based id of each pixel's segment in ``result.segments``, 0 for void."""
    ids = np.zeros(result.panoptic.shape, dtype=np.int64)
    for segment in result.segments or []:
        ids[result.panoptic == segment.panoptic_id] = segment.id
    return ids


def segments_record(result: PredictionResult, config: ModelConfig, *, file_name: str,
                    source: str | None = None) -> dict:
    """The COCO-panoptic style JSON record of one image (see the table in the module docstring)."""
    info = config.dataset
    return {
        "image": source,
        "file_name": file_name,
        "height": int(result.size[0]),
        "width": int(result.size[1]),
        "label_divisor": info.label_divisor,
        "segments_info": [
            {"id": s.id, "category_id": s.category, "category_name": s.category_name, "isthing": int(s.is_thing),
             "iscrowd": 0, "area": s.area, "bbox": list(s.bbox), "score": round(s.score, 6),
             "panoptic_id": s.panoptic_id}
            for s in result.segments or []],
        "categories": [
            {"id": index, "name": name, "isthing": int(index in info.thing_classes),
             "color": list(info.colors[index]) if index < len(info.colors) else None}
            for index, name in enumerate(info.class_names)],
    }


def _save_uint16(array: np.ndarray, path: Path) -> None:
    if array.size and (array.min() < 0 or array.max() > 65535):
        raise UserError(f"{path}: values {array.min()}..{array.max()} do not fit a 16-bit PNG")
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint16)).save(path)


def _with_legend(rgb: np.ndarray, config: ModelConfig, present: list[int]) -> Image.Image:
    """The colour map with a legend of the ``present`` classes to its right (white background)."""
    info = config.dataset
    key = legend(info.class_names, info.colors, present=present)
    picture = Image.fromarray(rgb)
    canvas = Image.new("RGB", (picture.width + key.width + 4, max(picture.height, key.height)), (255, 255, 255))
    canvas.paste(picture, (0, 0))
    canvas.paste(key, (picture.width + 4, 0))
    return canvas


def _with_depth_scale(rgb: np.ndarray, low: float, high: float) -> Image.Image:
    """The depth picture with a colour bar and the metric range written under it."""
    picture = Image.fromarray(rgb)
    width = max(picture.width, 160)
    bar = ramp(np.linspace(0.0, 1.0, width)[None].repeat(8, axis=0), 0.0, 1.0)
    canvas = Image.new("RGB", (width, picture.height + 26), (255, 255, 255))
    canvas.paste(picture, (0, 0))
    canvas.paste(Image.fromarray(bar), (0, picture.height + 2))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    # Enough decimals that the two ends differ (a nearly flat depth map still gets a readable scale).
    decimals = min(4, max(2, 1 - math.floor(math.log10(max(high - low, 1e-4)))))
    draw.text((2, picture.height + 12), f"{low:.{decimals}f} m", fill=(0, 0, 0), font=font)
    label = f"{high:.{decimals}f} m"
    draw.text((width - 2 - int(font.getlength(label)), picture.height + 12), label, fill=(0, 0, 0), font=font)
    return canvas


def _shrink(probabilities: np.ndarray) -> np.ndarray:
    """(K, H, W) → (K, h, w) with the longer side at most _GRID_TILE pixels (nearest), for the mosaic."""
    k, height, width = probabilities.shape
    step = max(1, -(-max(height, width) // _GRID_TILE))
    return probabilities[:, ::step, ::step]
