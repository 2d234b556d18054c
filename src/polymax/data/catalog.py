"""Data-set names → constructors and label-space descriptions: the one table that knows every data set.

``build_dataset(name, root=..., split=...)`` returns a sequence of :class:`~polymax.data.sample.Sample`
(before augmentation, original resolution). ``dataset_info(name)`` returns the
:class:`~polymax.config.model.DatasetInfo` a model needs (classes, things, colours, ignore 255, label divisor).
``generation_options(name, size=...)`` says which options a generated (file-less) data set needs, so that
callers never compare data-set names themselves.
Each loader module is imported only when its data set is built, so ``import polymax.data`` stays cheap and
the optional dependency h5py is needed only for NYUD-v2. Imports point one way: this module → loaders →
:mod:`polymax.data.label_spaces`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from polymax.config.model import DatasetInfo
from polymax.data import label_spaces

# Re-exported: callers have always imported these from the catalogue.
from polymax.data.label_spaces import (
    IGNORE_LABEL,
    TASKONOMY_CLASS_NAMES,
    ade20k_categories,
    cityscapes_train_categories,
    coco_categories,
    load_metadata,
    palette,
)
from polymax.errors import UserError

__all__ = [
    "DATASET_NAMES", "IGNORE_LABEL", "TASKONOMY_CLASS_NAMES", "SkipBadSamples", "ade20k_categories",
    "build_dataset", "cityscapes_train_categories", "coco_categories", "dataset_info", "generation_options",
    "load_metadata", "palette",
]

Constructor = Callable[..., Sequence]


def _synthetic() -> Constructor:
    from polymax.data.synthetic import SyntheticScenes
    return SyntheticScenes


def _synth_info() -> DatasetInfo:
    from polymax.data.synthetic import SYNTH_INFO
    return SYNTH_INFO


def _nyuv2() -> Constructor:
    from polymax.data.nyuv2 import NYUDepthV2
    return NYUDepthV2


def _taskonomy() -> Constructor:
    from polymax.data.taskonomy import Taskonomy
    return Taskonomy


def _panoptic(name: str) -> Callable[[], Constructor]:
    # The three JSON+PNG sets share one module whose constructors are named after the data sets.
    def constructor() -> Constructor:
        from polymax.data import panoptic_formats
        return getattr(panoptic_formats, name)
    return constructor


def _listfile() -> Constructor:
    from polymax.data.listfile import ListFileDataset
    return ListFileDataset


def _list_info() -> DatasetInfo:
    return DatasetInfo(name="list", class_names=(), ignore_label=IGNORE_LABEL)


def _folder() -> Constructor:
    from polymax.data.folder import FolderDataset
    return FolderDataset


@dataclass(frozen=True)
class Generation:
    """A data set drawn on the fly: no files, so no root, and the caller picks the image size."""

    eval_samples: int  # enough for a periodic evaluation to be quick yet cover several scenes


@dataclass(frozen=True)
class _Entry:
    constructor: Callable[[], Constructor]  # imports the loader only when called
    info: Callable[[], DatasetInfo] | None  # None: the label space is read from the root's files
    generation: Generation | None = None  # None: read from files under a root


_ENTRIES: dict[str, _Entry] = {
    "synth": _Entry(_synthetic, _synth_info, Generation(eval_samples=16)),
    "nyuv2": _Entry(_nyuv2, label_spaces.nyuv2_info),
    "taskonomy": _Entry(_taskonomy, label_spaces.taskonomy_info),
    "coco_panoptic": _Entry(_panoptic("coco_panoptic"), label_spaces.coco_panoptic_info),
    "cityscapes_panoptic": _Entry(_panoptic("cityscapes_panoptic"), label_spaces.cityscapes_panoptic_info),
    "ade20k_panoptic": _Entry(_panoptic("ade20k_panoptic"), label_spaces.ade20k_panoptic_info),
    "folder": _Entry(_folder, None),
    "list": _Entry(_listfile, _list_info),
}
DATASET_NAMES = tuple(_ENTRIES)


def _entry(name: str) -> _Entry:
    if name not in _ENTRIES:
        raise UserError(f"unknown data set {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    return _ENTRIES[name]


def dataset_info(name: str, *, root: str | None = None) -> DatasetInfo:
    """Label-space description of a data set. ``folder`` reads its classes from ``root``'s YAML."""
    entry = _entry(name)
    if entry.info is not None:
        return entry.info()
    if root is None:
        raise UserError(f"dataset_info({name!r}) needs root= (the folder with dataset.yaml)")
    from polymax.data.folder import read_folder_config
    return read_folder_config(root).info


def generation_options(name: str, *, size: Sequence[int], evaluation: bool = False) -> dict[str, Any]:
    """The ``build_dataset`` options a generated data set needs: its image ``size`` (H, W) and, for
    ``evaluation``, its small sample count. ``{}`` for sets read from files, and for unknown names so that
    ``build_dataset`` is the one to report them."""
    entry = _ENTRIES.get(name)
    if entry is None or entry.generation is None:
        return {}
    options: dict[str, Any] = {"size": tuple(size)}
    if evaluation:
        options["num_samples"] = entry.generation.eval_samples
    return options


def build_dataset(name: str, *, root: str | None = None, split: str = "train", skip_bad: bool = False,
                  **options: Any) -> Sequence:
    """A sequence of Samples for data set ``name`` (one of DATASET_NAMES) under ``root``.

    options go to the loader (e.g. ``normals_dir`` for NYUD-v2, ``split_file`` for Taskonomy,
    ``size`` / ``num_samples`` / ``seed`` for synth). With ``skip_bad=True`` a sample whose files are
    missing or malformed is skipped (the next good one is returned) and recorded in ``.skipped``.
    """
    # A missing root is reported before an unknown name, as it always was.
    known = _ENTRIES.get(name)
    if root is None and (known is None or known.generation is None):
        raise UserError(f"data set {name!r} needs --root / root= pointing at its files")
    entry = _entry(name)
    _check_options(name, entry.constructor(), options)
    if entry.generation is not None:
        dataset = entry.constructor()(split=split, **options)
    else:
        dataset = entry.constructor()(root=root, split=split, **options)
    return SkipBadSamples(dataset) if skip_bad else dataset


def _check_options(name: str, constructor: Constructor, options: dict[str, Any]) -> None:
    """One line naming an option the data set's loader does not take (e.g. normals_dir for a folder set)."""
    import inspect

    parameters = inspect.signature(constructor).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return
    accepted = sorted(k for k, p in parameters.items() if p.kind is p.KEYWORD_ONLY and k not in ("root", "split"))
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        raise UserError(f"data set {name!r} takes no option {unknown[0]!r}; its options: "
                        f"{', '.join(accepted) or 'none'}")


class SkipBadSamples(Sequence):
    """Wraps a data set: a sample that raises UserError is replaced by the next readable one.

    ``skipped`` maps index → error message (per process: each data-loader worker keeps its own record).
    Nothing is mislabelled: a bad sample is dropped, never patched.
    """

    def __init__(self, dataset: Sequence) -> None:
        self.dataset = dataset
        self.skipped: dict[int, str] = {}
        self.info = getattr(dataset, "info", None)
        self.protocol = getattr(dataset, "protocol", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        count = len(self.dataset)
        if not -count <= index < count:
            raise IndexError(index)
        for step in range(count):
            position = (index + step) % count
            try:
                return self.dataset[position]
            except UserError as error:
                self.skipped[position] = str(error)
        raise UserError(f"every sample of the data set is unreadable; first error: {next(iter(self.skipped.values()))}")

    def summary(self) -> dict[str, Any]:
        return {"skipped": len(self.skipped), "errors": [self.skipped[i] for i in sorted(self.skipped)[:10]]}
