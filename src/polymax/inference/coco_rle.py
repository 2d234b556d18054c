"""COCO run-length encoding of binary masks (the ``segmentation`` of a COCO results JSON), without pycocotools.

The format, as the COCO API documents it: the (H, W) mask is read column by column (Fortran order); ``counts``
lists the lengths of alternating runs of 0s and 1s, starting with 0s (a mask whose first pixel is 1 starts with
a zero-length run). The compressed form writes ``counts`` as a string: from the third count on, each count is
stored as its difference from the count two places before; every value is split into 5-bit groups, least
significant first, each group written as one character ``chr(48 + group)`` with bit 0x20 set when more groups
follow; the last group's bit 0x10 is the sign (the value is sign-extended from it).
"""

from __future__ import annotations

import numpy as np


def encode(mask: np.ndarray) -> dict:
    """(H, W) bool mask → ``{"size": [H, W], "counts": str}``, the compressed COCO RLE."""
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts_to_string(run_lengths(mask))}


def decode(rle: dict) -> np.ndarray:
    """A COCO RLE (compressed string or uncompressed list ``counts``) → (H, W) bool mask."""
    height, width = (int(n) for n in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = string_to_counts(counts.decode("ascii") if isinstance(counts, bytes) else counts)
    if sum(counts) != height * width:
        raise ValueError(f"RLE counts sum to {sum(counts)}, not H·W = {height * width}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True                           # runs alternate 0, 1, 0, …
    flat = np.repeat(values, counts)
    return flat.reshape((width, height)).T        # column-major: the flat order walks down each column


def run_lengths(mask: np.ndarray) -> list[int]:
    """Alternating run lengths (0s first) of the mask read in column-major order."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return [0]
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    return [0, *runs] if flat[0] else runs


def counts_to_string(counts: list[int]) -> str:
    """Run lengths → the compressed counts string (module docstring)."""
    characters = []
    for index, count in enumerate(counts):
        value = int(count) - (int(counts[index - 2]) if index > 2 else 0)
        more = True
        while more:
            group = value & 0x1F
            value >>= 5                           # arithmetic shift: negative values stay negative
            more = value != -1 if group & 0x10 else value != 0
            characters.append(chr(48 + (group | 0x20 if more else group)))
    return "".join(characters)


def string_to_counts(text: str) -> list[int]:
    """The compressed counts string → run lengths (inverse of :func:`counts_to_string`)."""
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            group = ord(text[position]) - 48
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position, shift = position + 1, shift + 5
            if not more and group & 0x10:
                value |= -1 << shift              # sign-extend from the last group's 0x10 bit
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts
