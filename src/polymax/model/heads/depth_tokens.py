"""AiT's soft-token depth head on the kMaX trunk (the parallel variant, AiT-P): a distribution over the frozen
tokenizer's N codes for every cell of the token grid, all cells at once, then the tokenizer's decoder.

For each prediction (the kMaX layers' auxiliary ones and the final one, each with its own weights), with the
layer's pixel features at stride s and the tokenizer's ratio r (one token per r × r pixels):

    P = softmax_K(mask_logits)                            (B, K, h, w)       h = H/s + 1 (H = 32k, input 32k + 1)
    grid(x) = x cropped to H/s, then average-pooled (s < r) or nearest-upsampled (s > r) to H/r
    cells   = [grid(pixel_features) ; Σ_k grid(P)_k · cluster_features_k]     (B, D + E, H/r, W/r)
    logits  = conv1×1 → GELU → conv3×3 → GELU → conv1×1                      (B, N, H/r, W/r)
    depth   = tokenizer.decode_soft(logits), replicate-padded to H + 1        (B, 1, H + 1, W + 1) metres

The cluster term lets each cell read what the kMaX clusters covering it stand for. Only the final prediction is
decoded (its depth trains the auxiliary SILog and is the answer); the auxiliary ones train through their token
cross-entropy. Inference decodes soft (AiT) or hard (argmax codes), clamped to [min_depth, max_depth].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polymax.structures import DepthOutput, MaskPrediction


@dataclass
class DepthTokensOutput(DepthOutput):
    """DepthOutput plus token_logits: (B, N, g_h, g_w) logits over the tokenizer's N codes per grid cell.
    depth: (B, 1, H + 1, W + 1) metres at the network input resolution (None for the auxiliary predictions)."""

    token_logits: Tensor | None = None


def to_grid(x: Tensor, *, stride: int, ratio: int) -> Tensor:
    """(B, C, H/s + 1, W/s + 1) features at stride s on the 32k+1 lattice → (B, C, H/r, W/r), one vector per token
    cell of r × r pixels (s and r are powers of two; constant kernels keep the ONNX graph static)."""
    x = x[..., :-1, :-1]
    if ratio > stride:
        return F.avg_pool2d(x, ratio // stride)
    if stride > ratio:
        return F.interpolate(x, scale_factor=float(stride // ratio), mode="nearest")
    return x


class TokenCells(nn.Module):
    """(B, Cin, g_h, g_w) → (B, N, g_h, g_w) code logits."""

    def __init__(self, *, in_channels: int, hidden: int, num_codes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_channels, hidden, 1), nn.GELU(),
                                 nn.Conv2d(hidden, hidden, 3, padding=1), nn.GELU(),
                                 nn.Conv2d(hidden, num_codes, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TokenDepthHead(nn.Module):
    """Task head: fills ``token_logits`` (every prediction) and ``depth`` (the final one).

    Args:
        pixel_channels: D of ``MaskPrediction.pixel_features``. cluster_channels: E of ``cluster_features``.
        strides: the pixel stride of each prediction's maps, in prediction order (the final one last).
        tokenizer: the frozen VQ-VAE (``polymax.tokenizer.vqvae.VQVAE``, weights as buffers): ``ratio``,
            ``config.num_codes``, ``decode(indices)`` and ``decode_soft(logits)``.
        hidden: width of the cell MLP. decode: 'soft' or 'hard' at inference. min_depth, max_depth: the clamp.
    """

    def __init__(self, *, pixel_channels: int, cluster_channels: int, strides: tuple[int, ...], tokenizer: nn.Module,
                 hidden: int = 256, decode: str = "soft", min_depth: float, max_depth: float) -> None:
        super().__init__()
        if decode not in ("soft", "hard"):
            raise ValueError(f"token_decode must be 'soft' or 'hard', got {decode!r}")
        self.strides = tuple(strides)
        self.decode, self.min_depth, self.max_depth = decode, float(min_depth), float(max_depth)
        self.tokenizer = tokenizer
        self.cells = nn.ModuleList(TokenCells(in_channels=pixel_channels + cluster_channels, hidden=hidden,
                                              num_codes=tokenizer.config.num_codes) for _ in strides)

    def train(self, mode: bool = True) -> TokenDepthHead:
        super().train(mode)
        self.tokenizer.eval()                       # frozen: its EMA codebook never updates
        return self

    def token_logits(self, layer: MaskPrediction, index: int) -> Tensor:
        scale = {"stride": self.strides[index], "ratio": self.tokenizer.ratio}
        probabilities = to_grid(layer.mask_logits.float().softmax(dim=1), **scale)         # (B, K, g_h, g_w)
        clusters = torch.einsum("bkhw,bke->behw", probabilities, layer.cluster_features.float())
        cells = torch.cat([to_grid(layer.pixel_features.float(), **scale), clusters], dim=1)
        return self.cells[index](cells)

    def decode_depth(self, logits: Tensor) -> Tensor:
        """(B, N, g_h, g_w) → (B, 1, g_h·r + 1, g_w·r + 1) metres (the +1 row / column repeats the last one)."""
        if self.training or self.decode == "soft":
            depth = self.tokenizer.decode_soft(logits)
        else:
            depth = self.tokenizer.decode(logits.argmax(dim=1))
        depth = F.pad(depth, (0, 1, 0, 1), mode="replicate")
        # Training keeps the raw decode (its SILog clips at 1e-3 m, AiT's form) so the gradient never stops.
        return depth if self.training else depth.clamp(self.min_depth, self.max_depth)

    def forward(self, layer: MaskPrediction, index: int) -> DepthTokensOutput:
        logits = self.token_logits(layer, index)
        final = index == len(self.strides) - 1
        return DepthTokensOutput(mask_logits=layer.mask_logits, pixel_features=layer.pixel_features,
                                 depth=self.decode_depth(logits) if final else None, token_logits=logits)
