"""Instance masks as tokens: box crops and their paste back (hand-made), soft = hard decoding of the mask
tokenizer for one-hot logits, and `polymax train-tokenizer` on instance crops."""

from __future__ import annotations

import json

import torch

from polymax import build_model, load_model
from polymax.cli import main
from polymax.cli.train_tokenizer import load_instance_crops
from polymax.tokenizer.masks import box_pixels, crop_mask, instance_crops, normalise_box, paste_mask, tight_box
from polymax.tokenizer.train import TokenizerTrainOptions, evaluate_mask_tokenizer, train_tokenizer


def test_a_full_crop_lands_exactly_on_its_box():
    box = (3, 5, 12, 30)                                       # rows 3..12, columns 5..30 of a 20 × 40 image
    pasted = paste_mask(torch.ones(64, 64), box, (20, 40))
    expected = torch.zeros(20, 40)
    expected[3:13, 5:31] = 1.0
    torch.testing.assert_close(pasted, expected, rtol=0, atol=0)
    assert box_pixels(normalise_box(box, (20, 40)), (20, 40)) == box


def test_an_instance_comes_back_from_its_crop():
    mask = torch.zeros(33, 41, dtype=torch.bool)
    mask[4:20, 7:19] = True
    mask[10:25, 15:30] = True                                  # an L-ish shape, box 21 × 23 ≤ (64 + 1) / 2
    mask[4, 7] = False
    box = tight_box(mask)
    assert box == (4, 7, 24, 29)
    crop = crop_mask(mask, box, 64)
    assert crop.shape == (64, 64) and set(crop.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(paste_mask(crop, box, (33, 41)) > 0.5, mask)
    assert tight_box(torch.zeros(3, 3, dtype=torch.bool)) is None


def test_box_pixels_clip_and_keep_one_pixel():
    assert box_pixels(torch.tensor([-0.2, 0.5, 1.3, 0.5]), (10, 20)) == (5, 0, 5, 19)


def test_instance_crops_skip_stuff_void_and_crowd():
    panoptic = torch.full((16, 16), 0, dtype=torch.int64)       # class 0 (stuff)
    panoptic[2:6, 2:6] = 3 * 1000 + 1                          # a thing instance
    panoptic[8:12, 8:14] = 3 * 1000 + 2                        # another, crowd
    panoptic[0, :] = 255 * 1000                                # void
    crowd = torch.zeros(16, 16, dtype=torch.bool)
    crowd[8:12, 8:14] = True
    crops = instance_crops(panoptic, thing_classes=(3,), ignore_label=255, label_divisor=1000, size=32, crowd=crowd)
    assert len(crops) == 1 and bool((crops[0] == 1).all())


def test_soft_decoding_equals_hard_decoding_for_one_hot_logits():
    torch.manual_seed(0)
    model = build_model("vqvae_tiny_synth_mask").eval()
    indices = torch.randint(model.config.num_codes, (3, 4, 4))
    logits = 50.0 * torch.nn.functional.one_hot(indices, model.config.num_codes).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        hard = model.decode(indices)
        assert hard.shape == (3, 1, 32, 32)
        torch.testing.assert_close(model.decode_soft(logits), hard, atol=1e-5, rtol=1e-5)


def test_a_short_run_reconstructs_held_out_instances_better_than_their_boxes():
    torch.manual_seed(0)
    model = build_model("vqvae_tiny_synth_mask")
    train = load_instance_crops("synth", root=None, split="train", count=32, size=65, seed=0, crop=32)
    held_out = load_instance_crops("synth", root=None, split="val", count=8, size=65, seed=0, crop=32)
    # The rooms' objects fill most of their boxes: a full crop already scores this IoU.
    full_box = float(torch.stack(held_out).flatten(1).mean(dim=1).mean())
    train_tokenizer(model, train, TokenizerTrainOptions(steps=120, batch_size=16, lr=3e-3, mask_ratio=0.0))
    scores = evaluate_mask_tokenizer(model, held_out)
    assert scores["iou"] > full_box + 0.05 and scores["codes_used"] >= 16, (full_box, scores)


def test_cli_trains_a_mask_tokenizer(tmp_path, capsys):
    out = tmp_path / "tok"
    argv = ["train-tokenizer", "--preset", "vqvae_tiny_synth_mask", "--steps", "3", "--batch-size", "4",
            "--train-samples", "4", "--eval-samples", "2", "--out", str(out), "--json"]
    assert main(argv) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"iou", "pixel_accuracy", "codes_used", "perplexity"} <= set(scores) and 0 <= scores["iou"] <= 1
    assert load_model(out).config.preset == "vqvae_tiny_synth_mask"
