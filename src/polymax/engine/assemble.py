"""From a :class:`TrainConfig` to the pieces :func:`polymax.engine.train.fit` takes: the model (preset +
overrides, optional initial weights), the augmented training set and the periodic evaluation.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from torch import nn

from polymax.config.model import ModelConfig
from polymax.config.train import TrainConfig
from polymax.engine.sampler import SeededDataset
from polymax.errors import UserError


def build_training_model(config: TrainConfig) -> nn.Module:
    """The preset's model with the run's overrides. When the data set's classes differ from the preset's,
    the model gets the data set's label space (new class head) — fine-tuning on your own classes.
    The initial weights depend on ``config.seed`` only (every rank builds the same model)."""
    import torch

    from polymax.build import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_model(config.model.preset, **model_overrides(config))
    if config.model.backbone_init:
        from polymax.model.backbones.init import load_backbone_init
        print(load_backbone_init(model.backbone, config.model.backbone_init))
    if config.model.init:
        load_matching_weights(model, config.model.init)
    return model


def model_overrides(config: TrainConfig) -> dict[str, Any]:
    """``build_model``'s dotted overrides for this run, in the order they apply: the ModelOptions fields, the
    training crop, the data set's label space, then ``model.overrides`` (the most specific setting, last)."""
    from polymax.build import resolve_config
    from polymax.data import dataset_info
    from polymax.tasks import get_task

    options = config.model
    preset = resolve_config(options.preset, **options.overrides)   # unknown paths / tasks fail here
    overrides: dict[str, Any] = task_subset(options.preset, options.only_tasks)
    if options.backbone_drop_path_keep is not None:
        overrides["backbone.drop_path_keep"] = options.backbone_drop_path_keep
    if options.decoder_drop_path_keep is not None:
        overrides["kmax_decoder.drop_path_keep"] = options.decoder_drop_path_keep
    if options.drop_query is not None:
        overrides["kmax_decoder.drop_query"] = options.drop_query
    if options.aux_semantic is not None:
        # The auxiliary semantic branch serves every segmentation task of the model (of those it keeps).
        kept = [task for task in preset.tasks if options.only_tasks is None or task.name in options.only_tasks]
        for task in kept:
            if get_task(task.name).needs_classes:
                overrides[f"tasks.{task.name}.aux_semantic"] = options.aux_semantic
    if config.data.crop_size is not None:
        overrides["crop_size"] = tuple(config.data.crop_size)
    if options.init and options.init_depth_range == "keep":
        from polymax.io.pretrained import read_config
        from polymax.tasks.depth import source_depth_ranges
        overrides.update(source_depth_ranges(read_config(options.init), preset))   # each bin keeps its metres
    info = dataset_info(config.data.dataset, root=config.data.root)
    if info.class_names != preset.dataset.class_names:
        overrides["dataset"] = info
    for key, value in options.overrides.items():
        overrides.pop(key, None)          # re-inserted last: the explicit setting wins and applies after
        overrides[key] = value
    return overrides


def task_subset(preset_name: str, names: tuple[str, ...] | None) -> dict[str, Any]:
    """``build_model`` overrides that keep the tasks ``names`` of the preset (in the preset's order); the shared
    query group goes too when no kept task reads it (no unused parameters)."""
    from polymax.build import resolve_config

    if names is None:
        return {}
    preset = resolve_config(preset_name)
    unknown = [name for name in names if name not in preset.task_names]
    if unknown or not names:
        raise UserError(f"model.only_tasks: {', '.join(unknown) or '(empty)'} not among the tasks of "
                        f"{preset_name} ({', '.join(preset.task_names)})")
    kept = tuple(task for task in preset.tasks if task.name in names)
    overrides: dict[str, Any] = {"tasks": kept}
    if all(task.num_queries > 0 for task in kept) and preset.kmax_decoder.num_queries > 0:
        overrides["kmax_decoder.num_queries"] = 0
        overrides["kmax_decoder.task_queries"] = "learned"   # no shared group left to guide
    return overrides


def load_matching_weights(model: nn.Module, directory: str) -> None:
    """Copy every tensor of a saved model whose name and shape match (e.g. all but a re-sized class head)."""
    from safetensors.torch import load_file

    from polymax.io.pretrained import WEIGHTS_FILE

    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise UserError(f"model.init: {path} does not exist; pass a folder written by save_pretrained")
    source = load_file(str(path))
    own = model.state_dict()
    matching = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    if not matching:
        raise UserError(f"model.init: no tensor of {path} fits preset {model.config.preset!r}")
    model.load_state_dict(matching, strict=False)
    from polymax.io.pretrained import read_config
    from polymax.tasks.depth import depth_range_changes
    for note in depth_range_changes(read_config(directory), model.config):
        print(f"model.init: {note}")
    skipped = len(own) - len(matching)
    print(f"initialised {len(matching)} tensors from {directory}" + (f" ({skipped} left as built)" if skipped else ""))


def build_train_set(config: TrainConfig, model_config: ModelConfig) -> SeededDataset:
    """The training split with the run's augmentation, indexed by (index, seed) stream entries."""
    from polymax.data import build_dataset, generation_options
    from polymax.data.augment import TrainAugmentation
    from polymax.data.requirements import require_labels

    crop = tuple(config.data.crop_size or model_config.crop_size)
    options = generation_options(config.data.dataset, size=crop)
    dataset = _checked_dataset(build_dataset, config.data.dataset, root=config.data.root, split=config.data.split,
                               **options, **config.data.loader_options())
    require_labels(dataset, model_config.task_names, preset=model_config.preset, name=config.data.dataset,
                   split=config.data.split)
    if config.data.check and not options:   # a generated set has no files to check
        from polymax.data.inspect import check_dataset
        check_dataset(dataset, name=config.data.dataset, split=config.data.split)
    info, aug = model_config.dataset, config.augment
    common = {"crop_size": crop, "thing_classes": info.thing_classes, "label_divisor": info.label_divisor,
              "ignore_label": info.ignore_label}
    if aug.enabled and aug.recipe != "kmax":
        from polymax.data.augment import depth_recipe
        transform = depth_recipe(aug, dataset, **common)
    elif aug.enabled:
        transform = TrainAugmentation(
            min_scale=aug.min_scale, max_scale=aug.max_scale, scale_step=aug.scale_step,
            resize_longer_side=aug.resize_longer_side,
            autoaugment="simple" if aug.autoaugment_magnitude > 0 else None,
            autoaugment_magnitude_scale=aug.autoaugment_magnitude, flip_prob=0.5 if aug.flip else 0.0,
            copy_paste=aug.copy_paste, **common)
    else:
        transform = TrainAugmentation(flip_prob=0.0, **common)
    return SeededDataset(dataset, transform, paste_source=aug.enabled and aug.copy_paste)


def build_collate(model_config: ModelConfig):
    from polymax.data.collate import collate

    info = model_config.dataset
    return partial(collate, ignore_label=info.ignore_label, label_divisor=info.label_divisor)


def build_eval_set(config: TrainConfig, model_config: ModelConfig):
    """The evaluation split (``data.eval_split``), or None (said once) when the data set has no such split."""
    from polymax.data import build_dataset, generation_options

    crop = tuple(config.data.crop_size or model_config.crop_size)
    options = generation_options(config.data.dataset, size=crop, evaluation=True)
    try:
        return build_dataset(config.data.dataset, root=config.data.root, split=config.data.eval_split, **options,
                             **config.data.loader_options())
    except UserError as error:
        print(f"no periodic evaluation: {error}")
        return None


def build_evaluate_fn(config: TrainConfig, model_config: ModelConfig, *, device, dataset=None, context=None):
    """``evaluate_fn(model) -> metrics`` on the evaluation split (``dataset``: that split, already built), or None
    when it has no such split. The function takes ``max_batches=`` to override ``eval_batches`` (0: no image,
    just the metric names, each NaN). With a distributed ``context`` every rank scores its share of the images
    (call it on every rank)."""
    from polymax.inference.evaluate import evaluate

    dataset = dataset if dataset is not None else build_eval_set(config, model_config)
    if dataset is None:
        return None
    return partial(evaluate, dataset=dataset, batch_size=1, device=device, precision=config.precision,
                   max_batches=config.eval_batches, context=context)


def _checked_dataset(build_dataset, name: str, **kwargs):
    root = kwargs.get("root")
    if root is not None and not Path(root).exists():
        raise UserError(f"data root {root} does not exist; pass --data-root pointing at the {name} files")
    dataset = build_dataset(name, **kwargs)
    if len(dataset) == 0:
        raise UserError(f"the {name} {kwargs.get('split')} split is empty (root: {root})")
    return dataset
