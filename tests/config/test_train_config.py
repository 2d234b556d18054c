"""TrainConfig: YAML recipes, --set overrides with type conversion, clear errors, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from polymax.config.train import TrainConfig, apply_override, load_config
from polymax.errors import UserError

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_overrides_convert_to_the_field_types():
    config = load_config(overrides=["optim.lr=1e-4", "steps=20", "data.crop_size=[65, 97]", "precision=bf16",
                                    "data.root=null", "sync_bn=false", "model.backbone_drop_path_keep=0.9"])
    assert config.optim.lr == 1e-4 and isinstance(config.optim.lr, float)  # YAML reads '1e-4' as a string
    assert config.steps == 20 and config.data.crop_size == (65, 97)
    assert config.precision == "bf16" and config.sync_bn is False and config.data.root is None
    assert config.model.backbone_drop_path_keep == 0.9


@pytest.mark.parametrize("assignment, message", [
    ("optim.learning_rate=1", "unknown config field"),
    ("optimiser.lr=1", "unknown config section"),
    ("steps=ten", "expects int"),
    ("steps=1.5", "expects int"),
    ("sync_bn=maybe", "expects bool"),
    ("data.crop_size=[1, 2, 3]", "expects"),
    ("precision=fp8", "precision must be"),
    ("no-equals-sign", "section.field=value"),
    ("model.kmax_decoder.no_such_field=1", "unknown model field"),
    ("model.no_such_field=1", "unknown model field"),
    ("model.tasks.depth=1", "model.tasks.NAME.field"),
    ("model.dataset=coco", "model.dataset.FIELD"),
    ("model.kmax_decoder.num_queries=many", "expects int"),
    ("model.tasks.depth.max_depth=[1, 2]", "expects float"),
])
def test_bad_overrides_are_user_errors(assignment, message):
    with pytest.raises(UserError, match=message):
        apply_override(TrainConfig(), assignment)


def test_yaml_round_trip_and_precedence(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("optim: {lr: 3.0e-4}\nsteps: 60000\ndata: {batch_size: 32, crop_size: [1025, 2049]}\n")
    config = load_config(path, overrides=["steps=10"])
    assert config.optim.lr == 3e-4 and config.steps == 10 and config.data.crop_size == (1025, 2049)
    assert TrainConfig.from_dict(__import__("yaml").safe_load(config.to_yaml())) == config


def test_bad_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "typo.yaml").write_text("optim: {lrr: 1}\n")
    with pytest.raises(UserError, match="lrr"):
        load_config(tmp_path / "typo.yaml")
    (tmp_path / "broken.yaml").write_text("optim: [\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_recipes_load_and_name_real_presets(path):
    from polymax.presets import PRESETS

    config = load_config(path)
    assert config.model.preset in PRESETS
    assert config.data.batch_size % config.data.accumulate == 0


def test_recipes_follow_the_paper_table():
    by_name = {p.stem: load_config(p) for p in CONFIGS}
    coco, cityscapes, ade = by_name["kmax_r50_coco"], by_name["kmax_r50_cityscapes"], by_name["kmax_r50_ade20k"]
    assert (coco.data.batch_size, coco.steps, coco.optim.lr) == (64, 150_000, 5e-4)
    assert (cityscapes.data.batch_size, cityscapes.steps, cityscapes.optim.lr) == (32, 60_000, 3e-4)
    assert (ade.data.batch_size, ade.steps, ade.optim.lr) == (64, 100_000, 5e-4)
    assert cityscapes.augment.autoaugment_magnitude == 0.2 and cityscapes.loss.semantic_top_k == 0.2
    assert (coco.augment.min_scale, coco.augment.max_scale) == (0.3, 1.7)
    assert ade.model.decoder_drop_path_keep == 1.0 and coco.model.decoder_drop_path_keep == 0.8
    assert all(c.optim.warmup_steps == 5000 for c in (coco, cityscapes, ade))


def test_model_overrides_are_typed_against_the_model_config():
    config = load_config(overrides=["model.kmax_decoder.num_queries=32", "model.tasks.depth.max_depth=20",
                                    "model.crop_size=[65, 97]", "model.tasks.depth.depth_eval_crop=null",
                                    "model.pixel_decoder__dims=[8, 8, 8, 8]", "model.kmax_decoder.num_queries=16"])
    assert config.model.overrides == {"kmax_decoder.num_queries": 16, "tasks.depth.max_depth": 20.0,
                                      "crop_size": (65, 97), "tasks.depth.depth_eval_crop": None,
                                      "pixel_decoder.dims": (8, 8, 8, 8)}
    assert isinstance(config.model.overrides["tasks.depth.max_depth"], float)     # the field's type, not YAML's
    assert TrainConfig.from_dict(__import__("yaml").safe_load(config.to_yaml())) == config


def test_model_paths_of_model_options_fields_set_those_fields():
    config = load_config(overrides=["model.decoder_drop_path_keep=0.9", "model.kmax_decoder.drop_path_keep=0.5",
                                    "model.backbone.drop_path_keep=0.7", "model.kmax_decoder.drop_query=0.25"])
    model = config.model
    assert (model.decoder_drop_path_keep, model.backbone_drop_path_keep, model.drop_query) == (0.5, 0.7, 0.25)
    assert model.overrides == {}


def test_model_overrides_in_a_recipe(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("model: {preset: kmax_tiny_test, overrides: {kmax_decoder.num_queries: 4}}\n")
    assert load_config(path).model.overrides == {"kmax_decoder.num_queries": 4}
    path.write_text("model: {overrides: {kmax_decoder.drop_path_keep: 0.5}}\n")
    with pytest.raises(UserError, match="model.decoder_drop_path_keep"):
        load_config(path)
    path.write_text("model: {overrides: {kmax_decoder.hidden: wide}}\n")
    with pytest.raises(UserError, match="expects int"):
        load_config(path)


@pytest.mark.parametrize(("steps", "warmup"), [(30, 1), (2000, 67), (150_000, 5000), (400_000, 5000)])
def test_warm_up_scales_with_the_run_without_a_recipe(steps, warmup):
    notes: list[str] = []
    config = load_config(overrides=[f"steps={steps}"], notes=notes)
    assert config.optim.warmup_steps == warmup
    assert notes == [f"warm-up: {warmup} steps (1/30 of {steps}, at most 5000; --set optim.warmup_steps=N to choose)"]


def test_explicit_warm_up_stays_as_written(tmp_path):
    notes: list[str] = []
    assert load_config(overrides=["steps=30", "optim.warmup_steps=7"], notes=notes).optim.warmup_steps == 7
    recipe = load_config(CONFIGS[0].parent / "kmax_r50_coco.yaml", overrides=["steps=30"], notes=notes)
    assert recipe.optim.warmup_steps == 5000 and notes == []
    path = tmp_path / "recipe.yaml"
    path.write_text("optim: {warmup_steps: 0}\n")
    assert load_config(path, overrides=["steps=2000"]).optim.warmup_steps == 0


def test_a_hand_built_config_gets_a_warm_up_for_its_length():
    from polymax.config.train import fill_step_defaults

    config, notes = fill_step_defaults(TrainConfig(steps=300))
    assert config.optim.warmup_steps == 10 and len(notes) == 1
    assert fill_step_defaults(config) == (config, [])       # settled values are left alone
