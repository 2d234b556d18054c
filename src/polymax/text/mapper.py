"""The text mapper: ids (B, T, 77) → text queries Q_text (B, T + N_ctx, E) (OneFormer §3.3).

    x = token_embedding[ids] + positional_embedding                       (…, 77, W)
    per layer (pre-LN):  x = x + MHA(LN₁(x), causal)                      CLIP's residual attention block
                         x = x + W₂ QuickGELU(W₁ LN₂(x)),  W₁: W → 4W     QuickGELU(x) = x·σ(1.702 x)
    feature = LN_final(x)[EOT position = argmax(ids)]                     (…, W)
    Q_text = [MLP(feature) (B, T, E); the N_ctx learned context rows (N_ctx, E)]

``causal=True`` is the original repository's text encoder (an additive −inf mask above the diagonal);
``causal=False`` is the Hugging Face port, which builds the mask but never passes it. Only the former is
OneFormer's behaviour; the latter exists for parity with the port.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class QuickGELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class TextBlock(nn.Module):
    """A pre-LN transformer block on (N, L, W) token features."""

    def __init__(self, *, width: int, num_heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, num_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), QuickGELU(), nn.Linear(4 * width, width))

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TextEncoder(nn.Module):
    """CLIP-style text transformer: ids (…, L) int64 → the EOT feature (…, W)."""

    def __init__(self, *, vocab_size: int, width: int = 256, num_heads: int = 4, num_layers: int = 6,
                 context_length: int = 77, causal: bool = True) -> None:
        super().__init__()
        self.causal = causal
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.blocks = nn.ModuleList(TextBlock(width=width, num_heads=num_heads) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(width)
        # CLIP's initialisation (the encoder is trained from scratch in OneFormer).
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        for block in self.blocks:
            nn.init.normal_(block.attn.in_proj_weight, std=width ** -0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=width ** -0.5 * (2 * num_layers) ** -0.5)
            nn.init.normal_(block.mlp[0].weight, std=(2 * width) ** -0.5)
            nn.init.normal_(block.mlp[2].weight, std=width ** -0.5 * (2 * num_layers) ** -0.5)

    def forward(self, ids: Tensor) -> Tensor:
        shape, length = ids.shape[:-1], ids.shape[-1]
        ids = ids.reshape(-1, length)                                                     # (N, L)
        x = self.token_embedding(ids) + self.positional_embedding[:length]                # (N, L, W)
        mask = None
        if self.causal:   # position i attends to 0..i only
            mask = torch.full((length, length), float("-inf"), device=ids.device, dtype=x.dtype).triu(1)
        for block in self.blocks:
            x = block(x, mask)
        x = self.final_norm(x)
        pooled = x[torch.arange(x.shape[0], device=ids.device), ids.argmax(dim=-1)]       # (N, W) at EOT
        return pooled.reshape(*shape, -1)


class TextMapper(nn.Module):
    """Text ids (B, T, 77) → Q_text (B, T + N_ctx, E); with T = N − N_ctx it has the N rows of the queries."""

    def __init__(self, *, vocab_size: int, hidden: int = 256, width: int = 256, num_heads: int = 4,
                 num_layers: int = 6, context_length: int = 77, num_context: int = 16, causal: bool = True) -> None:
        super().__init__()
        self.encoder = TextEncoder(vocab_size=vocab_size, width=width, num_heads=num_heads, num_layers=num_layers,
                                   context_length=context_length, causal=causal)
        self.projector = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.context = nn.Parameter(torch.randn(num_context, hidden))                     # (N_ctx, E)

    def forward(self, ids: Tensor) -> Tensor:
        texts = self.projector(self.encoder(ids))                                         # (B, T, E)
        context = self.context[None].expand(texts.shape[0], -1, -1)
        return torch.cat((texts, context), dim=1)
