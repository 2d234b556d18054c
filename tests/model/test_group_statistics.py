"""Per-query-group BatchNorm statistics: a model with several query groups keeps each group's running mean and
variance apart (training unchanged: batch statistics), single-group models keep plain BatchNorms, old folders
load, and folding leaves the grouped norms alone."""

from __future__ import annotations

import torch
from torch import nn

from polymax.build import build_model
from polymax.engine.precise_bn import recalibrate_batch_norm
from polymax.inference.fold import fold_batch_norms
from polymax.model.layers.group_statistics import GroupBatchNorm1d, is_grouped, split_statistics, use_statistics

IMAGES = torch.rand(2, 3, 33, 33) * 255


def _plain_twin(norm: nn.BatchNorm1d) -> nn.BatchNorm1d:
    plain = nn.BatchNorm1d(norm.num_features, eps=norm.eps, momentum=norm.momentum)
    plain.load_state_dict({k: v for k, v in norm.state_dict().items() if k in plain.state_dict()})
    return plain


def test_each_group_updates_only_its_own_statistics_and_computes_what_batchnorm_does():
    norm = GroupBatchNorm1d(4, eps=1e-3, momentum=0.1, groups=("shared", "depth"))
    reference = _plain_twin(norm)
    x = torch.randn(8, 4) * 3 + 2
    norm.group = "depth"
    assert torch.equal(norm(x), reference(x))                                 # training: batch statistics
    depth_mean, _, depth_count = norm.statistics("depth")
    assert torch.allclose(depth_mean, reference.running_mean) and int(depth_count) == 1
    assert torch.equal(norm.running_mean, torch.zeros(4)) and int(norm.num_batches_tracked) == 0
    norm.eval()
    reference.eval()
    assert torch.allclose(norm(x), reference(x))                             # evaluation: depth's statistics
    norm.group = "shared"
    assert not torch.allclose(norm(x), reference(x))


def test_a_model_with_several_query_groups_keeps_their_statistics_apart():
    model = build_model("polymax_multitask_tiny_synth")
    grouped = [m for m in model.modules() if is_grouped(m)]
    assert grouped and all(set(m.groups) == {"shared", "semantic", "depth", "normals"} for m in grouped)
    assert not any(is_grouped(m) for m in model.backbone.modules())          # the trunk runs once for all
    recalibrate_batch_norm(model, [IMAGES], task=("depth",))
    norm = model.kmax_decoder.layers[0].memory_in.bn
    depth, semantic = norm.statistics("depth"), norm.statistics("semantic")
    assert int(depth[2]) == 1 and int(semantic[2]) == 0
    assert not torch.allclose(depth[0], semantic[0])


def test_the_groups_answer_as_before_under_their_own_statistics():
    """Evaluation of one task equals a model whose shared norms hold that task's group statistics."""
    torch.manual_seed(0)
    model = build_model("polymax_multitask_tiny_synth")
    recalibrate_batch_norm(model, [IMAGES], task=model.config.task_names)
    model.eval()
    with torch.no_grad():
        depth = model(IMAGES, task="depth")["depth"].final.depth
        use_statistics(model, "depth")
        for module in model.modules():            # every group now reads depth's statistics under its own name
            if is_grouped(module):
                for group in module.groups:
                    for mine, theirs in zip(module.statistics(group), module.statistics("depth")):
                        mine.copy_(theirs)
        again = model(IMAGES, task="depth")["depth"].final.depth
    assert torch.allclose(depth, again)


def test_single_group_models_keep_plain_batchnorms_and_folders_saved_before_load():
    single = build_model("polymax_tiny_synth_depth")
    assert not any(is_grouped(m) for m in single.modules())
    model = build_model("polymax_multitask_tiny_synth")
    before = {k: v for k, v in model.state_dict().items() if not any(k.endswith(f"_{g}") for g in
                                                                          ("semantic", "depth", "normals"))}
    before["kmax_decoder.layers.0.memory_in.bn.running_mean"] = torch.full((64,), 0.5)
    model.load_state_dict(before)                              # the pre-split layout: every group starts there
    norm = model.kmax_decoder.layers[0].memory_in.bn
    assert torch.equal(norm.statistics("normals")[0], torch.full((64,), 0.5))


def test_folding_keeps_grouped_norms_and_the_answers():
    model = build_model("polymax_multitask_tiny_synth").eval()
    folded = fold_batch_norms(model)
    assert any(is_grouped(m) for m in folded.modules())
    with torch.no_grad():
        for task in ("semantic", "normals"):
            a = model(IMAGES, task=task)[task].final.mask_logits
            b = folded(IMAGES, task=task)[task].final.mask_logits
            assert torch.allclose(a, b, atol=1e-4)


def test_split_statistics_copies_weights():
    block = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    block[1].weight.data.fill_(2.0)
    assert split_statistics(block, ("a", "b")) == 1
    assert isinstance(block[1], GroupBatchNorm1d) and torch.equal(block[1].weight, torch.full((4,), 2.0))


def test_sync_batch_norm_conversion_keeps_the_grouped_norms():
    from polymax.engine.distributed import convert_sync_batch_norm

    model = build_model("polymax_multitask_tiny_synth")
    keys = set(model.state_dict())
    convert_sync_batch_norm(model)
    assert set(model.state_dict()) == keys
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert all(isinstance(m, nn.SyncBatchNorm) or is_grouped(m) for m in norms)
    assert any(isinstance(m, nn.SyncBatchNorm) for m in model.backbone.modules())
    assert any(is_grouped(m) for m in model.modules())


def test_the_modules_that_read_only_pixels_keep_one_set_of_statistics():
    # Their input is the same for every query group (one read per image serves every pass).
    model = build_model("polymax_multitask_tiny_synth")
    readers = (*model.kmax_decoder.pixel_modules(), model.mask_head.pixel_head)
    norms = [m for owner in readers for m in owner.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and not any(is_grouped(m) for m in norms)
    assert is_grouped(model.kmax_decoder.layers[0].memory_in.bn) and is_grouped(model.mask_head.logit_norm)


def test_a_folder_whose_pixel_readers_kept_statistics_per_group_loads(tmp_path):
    """Folders saved while every BatchNorm of the decoder kept per-group statistics load; the pixel readers then
    use the first group's (which training and precise BN make equal to the others')."""
    from safetensors.torch import load_file, save_file

    from polymax.io.pretrained import load_model, save_pretrained

    model = build_model("polymax_multitask_tiny_synth").eval()
    save_pretrained(model, tmp_path)
    weights = tmp_path / "model.safetensors"
    state = load_file(str(weights))
    name = "kmax_decoder.layers.0.pixel_in.bn"
    for group in ("semantic", "depth", "normals"):
        for statistic in ("running_mean", "running_var", "num_batches_tracked"):
            state[f"{name}.{statistic}_{group}"] = state[f"{name}.{statistic}"].clone()
    save_file(state, str(weights))
    loaded = load_model(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(IMAGES, task="depth")["depth"].final.depth,
                                   model(IMAGES, task="depth")["depth"].final.depth)


def test_a_model_with_several_query_groups_pickles_and_keeps_its_answers():
    import pickle

    model = build_model("polymax_multitask_tiny_synth").eval()
    copy = pickle.loads(pickle.dumps(model))
    with torch.no_grad():
        torch.testing.assert_close(copy(IMAGES, task="normals")["normals"].final.normals,
                                   model(IMAGES, task="normals")["normals"].final.normals)
