"""One kMaX layer: k-means cross-attention + self-attention + FFN on the cluster centres (spec §1.3).

deeplab2 ``DualPathTransformerLayer`` with only memory self-attention and k-means cross-attention on.
Pixel features are read, never updated. With M (B, K, E) the layer's input centres and P (B, Cp, h, w)
the pixel-decoder map at this layer's stride:

    m = GELU(BN(W₁ M))                      p = GELU(BN(conv₁(GELU(P))))     v = BN(conv_v(p))
    A = one-hot argmax_K(aux_head(p, m))    the layer's own auxiliary prediction decides the assignment
    M₁ = M  + drop(BN(W₃ BN(Aᵀ v)))        k-means update: a plain sum over the assigned pixels
    M₂ = M₁ + drop(BN(W₄ attention(m)))     self-attention from the same m (parallel, not sequential)
    out = GELU(GELU(M₂) + drop(BN(W₆ GELU(BN(W₅ GELU(M₂))))))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polymax.model.cluster_decoder.mask_head import MaskHead
from polymax.model.layers.conv import ConvBN, LinearBN
from polymax.model.layers.drop_path import DropPath
from polymax.model.layers.norms import batch_norm1d, batch_norm2d
from polymax.structures import MaskPrediction, PixelRead


def _zero_last_norm(block: LinearBN) -> None:
    # deeplab2 starts every residual branch as the identity: the branch's last BN has γ = 0.
    nn.init.zeros_(block.bn.weight)


class ClusterSelfAttention(nn.Module):
    """Multi-head self-attention among the K clusters, with BN where other transformers scale.

    No 1/√d: a BN per head on the similarities plays that role; the retrieved values get a BN per
    (head, channel) and GELU. Input q, k (B, K, H·dk), v (B, K, H·dv) → (B, K, H·dv), heads concatenated.
    """

    def __init__(self, *, num_heads: int, value_channels: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.similarity_norm = batch_norm2d(num_heads)
        self.value_norm = batch_norm1d(value_channels)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        b, n, _ = q.shape
        h = self.num_heads
        q, k, v = (t.reshape(b, n, h, -1) for t in (q, k, v))              # (B, K, H, d): channel = head·d + i
        similarity = torch.einsum("bqhd,bkhd->bhqk", q, k)                 # (B, H, K, K)
        weights = self.similarity_norm(similarity).softmax(dim=-1)
        retrieved = torch.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, n, -1)   # (B, K, H·dv)
        return F.gelu(self.value_norm(retrieved.transpose(1, 2)).transpose(1, 2))


class KMaXLayer(nn.Module):
    """Updates cluster centres (B, K, E) from one pixel map (B, Cp, h, w); returns them and the aux head output."""

    def __init__(self, *, pixel_channels: int, hidden: int = 256, num_heads: int = 8, key_channels: int = 128,
                 ffn: int = 2048, drop_path_keep: float = 1.0, mask_dim: int = 128,
                 pixel_head_channels: int = 256) -> None:
        super().__init__()
        gelu = nn.GELU
        self.key_channels = key_channels
        self.memory_in = LinearBN(hidden, hidden, activation=gelu())
        self.pixel_in = ConvBN(pixel_channels, hidden, activation=gelu())
        self.pixel_value = ConvBN(hidden, hidden)
        self.memory_qkv = LinearBN(hidden, 2 * key_channels + hidden)
        for layer in (self.pixel_value.conv, self.memory_qkv.linear):
            nn.init.trunc_normal_(layer.weight, std=hidden ** -0.5)
        # This layer's own prediction head; its argmax is the hard k-means assignment.
        self.aux_head = MaskHead(pixel_channels=hidden, cluster_channels=hidden, head_channels=pixel_head_channels,
                                 mask_dim=mask_dim)
        self.kmeans_norm = batch_norm1d(hidden)
        self.kmeans_out = LinearBN(hidden, hidden)
        self.attention = ClusterSelfAttention(num_heads=num_heads, value_channels=hidden)
        self.attention_out = LinearBN(hidden, hidden)
        self.ffn_in = LinearBN(hidden, ffn, activation=gelu())
        self.ffn_out = LinearBN(ffn, hidden)
        for block in (self.kmeans_out, self.attention_out, self.ffn_out):
            _zero_last_norm(block)
        self.drop_kmeans = DropPath(drop_path_keep)
        self.drop_attention = DropPath(drop_path_keep)
        self.drop_ffn = DropPath(drop_path_keep)

    def pixel_modules(self) -> tuple[nn.Module, ...]:
        """The modules that read the pixel map only (never the centres): their output is the same for every query
        group, so one :meth:`read` serves all groups' passes and their BatchNorms keep one set of statistics."""
        return self.pixel_in, self.pixel_value, self.aux_head.pixel_head

    def read(self, pixels: Tensor) -> PixelRead:
        """(B, Cp, h, w) → this layer's view of the pixel map (independent of the centres)."""
        projected = self.pixel_in(F.gelu(pixels))                           # (B, E, h, w)
        return PixelRead(projected=projected, values=self.pixel_value(projected).flatten(2),   # (B, E, hw)
                         embeddings=self.aux_head.embed(projected))        # (B, D, h, w)

    def forward(self, centres: Tensor, pixels: Tensor | None = None, read: PixelRead | None = None
                ) -> tuple[Tensor, MaskPrediction]:
        """centres (B, K, E) and either the pixel map (B, Cp, h, w) or its :meth:`read`, shared by several passes."""
        if read is None:
            if pixels is None:
                raise ValueError("a kMaX layer needs the pixel map or its read")
            read = self.read(pixels)
        m = self.memory_in(centres)                                        # (B, K, E)
        p, v = read.projected, read.values
        q, k, value = self.memory_qkv(m).split([self.key_channels, self.key_channels, m.shape[-1]], dim=-1)

        aux = self.aux_head(p, m, pixel_features=read.embeddings)          # MaskPrediction at this stride
        with torch.no_grad():
            assignment = F.one_hot(aux.mask_logits.flatten(2).argmax(dim=1), aux.mask_logits.shape[1])
            assignment = assignment.to(v.dtype)                            # (B, hw, K), one cluster per pixel
        update = torch.einsum("blk,bdl->bkd", assignment, v)              # Σ over assigned pixels, no mean
        update = self.kmeans_norm(update.transpose(1, 2)).transpose(1, 2)
        centres = centres + self.drop_kmeans(self.kmeans_out(update))

        centres = centres + self.drop_attention(self.attention_out(self.attention(q, k, value)))
        centres = F.gelu(centres)
        centres = F.gelu(centres + self.drop_ffn(self.ffn_out(self.ffn_in(centres))))
        return centres, aux
