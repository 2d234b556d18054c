"""Prediction heads: mask head, class head (task-head interface, void bias), auxiliary semantic branches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from deeplab2_fixture import array_for, assert_close_to_scale, golden_outputs, load_manifest, nhwc_to_nchw
from torch import nn

from polymax.build import build_model
from polymax.convert.deeplab2 import head_mapping
from polymax.model.cluster_decoder.mask_head import MaskHead
from polymax.model.heads.classification import ClassHead, void_bias
from polymax.model.heads.semantic_decoder import SemanticDecoderBranch, SemanticHeadBranch
from polymax.structures import Features, MaskPrediction


def test_mask_head_shapes_and_unit_features():
    head = MaskHead(pixel_channels=12, cluster_channels=10, head_channels=8, mask_dim=6).eval()
    pixels, embeddings, values = torch.randn(2, 12, 7, 9), torch.randn(2, 5, 10), torch.randn(2, 5, 10)
    out = head(pixels, embeddings, values)
    assert out.mask_logits.shape == (2, 5, 7, 9) and out.pixel_features.shape == (2, 6, 7, 9)
    torch.testing.assert_close(out.pixel_features.norm(dim=1), torch.ones(2, 7, 9))
    assert out.cluster_features is values
    assert head(pixels, embeddings).cluster_features is embeddings
    # The logit BN is a single affine map shared by all logits (γ starts at 0.1 as in deeplab2).
    assert head.logit_norm.weight.shape == (1,) and head.logit_norm.weight.item() == pytest.approx(0.1)


def test_class_head_adds_the_constant_void_bias_per_prediction():
    head = ClassHead(num_classes=133, in_channels=4, num_predictions=3)
    for layer in head.classifiers:
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
    features = torch.randn(2, 5, 4)
    layer = MaskPrediction(mask_logits=torch.randn(2, 5, 3, 3), pixel_features=torch.randn(2, 8, 3, 3),
                           cluster_features=features)
    out = head(layer, 2)
    assert out.class_logits.shape == (2, 5, 134)
    assert out.mask_logits is layer.mask_logits and out.pixel_features is layer.pixel_features
    assert torch.all(out.class_logits[..., :-1] == 0)
    assert torch.allclose(out.class_logits[..., -1], torch.tensor(math.log(133 * 9.0)))
    assert void_bias(134) == pytest.approx(math.log(133 * 0.9 / 0.1))
    # The bias is a constant, not a parameter; each prediction index has its own weights.
    assert sum(p.numel() for p in head.parameters()) == 3 * (4 * 134 + 134)
    nn.init.ones_(head.classifiers[0].weight)
    assert not torch.equal(head(layer, 0).class_logits, head(layer, 1).class_logits)


def test_semantic_branch_strides():
    features = Features(stage1=torch.randn(1, 8, 33, 33), stage2=torch.randn(1, 16, 17, 17),
                        stage3=torch.randn(1, 24, 9, 9), stage4=torch.randn(1, 32, 5, 5),
                        stage5=torch.randn(1, 40, 3, 3))
    decoder = SemanticDecoderBranch(stage_channels=(16, 24, 40), num_logits=7, endpoint_activation="gelu",
                                    channels=16, low_level_channels=(8, 4)).eval()
    assert decoder(features).shape == (1, 7, 17, 17)
    head = SemanticHeadBranch(in_channels=40, num_logits=7, channels=16).eval()
    assert head(features).shape == (1, 7, 3, 3)
    with pytest.raises(ValueError):
        SemanticDecoderBranch(stage_channels=(16, 24, 40), num_logits=7, endpoint_activation="tanh")


def test_training_only_semantic_branch_follows_the_preset():
    images = torch.full((1, 3, 33, 33), 100.0)
    model = build_model("kmax_tiny_test")
    assert model(images).run.semantic_logits.shape == (1, 7, 9, 9)       # 'decoder' variant at os4, C + void
    model.eval()
    assert model(images).run.semantic_logits is None
    assert build_model("kmax_tiny_test", tasks__panoptic__aux_semantic="none").semantic_branch is None
    head_variant = build_model("kmax_tiny_test", tasks__panoptic__aux_semantic="head").eval()
    assert head_variant.forward_with_semantic(images).run.semantic_logits.shape == (1, 7, 2, 2)   # os32


@pytest.mark.parametrize("fixture, channels, activation", [("coco_r50", (256, 512, 2048), "relu"),
                                                           ("coco_convnext_tiny", (96, 192, 768), "gelu")])
@torch.no_grad()
def test_semantic_decoder_matches_deeplab2(parity, fixture, channels, activation):
    golden = golden_outputs(parity, fixture)
    model = nn.Module()
    model.kmax_decoder = nn.Module()
    model.kmax_decoder.layers = []
    model.semantic_branch = SemanticDecoderBranch(stage_channels=channels, num_logits=134,
                                                  endpoint_activation=activation)
    mapping = {key: entry for key, entry in head_mapping(model).items() if key.startswith("semantic_branch.")}
    wanted = {name for name, _ in mapping.values()}
    variables = {e["name"]: array_for(e) for e in load_manifest(parity, fixture)["variables"] if e["name"] in wanted}
    state = {key[len("semantic_branch."):]: torch.from_numpy(np.ascontiguousarray(transform(variables[name])))
             for key, (name, transform) in mapping.items()}
    model.semantic_branch.load_state_dict(state, strict=False)
    t = lambda key: torch.from_numpy(nhwc_to_nchw(golden[f"backbone/{key}"]))
    features = Features(stage1=None, stage2=t("stage2"), stage3=t("stage3"), stage4=t("stage4"), stage5=t("stage5"))
    ours = model.semantic_branch.eval()(features).permute(0, 2, 3, 1).numpy()
    # deeplab2's channels are data-set ids with void = 0 first; ours put void last.
    reference = golden["pred/semantic_logits"]
    assert_close_to_scale(ours, np.concatenate([reference[..., 1:], reference[..., :1]], axis=-1), "semantic_logits")
