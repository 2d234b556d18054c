"""OneFormer's task token and task-guided query initialisation (OneFormer §3.2; spec ``oneformer_ait_spec.md`` §1).

    prompt ids (B, 77) ──float──→ Linear(77→E) → ReLU → Linear(E→E) → LayerNorm = task token t (B, E)
    t repeated N − 1 times (content) + query position table (N − 1, E)
      → 2 post-norm transformer decoder layers over the stride-4 pixel features → LayerNorm → Q′ (B, N − 1, E)
    Q = [Q′; t]  (B, N, E): the initial cluster centres of the kMaX decoder (and the contrastive loss's queries).

The prompt "the task is {task}" is fixed per task, so its 77 CLIP ids are constants here (no tokenizer, no
download). The MLP reads the *raw ids cast to float* (≈ 5·10⁴; its output is in the thousands): that is what the
released code does (the paper's "one linear + LayerNorm" is not), and only the LayerNorm makes it usable.

Memory of the cross-attention — a quirk of the reference (OneFormer issue #110, kept by the Hugging Face port):
the attention *values* are the sine positional encoding of the pixel grid and the image content enters only
through the *keys'* position term, a 1×1 projection of the features. ``memory_values="sine"`` (the default)
reproduces it; ``memory_values="features"`` is the natural DETR form (values = projected features, keys =
projected features + sine encoding), which does not match OneFormer's numbers or checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

PROMPT_LENGTH = 77      # CLIP's context length: [SOT] … [EOT], zero-padded
# CLIP BPE ids of "the task is {task}" ([SOT]=49406 … [EOT]=49407), before zero padding.
TASK_PROMPT_IDS: dict[str, tuple[int, ...]] = {
    "panoptic": (49406, 518, 10549, 533, 1072, 24755, 49407),
    "semantic": (49406, 518, 10549, 533, 29119, 1550, 49407),
    "instance": (49406, 518, 10549, 533, 34572, 49407),
    # Beyond OneFormer (one model for every dense task, docs/multitask.md): the same prompt for the continuous tasks.
    "depth": (49406, 518, 10549, 533, 10350, 49407),
    "normals": (49406, 518, 10549, 533, 10990, 938, 49407),
}
MEMORY_VALUES = ("sine", "features")


def prompt_ids(task: str) -> Tensor:
    """(77,) int64: the zero-padded prompt ids of ``task`` (a ValueError for a task without a prompt)."""
    if task not in TASK_PROMPT_IDS:
        raise ValueError(f"task {task!r} has no OneFormer prompt; tasks with one: {sorted(TASK_PROMPT_IDS)}")
    ids = torch.zeros(PROMPT_LENGTH, dtype=torch.int64)
    ids[:len(TASK_PROMPT_IDS[task])] = torch.tensor(TASK_PROMPT_IDS[task])
    return ids


@dataclass
class TaskQueries:
    """What the task-guided initialisation gives the cluster decoder.

    queries: (B, N, E) the initial centres [Q′ (N − 1 task-guided queries); t (the task token)].
    task_token: (B, E) t, the layer-normalised task token (also the last row of ``queries``).
    """

    queries: Tensor
    task_token: Tensor


class TaskTokenEncoder(nn.Module):
    """Prompt ids (B, 77) → task token (B, E): 2-layer MLP on the ids as floats, then LayerNorm."""

    def __init__(self, *, hidden: int = 256, prompt_length: int = PROMPT_LENGTH, eps: float = 1e-5) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(prompt_length, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, ids: Tensor) -> Tensor:
        return self.norm(self.mlp(ids.to(self.norm.weight.dtype)))


def sine_position_encoding(height: int, width: int, channels: int, *, temperature: float = 10000.0,
                           device: torch.device | None = None) -> Tensor:
    """(1, channels, h, w) DETR's normalised sine encoding: channels / 2 per axis, y first then x.

    Positions 1..n are scaled to (0, 2π]; within an axis the channels interleave sin(p / d₀), cos(p / d₁), …
    with d_i = temperature^(2·⌊i/2⌋ / (channels / 2)).
    """
    features = channels // 2
    y = torch.arange(1, height + 1, dtype=torch.float32, device=device) / (height + 1e-6) * (2 * math.pi)
    x = torch.arange(1, width + 1, dtype=torch.float32, device=device) / (width + 1e-6) * (2 * math.pi)
    steps = torch.arange(features, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * torch.div(steps, 2, rounding_mode="floor") / features)

    def encode(positions: Tensor) -> Tensor:                          # (n,) → (n, features)
        angles = positions[:, None] / dim_t
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    pos_y = encode(y)[:, None, :].expand(height, width, features)
    pos_x = encode(x)[None, :, :].expand(height, width, features)
    return torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1).unsqueeze(0)


class QueryDecoderLayer(nn.Module):
    """One post-norm DETR decoder layer on queries (B, Q, E) over a memory (B, L, E).

    x = LN₁(x + SelfAttn(q = k = x + pos, v = x)); x = LN₂(x + CrossAttn(q = x + pos, k = keys, v = values));
    x = LN₃(x + W₂ ReLU(W₁ x)).
    """

    def __init__(self, *, hidden: int, num_heads: int, ffn: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(hidden, num_heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(hidden, num_heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(hidden, ffn)
        self.linear2 = nn.Linear(ffn, hidden)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(hidden) for _ in range(3))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, position: Tensor, keys: Tensor, values: Tensor) -> Tensor:
        q = x + position
        x = self.norm1(x + self.dropout(self.self_attn(q, q, x, need_weights=False)[0]))
        x = self.norm2(x + self.dropout(self.cross_attn(x + position, keys, values, need_weights=False)[0]))
        return self.norm3(x + self.dropout(self.linear2(self.dropout(torch.relu(self.linear1(x))))))


class TaskGuidedQueries(nn.Module):
    """Prompt ids (B, 77) and stride-4 pixel features (B, C, h, w) → :class:`TaskQueries` with N queries.

    ``num_queries`` = N (the last query is the task token, so the position table has N − 1 rows);
    ``feature_channels`` = C; ``memory_values``: 'sine' (the reference's quirk) or 'features' (see the module doc).
    """

    def __init__(self, *, num_queries: int, feature_channels: int, hidden: int = 256, num_heads: int = 8,
                 ffn: int = 2048, num_layers: int = 2, dropout: float = 0.0, memory_values: str = "sine") -> None:
        super().__init__()
        if num_queries < 2:
            raise ValueError(f"task-guided queries need N >= 2 (N - 1 queries and the task token), got {num_queries}")
        if memory_values not in MEMORY_VALUES:
            raise ValueError(f"memory_values must be one of {MEMORY_VALUES}, got {memory_values!r}")
        self.memory_values = memory_values
        self.task_encoder = TaskTokenEncoder(hidden=hidden)
        self.query_position = nn.Parameter(torch.randn(num_queries - 1, hidden))
        self.feature_projection = nn.Conv2d(feature_channels, hidden, 1)
        self.layers = nn.ModuleList(QueryDecoderLayer(hidden=hidden, num_heads=num_heads, ffn=ffn, dropout=dropout)
                                    for _ in range(num_layers))
        self.norm = nn.LayerNorm(hidden)

    def memory(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """(keys, values), each (B, h·w, E), row-major over (h, w)."""
        batch, _, height, width = pixels.shape
        projected = self.feature_projection(pixels).flatten(2).transpose(1, 2)            # (B, hw, E)
        sine = sine_position_encoding(height, width, projected.shape[-1], device=pixels.device)
        sine = sine.to(projected.dtype).flatten(2).transpose(1, 2).expand(batch, -1, -1)  # (B, hw, E)
        if self.memory_values == "sine":
            return sine + projected, sine         # the reference: values carry positions only
        return projected + sine, projected

    def forward(self, pixels: Tensor, task_ids: Tensor) -> TaskQueries:
        token = self.task_encoder(task_ids)                                               # (B, E)
        keys, values = self.memory(pixels)
        count = self.query_position.shape[0]
        x = token[:, None, :].expand(-1, count, -1)                                       # (B, N − 1, E)
        position = self.query_position[None].expand(x.shape[0], -1, -1)
        for layer in self.layers:
            x = layer(x, position, keys, values)
        queries = torch.cat((self.norm(x), token[:, None, :]), dim=1)                     # (B, N, E)
        return TaskQueries(queries=queries, task_token=token)
