"""Decoding and preparing ``polymax predict``'s input files in DataLoader workers while the model runs.

Each worker reads a file (:func:`~polymax.inference.images_io.load_rgb`: pixel limit before decoding, EXIF
orientation) and prepares the network's input with the predictor's :class:`~polymax.inference.predictor.
Preprocess` (shrink, resize, pad), which holds no model. A file that cannot be read comes back as its one-line
error, never as an exception, so the run reports it and goes on. Batches keep the input order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from polymax.errors import UserError
from polymax.inference.images_io import InputImage, load_rgb
from polymax.inference.predictor import PreparedImage, Preprocess


@dataclass
class LoadedImage:
    """One input file after a worker: its network input and pixels (the overlay draws on them), or its error."""

    item: InputImage
    prepared: PreparedImage | None = None
    array: np.ndarray | None = None      # (H, W, 3) uint8, only when the caller keeps the pixels
    error: str | None = None


class InputFiles(torch.utils.data.Dataset):
    """The found input files as a data set of :class:`LoadedImage` (picklable: no model inside)."""

    def __init__(self, images: list[InputImage], preprocess: Preprocess, *, max_pixels: int | None = None,
                 keep_pixels: bool = False) -> None:
        self.images, self.preprocess = images, preprocess
        self.max_pixels, self.keep_pixels = max_pixels, keep_pixels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> LoadedImage:
        item = self.images[index]
        try:
            array = load_rgb(item.path, max_pixels=self.max_pixels)
        except UserError as error:
            return LoadedImage(item, error=str(error))
        return LoadedImage(item, self.preprocess(array), array if self.keep_pixels else None)


def as_list(batch: list[LoadedImage]) -> list[LoadedImage]:
    """collate_fn: a batch stays a list (images of different sizes, and errors, travel together)."""
    return batch


def default_workers() -> int:
    """Decoding workers by default: 2, fewer on a machine with fewer cores (the model needs them too)."""
    return min(2, max(0, (os.cpu_count() or 1) - 1))


def input_loader(files: InputFiles, *, batch_size: int, workers: int) -> torch.utils.data.DataLoader:
    """Batches of :class:`LoadedImage` in input order; ``workers`` 0 reads in this process. Fewer workers than
    files (a one-image run starts none: a worker would only add its start-up time)."""
    workers = min(workers, max(0, len(files) - 1))
    return torch.utils.data.DataLoader(files, batch_size=batch_size, shuffle=False, num_workers=workers,
                                       collate_fn=as_list, prefetch_factor=2 if workers else None,
                                       persistent_workers=False)
