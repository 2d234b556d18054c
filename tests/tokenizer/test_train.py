"""Training the tokenizer: AiT's mask augmentation, and a codebook that does not collapse (data-dependent
initialisation + dead-code restarts) where AiT's initialisation does."""

from __future__ import annotations

import json

import pytest
import torch

from polymax import build_model, load_model
from polymax.cli import main
from polymax.cli.train_tokenizer import load_depth_maps
from polymax.data.synthetic import SYNTH_MAX_DEPTH, SYNTH_MIN_DEPTH
from polymax.tokenizer.train import TokenizerTrainOptions, evaluate_tokenizer, mask_patches, train_tokenizer


def test_mask_augmentation_zeroes_half_of_the_patches():
    maps = torch.rand(3, 1, 64, 64) + 1.0
    masked = mask_patches(maps, ratio=0.5, patch=16, generator=torch.Generator().manual_seed(0))
    patches = masked.unfold(2, 16, 16).unfold(3, 16, 16)                  # (3, 1, 4, 4, 16, 16)
    zero = (patches == 0).flatten(-2).all(dim=-1)
    kept = (patches == maps.unfold(2, 16, 16).unfold(3, 16, 16)).flatten(-2).all(dim=-1)
    assert (zero | kept).all()
    assert zero.flatten(1).sum(dim=1).tolist() == [8, 8, 8]               # ceil(0.5 · 16) per image
    assert mask_patches(maps, ratio=0.0, patch=16, generator=torch.Generator()) is maps


def run(steps: int, *, data_init: bool, restart_every: int, rooms: int, batch_size: int = 8, size: int = 64) -> dict:
    torch.manual_seed(0)
    model = build_model("vqvae_tiny_synth_depth", image_size=size)
    train = load_depth_maps("synth", root=None, split="train", count=rooms, size=size, seed=0)
    held_out = load_depth_maps("synth", root=None, split="val", count=min(rooms, 16), size=size, seed=0)
    options = TokenizerTrainOptions(steps=steps, batch_size=batch_size, lr=1e-3, restart_every=restart_every,
                                    data_init=data_init)
    train_tokenizer(model, train, options)
    return evaluate_tokenizer(model, held_out, min_depth=SYNTH_MIN_DEPTH, max_depth=SYNTH_MAX_DEPTH)


def test_a_short_run_uses_much_of_the_codebook():
    fixed = run(20, data_init=True, restart_every=10, rooms=8, batch_size=4, size=32)
    plain = run(20, data_init=False, restart_every=0, rooms=8, batch_size=4, size=32)     # AiT's initialisation
    assert fixed["codes_used"] >= 16 and plain["codes_used"] < fixed["codes_used"], (fixed, plain)   # of 64


@pytest.mark.slow
def test_the_codebook_does_not_collapse_in_200_steps():
    fixed = run(200, data_init=True, restart_every=20, rooms=64)
    plain = run(200, data_init=False, restart_every=0, rooms=64)        # AiT's initialisation
    assert fixed["codes_used"] >= 32 and fixed["perplexity"] > 8, fixed
    assert plain["codes_used"] < fixed["codes_used"], (plain, fixed)


def test_cli_writes_a_tokenizer_folder_with_its_upper_bound(tmp_path, capsys):
    out = tmp_path / "tok"
    argv = ["train-tokenizer", "--steps", "3", "--batch-size", "2", "--train-samples", "4", "--eval-samples", "2",
            "--out", str(out), "--json"]
    assert main(argv) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"rms", "abs_rel", "delta1", "codes_used", "perplexity"} <= set(scores)
    header = json.loads((out / "config.json").read_text())
    assert header["extra"]["held_out"]["codes_used"] == scores["codes_used"]
    assert load_model(out).config.preset == "vqvae_tiny_synth_depth"


@pytest.mark.parametrize("argv, message", [
    (["--preset", "vqvae_huge"], "unknown tokenizer preset"),
    (["--mask-ratio", "1.5"], "--mask-ratio"),
])
def test_cli_mistakes_are_one_line_errors(tmp_path, capsys, argv, message):
    assert main(["train-tokenizer", "--steps", "1", "--out", str(tmp_path / "x"), *argv]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1
