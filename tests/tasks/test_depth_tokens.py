"""The depth_tokens task beyond the contract: gradients reach the head through the soft decode, the hard-decode
option, one tokenizer shared by head and criterion, and the tokenizer's weights travelling inside the model
folder."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
import torch

from polymax import build_model, load_model, save_pretrained
from polymax.build import build_criterion
from polymax.config.train import DepthTokensLossOptions, TrainConfig
from polymax.data import build_dataset
from polymax.data.collate import collate
from polymax.data.synthetic import SYNTH_INFO
from polymax.errors import UserError

PRESET = "ait_tiny_synth_depth"


def batch(count: int = 2):
    samples = list(build_dataset("synth", split="val", size=(65, 65), num_samples=count, seed=0))
    data = collate(samples, ignore_label=SYNTH_INFO.ignore_label, label_divisor=SYNTH_INFO.label_divisor)
    return data.images, data.targets


def tokenizer_folder(path):
    """A tokenizer folder whose codebook differs from the seeded stand-in."""
    tokenizer = build_model("vqvae_tiny_synth_depth")
    tokenizer.codebook.init_from_data(torch.randn(2, 32, 8, 8), generator=torch.Generator().manual_seed(3))
    return save_pretrained(tokenizer, path), tokenizer


def only(**weights) -> TrainConfig:
    zero = DepthTokensLossOptions(token_ce=0.0, aux_token_ce=0.0, soft_silog=0.0)
    return replace(TrainConfig(), depth_tokens_loss=replace(zero, **weights))


def test_the_soft_silog_alone_trains_the_final_head_through_the_decoder():
    model = build_model(PRESET)
    images, targets = batch()
    criterion = build_criterion(model.config, None, only(soft_silog=1.0))
    terms = criterion(model(images)["depth_tokens"], targets)
    assert list(terms) == ["soft_silog"] and float(terms.total.detach()) > 0
    terms.total.backward()
    head = model.heads["depth_tokens"]
    final = head.cells[-1]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in final.parameters())
    assert all(p.grad is None for p in head.cells[0].parameters())      # auxiliary heads are not decoded
    assert not list(head.tokenizer.parameters())                        # frozen: buffers only
    assert model.backbone.stem.conv.weight.grad.abs().sum() > 0          # …and on into the trunk


def test_hard_decoding_is_an_option_and_differs_from_soft():
    soft = build_model(PRESET).eval()
    hard = build_model(PRESET, **{"tasks.depth_tokens.token_decode": "hard"}).eval()
    hard.load_state_dict(soft.state_dict())
    images, _ = batch(1)
    with torch.no_grad():
        out_soft, out_hard = soft(images)["depth_tokens"].final, hard(images)["depth_tokens"].final
        torch.testing.assert_close(out_soft.token_logits, out_hard.token_logits)
        head = hard.heads["depth_tokens"]
        expected = head.tokenizer.decode(out_hard.token_logits.argmax(dim=1))
        expected = torch.nn.functional.pad(expected, (0, 1, 0, 1), mode="replicate").clamp(head.min_depth,
                                                                                             head.max_depth)
        torch.testing.assert_close(out_hard.depth, expected)
        assert (out_soft.depth - out_hard.depth).abs().max() > 1e-4
        assert out_soft.depth.shape == (1, 1, 65, 65)
    with pytest.raises(UserError, match="token_decode"):
        build_model(PRESET, **{"tasks.depth_tokens.token_decode": "argmax"})


def test_head_and_criterion_share_the_tokenizer_and_the_folder_travels_with_the_model(tmp_path):
    folder, tokenizer = tokenizer_folder(tmp_path / "tokenizer")
    model = build_model(PRESET, **{"tasks.depth_tokens.tokenizer_weights": str(folder)})
    head = model.heads["depth_tokens"].tokenizer
    criterion = build_criterion(model.config).tokenizer
    for key, value in tokenizer.state_dict().items():
        torch.testing.assert_close(head.state_dict()[key], value, rtol=0, atol=0)
        torch.testing.assert_close(criterion.state_dict()[key], value, rtol=0, atol=0)
    stand_in = build_model(PRESET).heads["depth_tokens"].tokenizer
    assert not torch.equal(stand_in.codebook.embedding, head.codebook.embedding)
    save_pretrained(model, tmp_path / "model")
    shutil.rmtree(folder)                                # the model folder holds the tokenizer's weights itself
    loaded = load_model(tmp_path / "model").heads["depth_tokens"].tokenizer
    torch.testing.assert_close(loaded.codebook.embedding, tokenizer.codebook.embedding, rtol=0, atol=0)
    with pytest.raises(UserError, match="does not exist"):
        build_criterion(model.config)                    # training needs the folder


def test_a_folder_of_another_tokenizer_is_refused(tmp_path):
    save_pretrained(build_model("vqvae_tiny_synth_depth", num_codes=32), tmp_path / "other")
    with pytest.raises(UserError, match="does not hold a vqvae_tiny_synth_depth"):
        build_model(PRESET, **{"tasks.depth_tokens.tokenizer_weights": str(tmp_path / "other")})
