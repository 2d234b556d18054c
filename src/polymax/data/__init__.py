"""Data sets, augmentation and batching.

``build_dataset(name, root=..., split=...)`` gives a sequence of :class:`Sample` (image plus whichever of
semantic / panoptic / depth / normals labels the data set has), ``dataset_info(name)`` its label space,
``generation_options(name, size=...)`` the options a generated data set needs,
:class:`polymax.data.augment.TrainAugmentation` the joint training transforms and
:func:`polymax.data.collate.collate` the batching into :class:`polymax.data.collate.Batch`.
"""

from __future__ import annotations

from polymax.data.catalog import DATASET_NAMES, build_dataset, dataset_info, generation_options
from polymax.data.sample import Sample

__all__ = ["DATASET_NAMES", "Sample", "build_dataset", "dataset_info", "generation_options"]
