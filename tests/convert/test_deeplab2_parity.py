"""The full converted model against deeplab2's golden outputs (fixtures README §5–§8): every stored tensor,
the k-means assignments and the post-processed maps. Tolerance: max|Δ| ≤ 1e-4 · max|ref| per float array.

Both forms are checked: the model as built and the inference form ``polymax predict`` runs
(``optimise_for_inference``: BNs folded, channels-last, fused oneDNN convolutions)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from deeplab2_fixture import assert_close_to_scale, golden_outputs, load_manifest, official_variables

from polymax.build import build_model
from polymax.convert.deeplab2 import state_dict_from_variables
from polymax.inference.fuse import optimise_for_inference
from polymax.tasks.panoptic_merge import PanopticPostProcessor

FIXTURES = {"coco_r50": "kmax_r50_coco", "coco_convnext_tiny": "kmax_convnext_tiny_coco"}
CASES = [(fixture, form) for fixture in sorted(FIXTURES) for form in ("built", "optimised")]

# Part of the default suite: CI must show parity on both fixtures (about 10 s per fixture and form).


@functools.cache
def _run(parity, fixture: str, form: str):
    model = build_model(FIXTURES[fixture])
    missing, unexpected = model.load_state_dict(state_dict_from_variables(model, official_variables(parity, fixture)),
                                                strict=False)
    assert not unexpected and all(key.endswith("num_batches_tracked") for key in missing)
    model.eval()
    if form == "optimised":
        model = optimise_for_inference(model)
    golden = golden_outputs(parity, fixture)
    images = torch.from_numpy(golden["input_image"]).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        features = model.backbone(model.preprocess(images))
        pixels = model.pixel_decoder(features)
        centres = model.kmax_decoder(pixels)
        run = model.forward_with_semantic(images).run
    return model, golden, features, pixels, centres, run


def _nhwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize(("fixture", "form"), CASES)
def test_every_stored_tensor_matches(parity, fixture, form):
    model, golden, features, pixels, centres, run = _run(parity, fixture, form)
    prediction = run.final
    ours = {f"backbone/stage{i}": _nhwc(getattr(features, f"stage{i}")) for i in (2, 3, 4, 5)}
    ours.update({"pixel_decoder/decoder_stage1": _nhwc(pixels.os32),
                 "pixel_decoder/decoder_stage2": _nhwc(pixels.os16),
                 "pixel_decoder/decoder_stage3": _nhwc(pixels.os8),
                 "pixel_decoder/decoder_output": _nhwc(pixels.high_res),
                 "transformer_decoder/class_embeddings": centres.class_embeddings.numpy(),
                 "transformer_decoder/mask_embeddings": centres.mask_embeddings.numpy(),
                 "pred/pixel_space_mask_logits": _nhwc(prediction.mask_logits),
                 "pred/transformer_class_logits": prediction.class_logits.numpy(),     # COCO: same channel order
                 "pred/pixel_space_normalized_feature": _nhwc(prediction.pixel_features)})
    for i, aux in enumerate(run.aux):
        ours[f"aux/{i}/pixel_space_mask_logits"] = _nhwc(aux.mask_logits)
        ours[f"aux/{i}/transformer_class_logits"] = aux.class_logits.numpy()
        ours[f"aux/{i}/pixel_space_normalized_feature"] = _nhwc(aux.pixel_features)
    # Semantic logits: deeplab2 orders data-set ids with void (0) first; ours have void last.
    semantic = _nhwc(run.semantic_logits)
    ours["pred/semantic_logits"] = np.concatenate([semantic[..., -1:], semantic[..., :-1]], axis=-1)
    float_keys = [k for k in golden if k.startswith(("backbone/", "pixel_decoder/", "transformer_decoder/", "pred/",
                                                      "aux/"))]
    assert sorted(float_keys) == sorted(ours), "a stored tensor is not compared"
    ratios = {key: assert_close_to_scale(ours[key], golden[key], key) for key in float_keys}
    print(f"\n{fixture} ({form}): worst max|Δ|/max|ref| = {max(ratios.values()):.3g} ({max(ratios, key=ratios.get)})")
    for i in range(len(run.aux)):
        reference = golden[f"aux/{i}/pixel_space_mask_logits"].argmax(axis=-1)
        np.testing.assert_array_equal(run.aux[i].mask_logits.argmax(dim=1).numpy(), reference,
                                      err_msg=f"k-means assignment of layer {i}")


@pytest.mark.parametrize(("fixture", "form"), CASES)
def test_post_processed_maps_match(parity, fixture, form):
    model, golden, _, _, _, run = _run(parity, fixture, form)
    prediction = run.final
    info = model.config.dataset
    for variant, s in load_manifest(parity, fixture)["post_processing"].items():
        processor = PanopticPostProcessor(
            thing_classes=info.thing_classes, num_classes=info.num_classes, ignore_label=info.ignore_label,
            label_divisor=info.label_divisor, pixel_confidence=s["pixel_confidence_threshold"],
            thing_confidence=s["thing_class_confidence_threshold"],
            stuff_confidence=s["stuff_class_confidence_threshold"], overlap=s["overlapping_threshold"],
            reorder_class_weight=s["reorder_class_weight"],
            reorder_mask_weight=s["reorder_mask_weight"], thing_area_limit=s["thing_area_limit"],
            stuff_area_limit=s["stuff_area_limit"])
        result = processor(prediction.mask_logits, prediction.class_logits, tuple(golden["input_image"].shape[:2]))[0]
        # Ours → deeplab2's COCO encoding (semantic·256 + instance, data-set id = class + 1, void 0).
        assert info.label_divisor == 256
        panoptic = result.panoptic.numpy()
        void = panoptic == info.ignore_label * info.label_divisor
        theirs = np.where(void, 0, (panoptic // 256 + 1) * 256 + panoptic % 256)
        differing = {
            "panoptic": int((theirs != golden[f"post/{variant}/panoptic_pred"][0]).sum()),
            "semantic": int((result.semantic.numpy() + 1 != golden[f"post/{variant}/semantic_pred"][0]).sum()),
            "instance": int((np.maximum(result.mask_id.numpy(), 1)
                             != golden[f"post/{variant}/instance_pred"][0]).sum()),
        }
        print(f"{fixture}/{variant}: differing pixels {differing}, {len(result.segments)} segments")
        assert max(differing.values()) <= 5, f"{fixture}/{variant}: {differing}"
