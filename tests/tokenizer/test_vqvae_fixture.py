"""Parity with the official AiT depth VQ-VAE (tests/fixtures/ait_vqvae): encoder, nearest-code quantiser, hard
and soft decode, the eval-mode forward losses and one EMA training step, given the same weights. Floats: max|Δ| ≤
1e-5 · max|ref|; indices exactly; losses 1e-5 relative (the fixture README §7)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ait_fixture import golden, manifest, reference_state
from deeplab2_fixture import assert_close_to_scale

from polymax import build_model
from polymax.tokenizer.vqvae import VQVAE

REL = 1e-5


def fixture_model() -> VQVAE:
    # The fixture ran at image_size 128, which changes no weight shape.
    model = build_model("vqvae_nyu_depth", image_size=128)
    model.load_state_dict(reference_state(), strict=True)
    return model.eval()


def tensor(key: str) -> torch.Tensor:
    return torch.from_numpy(golden()[key])


def test_preset_has_the_official_parameter_count():
    counts = manifest()["param_count_default_depth_config"]
    model = build_model("vqvae_nyu_depth")
    assert sum(p.numel() for p in model.parameters()) == counts["parameters"] == 7_689_201
    assert sum(p.numel() for p in model.encoder.parameters()) == counts["encoder"]
    assert sum(p.numel() for p in model.decoder.parameters()) == counts["decoder"]
    assert sum(b.numel() for b in model.buffers()) == counts["buffers"]
    assert round(sum(p.numel() for p in build_model("vqvae_coco_mask").parameters()) / 1e6, 2) == 1.99


def test_encoder_quantiser_and_decoders_match_the_reference():
    model = fixture_model()
    depth = tensor("inputs/depth")
    with torch.no_grad():
        z = model.embed(depth)
        assert_close_to_scale(z.numpy(), golden()["encoder/z"], "encoder/z", rel=REL)
        assert_close_to_scale(model.codebook.distances(z).numpy(), golden()["vq/distances"], "vq/distances", rel=REL)
        indices = model.codebook.nearest(z)
        np.testing.assert_array_equal(indices.numpy(), golden()["vq/indices"])
        assert_close_to_scale(model.codebook.lookup(indices).numpy(), golden()["vq/quantized"], "vq/quantized",
                              rel=REL)
        assert_close_to_scale(model.decode(indices).numpy(), golden()["recon/decode_hard"], "decode_hard", rel=REL)
        np.testing.assert_array_equal(model.encode(depth).numpy(), golden()["vq/indices"])
        logits = tensor("inputs/soft_logits")
        embeds = model.codebook.mix(torch.softmax(logits * 0.8, dim=1))
        assert_close_to_scale(embeds.numpy(), golden()["soft/embeds"], "soft/embeds", rel=REL)
        soft = model.decode_soft(logits)                        # τ = 0.8 from the preset
        assert_close_to_scale(soft[:, 0].numpy(), golden()["soft/decode"], "soft/decode", rel=REL)


def test_eval_forward_losses_match_the_reference():
    model = fixture_model()
    with torch.no_grad():
        run = model(tensor("inputs/depth"))
    assert_close_to_scale(run.output.numpy(), golden()["recon/forward_out"], "forward_out", rel=REL)
    for ours, key in ((run.total, "total"), (run.reconstruction, "recon"), (run.commitment, "vq")):
        assert float(ours) == pytest.approx(float(golden()[f"recon/forward_{key}_loss"]), rel=REL), key
    # eval mode leaves the codebook alone
    torch.testing.assert_close(model.codebook.embedding, reference_state()["codebook.embedding"], rtol=0, atol=0)


def test_one_ema_training_step_matches_the_reference():
    model = fixture_model().train()
    with torch.no_grad():
        run = model(tensor("inputs/depth_masked"), target=tensor("inputs/depth"))
    np.testing.assert_array_equal(run.indices.numpy(), golden()["ema_step/indices"])
    assert_close_to_scale(run.output.numpy(), golden()["ema_step/out"], "ema_step/out", rel=REL)
    for ours, key in ((run.total, "total_loss"), (run.reconstruction, "recon_loss"), (run.commitment, "vq_loss"),
                      (run.perplexity, "perplexity")):
        assert float(ours) == pytest.approx(float(golden()[f"ema_step/{key}"]), rel=REL), key
    for ours, key in (("ema_size", "ema_cluster_size"), ("ema_weight", "ema_w"), ("embedding", "embedding")):
        assert_close_to_scale(getattr(model.codebook, ours).numpy(), golden()[f"ema_step/{key}"], key, rel=REL)
