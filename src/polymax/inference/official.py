"""``polymax predict --format official``: predictions in the files a data set's own benchmark tools read.

Per task, under OUT (the same layout for one task or several):

=====================  ==================================================================================
panoptic               OUT/panoptic/NAME.png: RGB segment ids, id = R + 256·G + 256²·B (0 = void), and ONE
                       OUT/panoptic.json for the run: ``annotations`` (image_id, file_name, segments_info:
                       id, category_id, isthing, iscrowd 0, area, bbox x, y, w, h) plus ``images`` and
                       ``categories``, so that the COCO / Cityscapes panoptic tools (and our own reader,
                       :mod:`polymax.data.panoptic_formats`) read it as is
instance               ONE OUT/instances.json: a COCO results list, one entry per instance: image_id,
                       category_id, segmentation (compressed COCO RLE, :mod:`polymax.inference.coco_rle`),
                       score
semantic               OUT/semantic/NAME.png: grey PNG (8-bit when the ids fit, else 16-bit) of the data
                       set's label ids
=====================  ==================================================================================

Ids are the data set's own (:func:`label_ids`): COCO panoptic category ids (1..200, not contiguous; semantic
void 0), Cityscapes label ids (e.g. 24 person, 7 road; void 0 = unlabeled), ADE20K panoptic category ids
0..149 and, for semantic maps, the scene-parsing values 1..150 with 0 = other, NYUD-v2 the 40-class values
1..40 with 0 = unlabeled. Any other label space (the synthetic rooms, a folder data set) keeps the model's
contiguous class ids (semantic void = the ignore label) and the run says so.

``image_id``: the input's file name without its suffix — a number for all-digit names (COCO's
``000000139.jpg`` → 139); Cityscapes drops the ``_leftImg8bit`` ending (its image ids are the frame names).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from polymax.config.model import DatasetInfo
from polymax.errors import UserError
from polymax.inference import coco_rle
from polymax.structures import Result, SegmentationResult
from polymax.tasks import get_task
from polymax.tasks.panoptic import segment_id_map


def _format(task: str) -> str | None:
    return get_task(task).official_format


def has_official_format(task: str) -> bool:
    """Whether ``task``'s results have a data set submission format (``Task.official_format``)."""
    return _format(task) is not None


@dataclass(frozen=True)
class LabelIds:
    """How a data set names the model's contiguous classes 0..C−1 in its own files.

    category_ids[c]: class c's category id in a panoptic / instance JSON; semantic_ids[c]: its value in a
    semantic map, where void pixels get ``semantic_void``. ``official``: False when the ids are just the
    contiguous classes (no known data set); ``image_suffix``: the file-name ending that image ids drop."""

    dataset: str
    category_ids: tuple[int, ...]
    semantic_ids: tuple[int, ...]
    semantic_void: int
    official: bool = True
    image_suffix: str = ""


def label_ids(info: DatasetInfo) -> LabelIds:
    """The data set's own ids for the model's label space ``info``; contiguous ids (``official`` False) when
    the label space is no known data set's (or its classes differ from that data set's, e.g. a subset)."""
    from polymax.data import label_spaces

    known: dict[str, Callable[[], LabelIds]] = {
        "coco_panoptic": lambda: _with_void(label_spaces.coco_categories(), semantic_offset=0),
        "cityscapes_panoptic": lambda: _with_void(label_spaces.cityscapes_train_categories(), semantic_offset=0,
                                                  image_suffix="_leftImg8bit"),
        "ade20k_panoptic": lambda: _with_void(label_spaces.ade20k_categories(), semantic_offset=1),
        "nyuv2": lambda: LabelIds("nyuv2", tuple(range(1, 41)), tuple(range(1, 41)), semantic_void=0),
    }
    reference = {"coco_panoptic": label_spaces.coco_panoptic_info, "nyuv2": label_spaces.nyuv2_info,
                 "cityscapes_panoptic": label_spaces.cityscapes_panoptic_info,
                 "ade20k_panoptic": label_spaces.ade20k_panoptic_info}
    if info.name in known and reference[info.name]().class_names == tuple(info.class_names):
        return LabelIds(**{**vars(known[info.name]()), "dataset": info.name})
    contiguous = tuple(range(info.num_classes))
    return LabelIds(info.name, contiguous, contiguous, semantic_void=info.ignore_label, official=False)


def _with_void(categories: list[dict], *, semantic_offset: int, image_suffix: str = "") -> LabelIds:
    ids = tuple(int(c["id"]) for c in categories)
    return LabelIds("", ids, tuple(i + semantic_offset for i in ids), semantic_void=0, image_suffix=image_suffix)


def image_id(name: str, ids: LabelIds) -> int | str:
    """The image id of an input named ``name`` (its output name: relative path without suffix)."""
    stem = Path(name).name
    if ids.image_suffix and stem.endswith(ids.image_suffix):
        stem = stem[: -len(ids.image_suffix)]
    return int(stem) if stem.isdigit() else stem


class OfficialWriter:
    """Collects one run's predictions in the data set's formats: ``add`` per image and task, ``close`` writes the
    run's JSON files. ``out_dir``: OUT; ``info``: the model's label space."""

    def __init__(self, out_dir: str | Path, info: DatasetInfo) -> None:
        self.out_dir = Path(out_dir)
        self.info = info
        self.ids = label_ids(info)
        self._category = np.asarray(self.ids.category_ids, dtype=np.int64)
        self._panoptic: list[dict] = []         # annotations of panoptic.json
        self._images: list[dict] = []           # its images
        self._instances: list[dict] = []        # instances.json
        self._seen: dict[tuple[str, int | str], str] = {}    # (task, image id) → the input that took it

    def note(self) -> str | None:
        """One line for a label space without official ids (None when the ids are the data set's own)."""
        if self.ids.official:
            return None
        return (f"the model's label space {self.info.name!r} is no known data set's: --format official writes "
                "its contiguous class ids (0..C-1)")

    def add(self, result: Result, *, name: str, source: Path) -> None:
        """Record (and for PNGs write) one image's result of a panoptic, instance or semantic task."""
        form = _format(result.task)
        if form is None:
            raise UserError(f"the {result.task} task has no official format")
        assert isinstance(result, SegmentationResult)
        identifier = image_id(name, self.ids)
        earlier = self._seen.setdefault((result.task, identifier), name)
        if earlier != name:
            raise UserError(f"image id {identifier!r} of {source} is already taken by {earlier!r}; rename one")
        if form == "coco_panoptic":
            self._add_panoptic(result, name=name, source=source, identifier=identifier)
        elif form == "coco_results":
            self._add_instances(result, identifier)
        elif result.semantic is not None:           # label_png
            values = self._semantic_values(result.semantic)
            _save(self.out_dir / "semantic" / f"{name}.png", lambda path: _save_grey(values, path))

    def close(self) -> list[Path]:
        """Write the run's JSON files (those of the tasks that were added); returns them."""
        written = []
        if self._images:
            categories = [{"id": int(self.ids.category_ids[c]), "name": self.info.class_names[c],
                           "isthing": int(c in self.info.thing_classes)} for c in range(self.info.num_classes)]
            record = {"images": self._images, "annotations": self._panoptic, "categories": categories}
            written.append(_save_json(self.out_dir / "panoptic.json", record))
        if self._instances or any(_format(task) == "coco_results" for task, _ in self._seen):
            written.append(_save_json(self.out_dir / "instances.json", self._instances))
        return written

    def _add_panoptic(self, result: SegmentationResult, *, name: str, source: Path,
                      identifier: int | str) -> None:
        ids = segment_id_map(result)            # (H, W) 1..N, 0 = void
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)
        file_name = f"{name}.png"
        _save(self.out_dir / "panoptic" / file_name, lambda path: Image.fromarray(rgb, "RGB").save(path))
        segments = [{"id": s.id, "category_id": int(self._category[s.category]), "isthing": int(s.is_thing),
                     "iscrowd": 0, "area": int(s.area), "bbox": [int(v) for v in s.bbox]}
                    for s in result.segments or []]
        self._panoptic.append({"image_id": identifier, "file_name": file_name, "segments_info": segments})
        # Cityscapes' reader finds images by their bare file name (CITY/NAME); other sets by the relative path.
        image_name = source.name if self.ids.image_suffix else str(Path(name).parent / source.name)
        self._images.append({"id": identifier, "file_name": Path(image_name).as_posix(),
                             "height": int(result.size[0]), "width": int(result.size[1])})

    def _add_instances(self, result: SegmentationResult, identifier: int | str) -> None:
        for segment in result.segments or []:
            mask = np.asarray(result.panoptic) == segment.panoptic_id
            self._instances.append({"image_id": identifier, "category_id": int(self._category[segment.category]),
                                    "segmentation": coco_rle.encode(mask), "score": round(float(segment.score), 6)})

    def _semantic_values(self, semantic: np.ndarray) -> np.ndarray:
        """(H, W) contiguous classes (ignore label = void) → the data set's semantic values."""
        table = np.full(max(self.info.num_classes, self.info.ignore_label) + 1, self.ids.semantic_void, np.int64)
        table[: self.info.num_classes] = self.ids.semantic_ids
        valid = (semantic >= 0) & (semantic < len(table))
        return np.where(valid, table[np.clip(semantic, 0, len(table) - 1)], self.ids.semantic_void)


def _save(path: Path, write: Callable[[Path], None]) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}") from error
    return path


def _save_json(path: Path, content: object) -> Path:
    def write(target: Path) -> None:
        target.write_text(json.dumps(content) + "\n")
    return _save(path, write)


def _save_grey(values: np.ndarray, path: Path) -> None:
    """8-bit grey when every value fits (what the Cityscapes / ADE20K tools read), else 16-bit."""
    if values.size and values.max() <= 255:
        Image.fromarray(values.astype(np.uint8), "L").save(path)
    else:
        Image.fromarray(values.astype(np.uint16)).save(path)
