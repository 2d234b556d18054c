"""From TrainConfig to the model: the ModelOptions fields and ``--set model.<ModelConfig path>`` overrides both
reach ``build_model``, in one order (the explicit path last)."""

from __future__ import annotations

import pytest

from polymax.config.train import load_config
from polymax.engine.assemble import build_training_model, model_overrides
from polymax.errors import UserError
from polymax.model.heads.semantic_decoder import SemanticHeadBranch


def _config(*overrides: str):
    return load_config(overrides=["model.preset=kmax_tiny_test", "data.dataset=synth", *overrides])


def test_a_model_path_override_reaches_the_built_model():
    model = build_training_model(_config("model.kmax_decoder.num_queries=5", "model.head.mask_dim=8"))
    assert model.config.kmax_decoder.num_queries == 5 and model.kmax_decoder.cluster_centres.shape[0] == 5
    assert model.config.head.mask_dim == 8 and model.mask_head.mask_kernel.linear.out_features == 8


def test_model_options_fields_still_apply():
    model = build_training_model(_config("model.backbone_drop_path_keep=0.6", "model.decoder_drop_path_keep=0.7"))
    assert model.config.backbone.drop_path_keep == 0.6 and model.config.kmax_decoder.drop_path_keep == 0.7


def test_aux_semantic_covers_the_segmentation_tasks_and_a_task_path_wins():
    assert model_overrides(_config("model.aux_semantic=none"))["tasks.panoptic.aux_semantic"] == "none"
    assert build_training_model(_config("model.aux_semantic=none")).semantic_branch is None
    both = _config("model.aux_semantic=none", "model.tasks.panoptic.aux_semantic=head")
    assert list(model_overrides(both))[-1] == "tasks.panoptic.aux_semantic"      # applied after aux_semantic
    assert isinstance(build_training_model(both).semantic_branch, SemanticHeadBranch)
    # Not a segmentation task: the field leaves it alone.
    depth = load_config(overrides=["model.preset=polymax_tiny_synth_depth", "model.aux_semantic=head"])
    assert not any(key.endswith("aux_semantic") for key in model_overrides(depth))


def test_an_override_for_a_task_the_preset_lacks_is_a_user_error():
    with pytest.raises(UserError, match="no task 'depth'"):
        build_training_model(_config("model.tasks.depth.max_depth=20"))


def test_only_tasks_trains_a_subset_of_the_presets_tasks():
    from polymax.config.train import load_config
    from polymax.engine.assemble import build_training_model

    def build(*names):
        return build_training_model(load_config(None, overrides=[
            "model.preset=polymax_multitask_tiny_synth", f"model.only_tasks=[{','.join(names)}]"]))

    model = build("normals", "depth")
    assert model.tasks == ("depth", "normals")                           # the preset's order
    assert model.kmax_decoder.query_groups == ("depth", "normals")       # no shared group left unused
    assert build("instance").kmax_decoder.query_groups == ("shared",)
    with pytest.raises(UserError, match="teleport"):
        build("depth", "teleport")


def test_aux_semantic_with_only_tasks_covers_the_kept_segmentation_tasks():
    def config(*names):
        return load_config(None, overrides=["model.preset=polymax_multitask_tiny_synth", "model.aux_semantic=none",
                                            f"model.only_tasks=[{','.join(names)}]"])

    model = build_training_model(config("semantic", "normals"))        # no segmentation task with a branch kept
    assert model.tasks == ("semantic", "normals") and model.semantic_branch is None
    kept = build_training_model(config("instance", "depth"))
    assert kept.config.task("instance").aux_semantic == "none" and kept.semantic_branch is None
