"""What a run reports besides scalars.jsonl: TensorBoard's config and prediction pictures, and the optional
W&B / MLflow trackers (a fake module stands in for the library; a missing one is one line naming the extra)."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from polymax.build import build_model
from polymax.config.train import load_config
from polymax.data import build_dataset
from polymax.engine.assemble import build_collate, build_training_model
from polymax.engine.objective import build_objective
from polymax.engine.reporting import PICTURE_IMAGES, flatten_config, prediction_grid, require_tracker
from polymax.engine.sampler import SeededDataset
from polymax.engine.train import fit
from polymax.errors import UserError


def run(out_dir, steps, *extra, evaluate_fn=None, picture_set=None):
    config = load_config(overrides=[
        "model.preset=kmax_tiny_test", f"steps={steps}", "data.batch_size=2", "data.workers=0", f"out_dir={out_dir}",
        "optim.warmup_steps=0", "augment.enabled=false", "progress=false", "log_every=1", "checkpoint_every=0",
        *extra])
    model = build_training_model(config)
    scenes = build_dataset("synth", split="train", size=tuple(model.config.crop_size), num_samples=2)
    return fit(config, model=model, objective=build_objective(model.config, config), train_set=SeededDataset(scenes),
               collate_fn=build_collate(model.config), evaluate_fn=evaluate_fn, picture_set=picture_set)


def test_prediction_grid_shows_image_truth_and_prediction_of_every_task():
    model = build_model("polymax_multitask_tiny_synth").eval()
    height, width = 48, 64
    scenes = build_dataset("synth", split="val", size=(height, width), num_samples=2)
    grid = prediction_grid(model, [scenes[0], scenes[1]], tile_height=height)
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3
    # Two rows of 1 + 2 × 5 tiles, each at least as wide as the image (captions may widen a cell).
    assert grid.shape[0] >= 2 * height and grid.shape[1] >= 11 * width
    image = scenes[0].image.permute(1, 2, 0).numpy()
    assert _contains(grid, image)                      # the first tile is the image itself, unscaled


def test_prediction_grid_leaves_a_missing_label_blank():
    model = build_model("polymax_tiny_synth_depth").eval()
    sample = build_dataset("synth", split="val", size=(32, 32), num_samples=1)[0]
    sample.depth = None
    grid = prediction_grid(model, [sample], tile_height=32)
    assert grid.shape[1] >= 3 * 32


def _contains(grid: np.ndarray, tile: np.ndarray) -> bool:
    height, width = tile.shape[:2]
    for y in range(grid.shape[0] - height + 1):
        for x in range(min(grid.shape[1] - width + 1, 40)):
            if np.array_equal(grid[y:y + height, x:x + width], tile):
                return True
    return False


def test_flattened_config_has_only_plain_values():
    flat = flatten_config(load_config(overrides=["model.preset=kmax_tiny_test"]).to_dict())
    assert flat["optim.lr"] == 5e-4 and flat["model.preset"] == "kmax_tiny_test" and flat["sync_bn"] is True
    assert flat["data.crop_size"] == "null" and flat["model.overrides"] == "{}"
    assert all(isinstance(value, (bool, int, float, str)) for value in flat.values())


def test_tensorboard_gets_config_scalars_and_a_picture_per_evaluation(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard (the 'log' extra) is not installed; the picture itself "
                                              "is tested above")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    held_out = build_dataset("synth", split="val", size=(32, 32), num_samples=PICTURE_IMAGES + 2)
    run(tmp_path, 2, "eval_every=1", "tensorboard=true", evaluate_fn=lambda model: {"pq": 0.5},
        picture_set=held_out)
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "tensors": 0}).Reload()
    images = events.Images("eval/predictions")
    assert [image.step for image in images] == [1, 2]
    # PICTURE_IMAGES rows (of the 6 held-out scenes) of 96-pixel tiles: image | truth | prediction.
    assert PICTURE_IMAGES * 96 <= images[0].height < (PICTURE_IMAGES + 1) * 96 and images[0].width >= 3 * 96
    assert [s.step for s in events.Scalars("eval/pq")] == [1, 2] and len(events.Scalars("loss/total")) == 2
    assert "config/text_summary" in events.Tags()["tensors"]
    assert "optim.lr" in str(events.SummaryMetadata("_hparams_/session_start_info").plugin_data.content)


class FakeWandb(types.ModuleType):
    """What the W&B tracker calls: wandb.init(...) → run with .log(values, step=) and .finish()."""

    def __init__(self) -> None:
        super().__init__("wandb")
        self.inits, self.logged, self.finished = [], [], 0

    def init(self, **kwargs):
        self.inits.append(kwargs)
        fake = self

        class Run:
            def log(self, values, step):
                fake.logged.append((step, dict(values)))

            def finish(self):
                fake.finished += 1
        return Run()


def test_wandb_gets_the_config_and_every_scalar(tmp_path, monkeypatch):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    run(tmp_path, 2, "tracker=wandb", "tensorboard=false", "eval_every=2", evaluate_fn=lambda model: {"pq": 0.25})
    (init,) = fake.inits
    assert init["config"]["model"]["preset"] == "kmax_tiny_test" and init["name"] == tmp_path.name
    assert [step for step, values in fake.logged if "loss/total" in values] == [1, 2]
    assert (2, {"eval/pq": 0.25}) in fake.logged and fake.finished == 1


def test_mlflow_gets_flat_parameters_and_metrics(tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("mlflow")
    fake.start_run = lambda **kwargs: calls.append(("start", kwargs))
    fake.log_params = lambda params: calls.append(("params", params))
    fake.log_metrics = lambda values, step: calls.append(("metrics", step, values))
    fake.end_run = lambda: calls.append(("end",))
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    run(tmp_path, 1, "tracker=mlflow", "tensorboard=false")
    assert calls[0] == ("start", {"run_name": tmp_path.name}) and calls[-1] == ("end",)
    assert calls[1][0] == "params" and calls[1][1]["optim.lr"] == "0.0005"
    assert calls[2][:2] == ("metrics", 1) and "loss/total" in calls[2][2]


@pytest.mark.parametrize("name", ["wandb", "mlflow"])
def test_a_missing_tracker_library_names_its_extra_before_training(tmp_path, monkeypatch, name):
    monkeypatch.setitem(sys.modules, name, None)          # import fails as if it were not installed
    with pytest.raises(UserError, match=rf"pip install 'polymax\[{name}\]'") as error:
        run(tmp_path, 2, f"tracker={name}")
    assert "\n" not in str(error.value) and not (tmp_path / "scalars.jsonl").exists()
    with pytest.raises(UserError):
        require_tracker(name)


def test_an_unknown_tracker_is_a_config_error():
    with pytest.raises(UserError, match="tracker must be one of '', 'wandb', 'mlflow'"):
        load_config(overrides=["tracker=neptune"])
