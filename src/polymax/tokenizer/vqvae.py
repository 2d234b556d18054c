"""The VQ-VAE tokenizer / detokenizer (AiT §3.1): encoder → EMA codebook → decoder, with AiT's layer layout, so a
state dict of the official model loads under the names ``encoder.*`` / ``decoder.*`` (the codebook buffers are
named ``codebook.embedding / ema_size / ema_weight`` here; AiT's ``_vq_vae._embedding / _ema_cluster_size /
_ema_w``).

Layout for ratio r = 2^L, first width c (depth: L = 5, c = 16):

    encoder  Conv(C→c, k4 s2 p1) ReLU, (L−1)× [Conv(c→2c, k4 s2 p1) ReLU], R× ResBlock(c·2^(L−1)), Conv1×1(→D)
    decoder  Conv1×1(D→W) ReLU, R× ResBlock(W), ConvT(W→W, k4 s2 p1) ReLU, (L−1)× [ConvT(w→w/2) ReLU], Conv1×1(→C)
             with W = c·r/2; ResBlock(x) = x + conv1×1(ReLU(conv3×3(ReLU(conv3×3(x)))))

A map of (B, C, H, W) with H, W multiples of r gives a (B, H/r, W/r) token grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polymax.errors import UserError
from polymax.tokenizer.codebook import EMACodebook, Quantized
from polymax.tokenizer.config import TokenizerConfig


class ResBlock(nn.Module):
    """x + (conv3×3 → ReLU → conv3×3 → ReLU → conv1×1)(x), width kept (AiT's ``ResBlock_v1``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x) + x


def build_encoder(config: TokenizerConfig) -> nn.Sequential:
    width = config.hidden_dim
    layers: list[nn.Module] = [nn.Conv2d(config.channels, width, 4, stride=2, padding=1), nn.ReLU()]
    for _ in range(config.downsample_ratio.bit_length() - 2):          # log2(r) − 1 more halvings
        layers += [nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.ReLU()]
        width *= 2
    layers += [ResBlock(width) for _ in range(config.num_resnet_blocks)]
    layers.append(nn.Conv2d(width, config.code_dim, 1))
    return nn.Sequential(*layers)


def build_decoder(config: TokenizerConfig) -> nn.Sequential:
    width = config.decoder_width
    layers: list[nn.Module] = [nn.Conv2d(config.code_dim, width, 1), nn.ReLU()]
    layers += [ResBlock(width) for _ in range(config.num_resnet_blocks)]
    layers += [nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), nn.ReLU()]
    for _ in range(config.downsample_ratio.bit_length() - 2):
        layers += [nn.ConvTranspose2d(width, width // 2, 4, stride=2, padding=1), nn.ReLU()]
        width //= 2
    layers.append(nn.Conv2d(width, config.channels, 1))
    return nn.Sequential(*layers)


@dataclass
class Reconstruction:
    """One training / evaluation pass. output: (B, C, H, W) the decoded map (value units); indices: (B, h, w);
    reconstruction: () MSE over valid target pixels (target > 0 for depth); commitment: () the codebook's
    commitment loss; total: their sum; perplexity: () of the batch's code usage."""

    output: Tensor
    indices: Tensor
    reconstruction: Tensor
    commitment: Tensor
    total: Tensor
    perplexity: Tensor


class VQVAE(nn.Module):
    """The tokenizer built from a :class:`TokenizerConfig` (kept as ``self.config`` for save_pretrained)."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = build_encoder(config)
        self.codebook = EMACodebook(num_codes=config.num_codes, code_dim=config.code_dim, decay=config.ema_decay,
                                    commitment=config.commitment, epsilon=config.epsilon)
        self.decoder = build_decoder(config)

    @property
    def ratio(self) -> int:
        return self.config.downsample_ratio

    def _normalise(self, values: Tensor) -> Tensor:
        return 2.0 * (values / self.config.max_value - 0.5) if self.config.use_norm else values

    def _denormalise(self, values: Tensor) -> Tensor:
        return (values * 0.5 + 0.5) * self.config.max_value if self.config.use_norm else values

    def _check(self, maps: Tensor) -> None:
        if maps.dim() != 4 or maps.shape[1] != self.config.channels:
            raise ValueError(f"expected (B, {self.config.channels}, H, W) maps, got {tuple(maps.shape)}")
        if maps.shape[-2] % self.ratio or maps.shape[-1] % self.ratio:
            raise UserError(f"map size {tuple(maps.shape[-2:])} is not a multiple of the tokenizer's "
                            f"downsample ratio {self.ratio}; crop or pad it")

    def embed(self, maps: Tensor) -> Tensor:
        """(B, C, H, W) maps → (B, D, H/r, W/r) encoder outputs before quantisation."""
        self._check(maps)
        return self.encoder(self._normalise(maps))

    def encode(self, maps: Tensor) -> Tensor:
        """(B, C, H, W) maps → (B, H/r, W/r) int64 token indices (nearest codes)."""
        return self.codebook.nearest(self.embed(maps))

    def decode(self, indices: Tensor) -> Tensor:
        """Hard decode: (B, h, w) token indices → (B, C, h·r, w·r) maps."""
        return self._denormalise(self.decoder(self.codebook.lookup(indices)))

    def decode_soft(self, logits: Tensor, tau: float | None = None) -> Tensor:
        """Soft decode: (B, N, h, w) code logits → (B, C, h·r, w·r) maps, decoding Σ_n softmax(logits·τ)_n · e_n.
        τ multiplies the logits (AiT's convention; default ``config.tau``). Differentiable in the logits."""
        tau = self.config.tau if tau is None else tau
        return self._denormalise(self.decoder(self.codebook.mix(torch.softmax(logits * tau, dim=1))))

    def forward(self, maps: Tensor, target: Tensor | None = None) -> Reconstruction:
        """One pass: encode ``maps`` (perhaps masked), quantise (EMA update in training mode), decode, and the
        losses against ``target`` (default ``maps``): MSE over the pixels where target > 0 (depth: 0 marks
        invalid) or over all pixels (masks)."""
        target = maps if target is None else target
        quantized: Quantized = self.codebook(self.embed(maps))
        output = self._denormalise(self.decoder(quantized.quantized))
        if self.config.zero_is_invalid:
            valid = target > 0
            reconstruction = (output[valid] - target[valid]).pow(2).mean() if bool(valid.any()) else output.sum() * 0
        else:
            reconstruction = F.mse_loss(self._normalise(output), self._normalise(target))
        return Reconstruction(output=output, indices=quantized.indices, reconstruction=reconstruction,
                              commitment=quantized.commitment, total=reconstruction + quantized.commitment,
                              perplexity=quantized.perplexity)


def build_tokenizer(config: TokenizerConfig) -> VQVAE:
    return VQVAE(config)


def crop_to_ratio(maps: Tensor, ratio: int) -> Tensor:
    """(…, H, W) → (…, H − H mod r, W − W mod r): the top-left part a tokenizer of ratio r encodes."""
    height, width = maps.shape[-2:]
    return maps[..., : height - height % ratio, : width - width % ratio]
