"""A OneFormer model on the kMaX trunk: one set of weights, the task prompt chooses the answer; a mixed-task batch
runs in one pass."""

from __future__ import annotations

import pytest
import torch
from oneformer_helpers import oneformer_model
from polymax_task_helpers import synthetic_batch

from polymax.build import build_criterion


def test_the_three_tasks_share_one_head():
    model = oneformer_model()
    assert model.tasks == ("panoptic", "semantic", "instance")
    assert model.heads["panoptic"] is model.heads["semantic"] is model.heads["instance"]
    assert model.kmax_decoder.cluster_centres is None and model.kmax_decoder.task_queries is not None


def test_the_task_changes_the_output_at_initialisation():
    torch.manual_seed(0)
    model = oneformer_model().eval()
    images, _ = synthetic_batch(1, (65, 65))
    with torch.no_grad():
        logits = {task: model(images, task=task).final.mask_logits for task in model.tasks}
    for a, b in (("panoptic", "semantic"), ("panoptic", "instance"), ("semantic", "instance")):
        assert not torch.allclose(logits[a], logits[b], atol=1e-4), (a, b)


def test_gradients_reach_the_task_mlp():
    torch.manual_seed(0)
    model = oneformer_model()
    images, targets = synthetic_batch(2, (65, 65))
    output = model(images, task="instance")
    build_criterion(model.config, "instance")(output["instance"], targets).total.backward()
    token = model.kmax_decoder.task_queries.task_encoder
    grads = [p.grad for p in token.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_a_mixed_batch_is_each_image_under_its_own_prompt():
    torch.manual_seed(0)
    model = oneformer_model().eval()
    images, _ = synthetic_batch(3, (65, 65))
    with torch.no_grad():
        mixed = model(images, sample_tasks=("semantic", "panoptic", "semantic"))
        alone = {task: model(images, task=task) for task in ("semantic", "panoptic")}
    assert mixed.tasks == ("semantic", "panoptic")
    assert mixed["semantic"].samples.tolist() == [0, 2] and mixed["panoptic"].samples.tolist() == [1]
    for task in mixed.tasks:
        index = mixed[task].samples
        torch.testing.assert_close(mixed[task].final.mask_logits, alone[task].final.mask_logits[index],
                                   atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(mixed[task].final.class_logits, alone[task].final.class_logits[index],
                                   atol=1e-4, rtol=1e-4)
        assert mixed[task].task_queries.shape == (len(index), 24, 64)


def test_the_model_folder_round_trips(tmp_path):
    from polymax.io.pretrained import load_model, save_pretrained

    model = oneformer_model().eval()
    save_pretrained(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m").eval()
    images, _ = synthetic_batch(1, (65, 65))
    with torch.no_grad():
        for task in model.tasks:
            torch.testing.assert_close(loaded(images, task=task).final.mask_logits,
                                       model(images, task=task).final.mask_logits)
    assert loaded.heads["semantic"] is loaded.heads["instance"]


def test_one_predictor_answers_each_task(tmp_path):
    import numpy as np

    from polymax.inference.predictor import Predictor

    torch.manual_seed(0)
    predictor = Predictor(oneformer_model().eval(), task="panoptic")
    image = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    results = {task: predictor.predict(image, task=task) for task in ("semantic", "instance", "panoptic")}
    assert {task: result.task for task, result in results.items()} == {t: t for t in results}
    assert results["semantic"].segments is None and results["semantic"].semantic.shape == (40, 50)
    assert results["instance"].segments is not None and predictor.predict(image).task == "panoptic"
    assert predictor.for_task("semantic") is predictor.for_task("semantic")
    assert predictor.for_task("instance").runner.model is predictor.runner.model   # one optimised copy for all


def test_the_cli_predicts_each_task(tmp_path):
    import numpy as np
    from PIL import Image

    from polymax.cli import main
    from polymax.io.pretrained import save_pretrained

    save_pretrained(oneformer_model().eval(), tmp_path / "m")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    for task, expected in (("semantic", "a_semantic.png"), ("instance", "a_instances.json"),
                           ("panoptic", "a_segments.json")):
        assert main(["predict", str(tmp_path / "a.png"), "--model", str(tmp_path / "m"), "--out",
                     str(tmp_path / task), "--task", task]) in (0, None)
        assert (tmp_path / task / expected).is_file()


@pytest.mark.slow  # four meta forwards of the full-size model (~4 s on an idle 2-core machine)
def test_the_full_size_presets_run_every_task_and_a_mixed_batch_on_the_meta_device():
    from polymax.build import build_model

    with torch.device("meta"):
        model = build_model("oneformer_kmax_r50_coco")
    images = torch.zeros(2, 3, 50, 70, device="meta")
    mixed = model(images, sample_tasks=("instance", "semantic"))
    for task in model.tasks:
        final = model(images, task=task)[task].final
        assert final.mask_logits.shape == (2, 150, 17, 25) and final.class_logits.shape == (2, 150, 134)
    assert mixed["instance"].final.mask_logits.shape == (1, 150, 17, 25)
    assert mixed["semantic"].task_queries.shape == (1, 150, 256)
