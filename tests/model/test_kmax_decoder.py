"""kMaX decoder: parity with deeplab2 on the fixtures' stored pixel-decoder outputs, k-means semantics, drop query."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from deeplab2_fixture import array_for, assert_close_to_scale, golden_outputs, load_manifest, nhwc_to_nchw
from torch import nn

from polymax.convert.deeplab2 import head_mapping
from polymax.model.cluster_decoder.decoder import KMaXDecoder
from polymax.model.cluster_decoder.layer import KMaXLayer
from polymax.model.cluster_decoder.mask_head import MaskHead
from polymax.model.heads.classification import ClassHead
from polymax.structures import PixelFeatures


def _heads(num_queries: int = 128, num_classes: int = 133) -> nn.Module:
    """The decoder-side submodules under the names the converter maps (kmax_decoder, mask_head, heads.panoptic)."""
    model = nn.Module()
    model.kmax_decoder = KMaXDecoder(num_queries=num_queries, drop_path_keep=0.8)
    model.mask_head = MaskHead()
    model.heads = nn.ModuleDict({"panoptic": ClassHead(num_classes=num_classes)})
    model.semantic_branch = None
    return model


def _load_fixture_heads(parity, fixture: str) -> nn.Module:
    model = _heads()
    wanted = {name for name, _ in head_mapping(model).values()}
    # Regenerate only the decoder / head variables (the trunk's are not needed here).
    variables = {e["name"]: array_for(e) for e in load_manifest(parity, fixture)["variables"] if e["name"] in wanted}
    state = {key: torch.from_numpy(np.ascontiguousarray(transform(variables[name])))
             for key, (name, transform) in head_mapping(model).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
    return model.eval()


def _pixels(golden: dict) -> PixelFeatures:
    t = lambda key: torch.from_numpy(nhwc_to_nchw(golden[f"pixel_decoder/{key}"]))
    return PixelFeatures(os32=t("decoder_stage1"), os16=t("decoder_stage2"), os8=t("decoder_stage3"),
                         high_res=t("decoder_output"))


@pytest.mark.parametrize("fixture", ["coco_r50", "coco_convnext_tiny"])
@torch.no_grad()
def test_decoder_and_heads_match_deeplab2(parity, fixture):
    golden = golden_outputs(parity, fixture)
    model = _load_fixture_heads(parity, fixture)
    pixels = _pixels(golden)
    centres = model.kmax_decoder(pixels)
    final = model.heads.panoptic(model.mask_head(pixels.high_res, centres.mask_embeddings, centres.class_embeddings),
                            len(centres.layers))
    ratios = {
        "class_embeddings": assert_close_to_scale(centres.class_embeddings.numpy(),
                                                  golden["transformer_decoder/class_embeddings"], "class_embeddings"),
        "mask_embeddings": assert_close_to_scale(centres.mask_embeddings.numpy(),
                                                 golden["transformer_decoder/mask_embeddings"], "mask_embeddings"),
        "mask_logits": assert_close_to_scale(final.mask_logits.permute(0, 2, 3, 1).numpy(),
                                             golden["pred/pixel_space_mask_logits"], "mask_logits"),
        "class_logits": assert_close_to_scale(final.class_logits.numpy(), golden["pred/transformer_class_logits"],
                                              "class_logits"),
    }
    assert len(centres.layers) == 6
    for i, layer in enumerate(centres.layers):
        aux = model.heads.panoptic(layer, i)
        reference = golden[f"aux/{i}/pixel_space_mask_logits"]
        ratios[f"aux{i}"] = assert_close_to_scale(aux.mask_logits.permute(0, 2, 3, 1).numpy(), reference, f"aux{i}")
        assert_close_to_scale(aux.class_logits.numpy(), golden[f"aux/{i}/transformer_class_logits"], f"aux{i} class")
        assert_close_to_scale(aux.pixel_features.permute(0, 2, 3, 1).numpy(),
                              golden[f"aux/{i}/pixel_space_normalized_feature"], f"aux{i} features")
        # The hard k-means assignment of layer i must be identical.
        np.testing.assert_array_equal(aux.mask_logits.argmax(dim=1).numpy(), reference.argmax(axis=-1))
    assert max(ratios.values()) < 1e-4


def _small_decoder(**kwargs) -> KMaXDecoder:
    options = dict(pixel_channels=(24, 16, 8), num_layers=(1, 1, 1), num_queries=6, hidden=16, num_heads=2, ffn=32,
                   drop_path_keep=1.0, mask_dim=8, pixel_head_channels=8)
    options.update(kwargs)
    return KMaXDecoder(**options)


def _small_pixels(batch: int = 2) -> PixelFeatures:
    return PixelFeatures(os32=torch.randn(batch, 24, 3, 3), os16=torch.randn(batch, 16, 5, 5),
                         os8=torch.randn(batch, 8, 9, 9), high_res=torch.randn(batch, 8, 17, 17))


def test_layer_outputs_follow_their_strides():
    decoder = _small_decoder(num_layers=(2, 1, 1)).eval()
    centres = decoder(_small_pixels())
    assert centres.class_embeddings.shape == centres.mask_embeddings.shape == (2, 6, 16)
    sizes = [tuple(layer.mask_logits.shape[-2:]) for layer in centres.layers]
    assert sizes == [(3, 3), (3, 3), (5, 5), (9, 9)]
    for layer in centres.layers:
        assert layer.cluster_features.shape == (2, 6, 16)
        norms = layer.pixel_features.norm(dim=1)
        torch.testing.assert_close(norms, torch.ones_like(norms))


def test_assignment_is_hard_and_stops_gradients():
    # The aux head only decides the one-hot assignment; the centres carry no gradient back into it.
    decoder = _small_decoder().train()
    centres = decoder(_small_pixels())
    centres.class_embeddings.sum().backward()
    aux_grads = [p.grad for layer in decoder.layers for p in layer.aux_head.parameters()]
    assert all(g is None or not g.any() for g in aux_grads)
    assert decoder.cluster_centres.grad is not None and decoder.cluster_centres.grad.abs().sum() > 0


def test_kmeans_update_is_a_sum_over_assigned_pixels():
    layer = KMaXLayer(pixel_channels=4, hidden=8, num_heads=2, key_channels=4, ffn=16, mask_dim=4,
                      pixel_head_channels=4).eval()
    centres, pixels = torch.randn(1, 3, 8), torch.randn(1, 4, 5, 5)
    captured = {}
    layer.kmeans_norm.register_forward_hook(lambda module, args, out: captured.setdefault("u", args[0]))
    _, aux = layer(centres, pixels)
    values = layer.pixel_value(layer.pixel_in(torch.nn.functional.gelu(pixels))).flatten(2)[0]   # (E, hw)
    owner = aux.mask_logits.flatten(2).argmax(dim=1)[0]                                          # (hw,)
    expected = torch.stack([values[:, owner == k].sum(dim=1) for k in range(3)])                 # (K, E)
    torch.testing.assert_close(captured["u"][0].T, expected)


def test_drop_query_trains_on_a_subset_and_infers_with_all():
    decoder = _small_decoder(num_queries=8, drop_query=0.5)
    decoder.train()
    assert decoder(_small_pixels()).class_embeddings.shape[1] == 4
    decoder.eval()
    assert decoder(_small_pixels()).class_embeddings.shape[1] == 8
    with pytest.raises(ValueError):
        _small_decoder(drop_query=1.0)


def test_parameter_counts_match_deeplab2():
    # Spec §7: per kMaX layer without its aux head (os32 / os16 / os8), cluster centres + projections.
    model = _heads(num_classes=133)
    layers = model.kmax_decoder.layers
    own = [sum(p.numel() for p in layer.parameters()) - sum(p.numel() for p in layer.aux_head.parameters())
           for layer in layers]
    assert own == [1_975_312] * 2 + [1_713_168] * 2 + [1_582_096] * 2
    aux = sum(p.numel() for p in layers[0].aux_head.parameters())
    aux += sum(p.numel() for p in model.heads.panoptic.classifiers[0].parameters())
    assert aux == 173_576
    decoder = model.kmax_decoder
    rest = sum(p.numel() for p in decoder.parameters()) - sum(p.numel() for p in decoder.layers.parameters())
    assert rest == 164_864


def test_passes_sharing_one_pixel_read_equal_passes_that_read_their_own():
    # The read depends on the pixels only: two query groups' passes over one read give what each pass gives alone,
    # and the gradients reaching the pixels add up to the same.
    torch.manual_seed(0)
    decoder = _small_decoder(group_sizes={"depth": 5}).train()
    pixels = _small_pixels()
    for tensor in (pixels.os32, pixels.os16, pixels.os8):
        tensor.requires_grad_(True)
    gradients = []
    for share in (True, False):
        reads = decoder.read_pixels(pixels) if share else None
        runs = [decoder(pixels, task=task, reads=reads) for task in (None, "depth")]
        loss = sum((run.class_embeddings ** 2).sum() + sum(aux.mask_logits.sum() for aux in run.layers) for run in runs)
        gradients.append(torch.autograd.grad(loss, (pixels.os32, pixels.os16, pixels.os8)))
        if share:
            shared_runs = runs
    for a, b in zip(*gradients):
        torch.testing.assert_close(a, b)
    for a, b in zip(shared_runs, runs):
        torch.testing.assert_close(a.class_embeddings, b.class_embeddings)
