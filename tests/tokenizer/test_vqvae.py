"""The tokenizer's API: presets through build_model, hard = soft decoding for one-hot logits, gradients through
the soft decode, the collapse fixes, and the model folder round trip."""

from __future__ import annotations

import json

import pytest
import torch

from polymax import build_model, load_model, save_pretrained
from polymax.errors import UserError
from polymax.tokenizer import TOKENIZER_PRESETS, TokenizerConfig


@pytest.mark.parametrize("name", sorted(TOKENIZER_PRESETS))
def test_presets_build_and_give_a_token_grid(name):
    model = build_model(name).eval()
    config = model.config
    size = 2 * config.downsample_ratio
    maps = torch.rand(1, 1, size, size) * config.max_value
    assert model.encode(maps).shape == (1, 2, 2)
    assert model.decode(model.encode(maps)).shape == (1, 1, size, size)


def test_soft_decoding_equals_hard_decoding_for_one_hot_logits():
    model = build_model("vqvae_tiny_synth_depth").eval()
    indices = torch.randint(0, 64, (2, 3, 4))
    logits = 1e4 * torch.nn.functional.one_hot(indices, 64).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        torch.testing.assert_close(model.decode_soft(logits), model.decode(indices), atol=1e-5, rtol=1e-5)
        # …and a flat distribution decodes to something else
        assert (model.decode_soft(torch.zeros_like(logits)) - model.decode(indices)).abs().max() > 1e-3


def test_gradients_flow_through_the_soft_decode_into_the_logits_only():
    model = build_model("vqvae_tiny_synth_depth").eval().requires_grad_(False)
    logits = torch.randn(1, 64, 2, 2, requires_grad=True)
    model.decode_soft(logits, tau=0.8).mean().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_data_dependent_init_and_dead_code_restart():
    model = build_model("vqvae_tiny_synth_depth")
    z = torch.randn(2, 32, 8, 8)
    model.codebook.init_from_data(z, generator=torch.Generator().manual_seed(0))
    flat = z.permute(0, 2, 3, 1).reshape(-1, 32)
    # every code is one of the encoder outputs, all distinct (128 rows ≥ 64 codes)
    assert all(bool((flat == code).all(dim=1).any()) for code in model.codebook.embedding)
    assert model.codebook.embedding.unique(dim=0).shape[0] == 64
    before = model.codebook.embedding.clone()
    dead = torch.zeros(64, dtype=torch.bool)
    dead[:5] = True
    model.codebook.ema_size[:5] = 0.0
    assert model.codebook.restart_codes(dead, z, generator=torch.Generator().manual_seed(1)) == 5
    assert (model.codebook.ema_size == 1.0).all()
    assert not torch.equal(model.codebook.embedding[:5], before[:5])
    torch.testing.assert_close(model.codebook.embedding[5:], before[5:], rtol=0, atol=0)


def test_model_folder_round_trip(tmp_path):
    model = build_model("vqvae_tiny_synth_depth")
    model.codebook.init_from_data(torch.randn(1, 32, 8, 8))
    save_pretrained(model, tmp_path / "tok")
    header = json.loads((tmp_path / "tok" / "config.json").read_text())
    assert header["config"]["tokenizer"]["preset"] == "vqvae_tiny_synth_depth"
    loaded = load_model(tmp_path / "tok")
    assert loaded.config == model.config
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)


def test_config_mistakes_are_one_line_errors():
    with pytest.raises(UserError, match="power of two"):
        TokenizerConfig(downsample_ratio=12)
    with pytest.raises(UserError, match="unknown tokenizer override"):
        build_model("vqvae_nyu_depth", codebook_size=3)
    with pytest.raises(UserError, match="must be a int"):
        TokenizerConfig.from_dict({"tokenizer": {"num_codes": "many"}})
    with pytest.raises(UserError, match="multiple of"):
        build_model("vqvae_tiny_synth_depth").encode(torch.rand(1, 1, 65, 65))
