"""Evaluation and training conventions that belong to the data, not to the model: where depth is scored.

A data set may carry ``.protocol`` (a :class:`DepthProtocol`); evaluation then scores depth on the protocol's crop
and valid range whatever the set is called, so NYUD-v2 read from the official ``.mat``, from a ``folder`` or
from a BTS-style list file is evaluated the same way, and the depth training recipe takes its border crop from
it. Sets without a protocol are scored on the whole image within the model's own depth range.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from polymax.errors import UserError


@dataclass(frozen=True)
class DepthProtocol:
    """name: for messages. size: (H, W) of the ground truth the crops refer to; images of another size are
    scored / trained without them. eval_crop: (top, bottom, left, right) python-slice bounds of the scored
    window (None = whole image). min_depth < g < max_depth: the valid ground truth; predictions are clamped
    to the same range (max_depth is the cap). train_border_crop: (top, bottom, left, right) window the depth
    training recipe cuts first (the NYU frame's white border)."""

    name: str
    size: tuple[int, int] | None = None
    eval_crop: tuple[int, int, int, int] | None = None
    min_depth: float = 1e-3
    max_depth: float = 10.0
    train_border_crop: tuple[int, int, int, int] | None = None

    def __post_init__(self) -> None:
        if not 0 < self.min_depth < self.max_depth:
            raise UserError(f"depth protocol {self.name!r}: need 0 < min_depth < max_depth, got "
                            f"{self.min_depth}, {self.max_depth}")
        for what, window in (("eval_crop", self.eval_crop), ("train_border_crop", self.train_border_crop)):
            if window is not None and len(window) != 4:
                raise UserError(f"depth protocol {self.name!r}: {what} must be [top, bottom, left, right], "
                                f"got {list(window)}")

    def border_crop_for(self, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
        """The training border crop for an image of ``size`` (None when the protocol's size differs)."""
        return self.train_border_crop if self.size is None or tuple(size) == self.size else None


# Eigen's evaluation crop of the 480×640 NYUD-v2 frame, its 1e-3..10 m range, and BinsFormer's training crop.
NYU = DepthProtocol(name="nyu", size=(480, 640), eval_crop=(45, 471, 41, 601), min_depth=1e-3, max_depth=10.0,
                    train_border_crop=(45, 472, 43, 608))
# KITTI Eigen split as BTS / AdaBins evaluate it: Garg's crop (rows 0.4081..0.9919, columns 0.0359..0.9641 of
# the frame, truncated) of the 352×1216 KB-cropped frame, 1e-3..80 m.
KITTI = DepthProtocol(name="kitti", size=(352, 1216), eval_crop=(143, 349, 43, 1172), min_depth=1e-3, max_depth=80.0)
PROTOCOLS = {"nyu": NYU, "kitti": KITTI}


def resolve_protocol(name: str | None, *, eval_crop=None, min_depth: float | None = None,
                     max_depth: float | None = None, where: str = "data set") -> DepthProtocol | None:
    """A named protocol (``nyu``, ``kitti``) or None, with any of its fields overridden; a crop or range
    without a name makes a custom protocol on the whole image size."""
    if name is not None and name not in PROTOCOLS:
        raise UserError(f"{where}: unknown depth protocol {name!r}; choose one of {sorted(PROTOCOLS)} or give "
                        "eval_crop / min_depth / max_depth")
    if name is None and eval_crop is None and min_depth is None and max_depth is None:
        return None
    base = PROTOCOLS[name] if name is not None else DepthProtocol(name="custom")
    changes = {}
    if eval_crop is not None:
        changes["eval_crop"] = tuple(int(v) for v in eval_crop)
        if name is not None:
            changes["size"] = None   # an explicit crop applies to whatever size the ground truth has
    if min_depth is not None:
        changes["min_depth"] = float(min_depth)
    if max_depth is not None:
        changes["max_depth"] = float(max_depth)
    return replace(base, **changes) if changes else base


def protocol_of(dataset) -> DepthProtocol | None:
    """The protocol a data set (or a wrapper with ``.dataset``, such as a Subset) carries, or None."""
    while dataset is not None:
        protocol = getattr(dataset, "protocol", None)
        if protocol is not None:
            return protocol
        dataset = getattr(dataset, "dataset", None)
    return None
