"""Tokenizer presets: one flat table ``TOKENIZER_PRESETS`` of name → plain function returning a TokenizerConfig.

| preset | ratio | widths | codes | parameters | source |
|---|---|---|---|---|---|
| ``vqvae_nyu_depth`` | 32 (480² → 15×15 tokens) | 16 → 256, 2 res-blocks | 128 × 512 | 7.69 M | AiT's depth config |
| ``vqvae_coco_mask`` | 16 (64² → 4×4 tokens) | 16 → 128, 2 res-blocks | 128 × 512 | 1.99 M | AiT's instance config |
| ``vqvae_tiny_synth_depth`` | 8 (64² → 8×8 tokens) | 8 → 32, 1 res-block | 64 × 32 | 0.08 M | the synthetic rooms |
| ``vqvae_tiny_synth_mask`` | 8 (32² crops → 4×4 tokens) | 8 → 32, 1 res-block | 64 × 32 | 0.08 M | the rooms' objects |

The tiny ones keep the layout and shrink every width: the synthetic rooms are 65 × 65 pixels, where a ratio of
32 would leave 2 × 2 tokens per image; their objects are 4 to 40 pixels a side, so the tiny mask tokenizer cuts
32 × 32 crops (AiT's 16 tokens per instance, at ratio 8).
"""

from __future__ import annotations

from collections.abc import Callable

from polymax.tokenizer.config import TokenizerConfig


def vqvae_nyu_depth() -> TokenizerConfig:
    """AiT's depth tokenizer: metres in, no normalisation (max_value 10 is NYU's range, unused without norm)."""
    return TokenizerConfig(preset="vqvae_nyu_depth", kind="depth", downsample_ratio=32, hidden_dim=16,
                           num_resnet_blocks=2, num_codes=128, code_dim=512, use_norm=False, max_value=10.0,
                           tau=0.8, image_size=480)


def vqvae_coco_mask() -> TokenizerConfig:
    """AiT's instance-mask tokenizer: 64 × 64 box crops in 0..1, normalised to [-1, 1], 16 tokens."""
    return TokenizerConfig(preset="vqvae_coco_mask", kind="mask", downsample_ratio=16, hidden_dim=16,
                           num_resnet_blocks=2, num_codes=128, code_dim=512, use_norm=True, max_value=1.0,
                           tau=0.8, image_size=64)


def vqvae_tiny_synth_depth() -> TokenizerConfig:
    """A CPU-sized depth tokenizer for the synthetic rooms (64 × 64 crops of the 65 × 65 renders)."""
    return TokenizerConfig(preset="vqvae_tiny_synth_depth", kind="depth", downsample_ratio=8, hidden_dim=8,
                           num_resnet_blocks=1, num_codes=64, code_dim=32, use_norm=False, max_value=10.0,
                           tau=0.8, image_size=64)


def vqvae_tiny_synth_mask() -> TokenizerConfig:
    """A CPU-sized instance-mask tokenizer for the synthetic rooms: 32 × 32 crops in 0..1 → 4 × 4 tokens."""
    return TokenizerConfig(preset="vqvae_tiny_synth_mask", kind="mask", downsample_ratio=8, hidden_dim=8,
                           num_resnet_blocks=1, num_codes=64, code_dim=32, use_norm=True, max_value=1.0,
                           tau=0.8, image_size=32)


TOKENIZER_PRESETS: dict[str, Callable[[], TokenizerConfig]] = {
    "vqvae_nyu_depth": vqvae_nyu_depth,
    "vqvae_coco_mask": vqvae_coco_mask,
    "vqvae_tiny_synth_depth": vqvae_tiny_synth_depth,
    "vqvae_tiny_synth_mask": vqvae_tiny_synth_mask,
}
