"""Pictures and files for one task :class:`~polymax.structures.Result` (what ``polymax predict`` writes).

Files written by :func:`write_outputs` for an image named NAME (all at the image's original size); each task's
own files and pictures come from its module in :mod:`polymax.tasks`:

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
NAME_instance.png               16-bit grey PNG, instance id 1..N per pixel (0 = background), the     instance
                                ids of NAME_instances.json (same record as NAME_segments.json)
NAME_instance_color.png         the instances in their class colours, legend                          instance
NAME_depth.png                  16-bit grey PNG, metric depth in millimetres (clipped to 65535)       depth
NAME_depth_color.png            colour-mapped depth (near dark blue → far yellow), colour bar in m    depth
NAME_depth.npy                  float32 (H, W) metres — with ``npy=True``                             depth
NAME_normals.png                RGB = (n + 1) / 2 · 255 per pixel, n = unit normal (x, y, z)          normals
NAME_normals_color.png          the same colours with a key to the colour code                        normals
NAME_normals.npy                float32 (H, W, 3) unit vectors — with ``npy=True``                    normals
NAME_TASK_overlay.png           the colour map laid over the input, with its key — with ``image``     every task
NAME_probabilities.png          the K per-cluster probability maps, each captioned with its cluster's  when asked
                                value (class, bin depth, normal), one scale from 0 (blue) to the max
NAME_probabilities.npy          float16 (K, H, W) — when asked and with ``npy=True``                  when asked
==============================  ===================================================================  ===========

Every colour picture carries its key: a legend of the classes shown and of void (black), the depth colour bar in
metres, or the normal colour code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from polymax.config.model import ModelConfig
from polymax.errors import UserError
from polymax.structures import Result
from polymax.tasks import get_task
from polymax.tasks.base import Picture
from polymax.tasks.keys import overlay, with_key
from polymax.tasks.visualize import cluster_panel

_GRID_TILE = 128   # longest side of one probability map in the mosaic


def pictures(result: Result, config: ModelConfig, *, image: np.ndarray | None = None) -> list[Picture]:
    """The colour pictures of the result's task; with ``image`` ((H, W, 3) uint8, the input) also the colour map
    laid over it; then the captioned probability maps when the result holds them."""
    task = get_task(result.task)
    shown = list(task.pictures(result, config))
    if image is not None:
        colors = task.picture_map(result, config)
        key = task.key([result], config, height=colors.shape[0])
        shown.append(Picture(f"{result.task}_overlay", f"{result.task} on the input",
                             with_key(overlay(image, colors), key)))
    if result.probabilities is not None:
        probabilities = _shrink(result.probabilities)
        tile = min(_GRID_TILE, max(probabilities.shape[1:]))
        shown.append(Picture("probabilities", f"{len(probabilities)} cluster probabilities",
                             cluster_panel(probabilities, result.clusters or [], tile_height=tile,
                                           title=f"{result.task}: per-cluster probability maps")))
    return shown


def write_outputs(result: Result, *, config: ModelConfig, out_dir: str | Path, name: str,
                  source: str | None = None, npy: bool = False, image: np.ndarray | None = None) -> list[Path]:
    """Write the files of the table above under ``out_dir`` (``name`` may hold sub-folders); returns them.
    ``image``: the input at its own size, for the overlay picture (None: no overlay)."""
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

    for picture in pictures(result, config, image=image):
        save(f"{picture.key}.png", picture.image.save)
    get_task(result.task).write_files(result, config, save, base_name=base.name, source=source, npy=npy)
    if result.probabilities is not None and npy:
        save("probabilities.npy", lambda p: np.save(p, result.probabilities.astype(np.float16)))
    return written


def _shrink(probabilities: np.ndarray) -> np.ndarray:
    """(K, H, W) → (K, h, w) with the longer side at most _GRID_TILE pixels (nearest), for the mosaic."""
    k, height, width = probabilities.shape
    step = max(1, -(-max(height, width) // _GRID_TILE))
    return probabilities[:, ::step, ::step]
