"""OneFormer's query–text contrastive loss (OneFormer §3.3; training only).

Per image, the N task-guided queries Q (B, N, E) and the N text queries Q_text (B, N, E) are flattened and
L2-normalised; logits = Q · Q_textᵀ × min(exp(s), 100) with s learnable (initialised log(1/0.07)); symmetric
cross-entropy with the image's index as its label, weight 0.5 (on the final output only).

Under DDP each side is compared with the other side gathered from every rank (gradients flow back through the
gather), so the negatives are the whole global batch; ranks must hold equal batches. With a global batch of one
image the 1×1 logit matrix makes the loss exactly 0: a warning says so.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from polymax.losses.terms import LossTerms


class _GatherFromRanks(torch.autograd.Function):
    """(b, D) on every rank → (world·b, D) in rank order; backward sums every rank's gradient of the gathered
    tensor and returns this rank's rows (each rank's loss reads every rank's rows)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        rows = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * rows:(dist.get_rank() + 1) * rows]


def gather_from_ranks(x: Tensor) -> tuple[Tensor, int]:
    """(b, D) → (world·b, D) from every rank (differentiable), and this rank's first row; as is without DDP."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    return _GatherFromRanks.apply(x), dist.get_rank() * x.shape[0]


class QueryTextContrastiveLoss(nn.Module):
    """``loss(queries, texts)``: queries, texts (B, N, E) → the unweighted symmetric loss (0-dim);
    ``terms(queries, texts)`` → :class:`LossTerms` ``{"contrastive_loss": weight · loss}``."""

    def __init__(self, *, temperature: float = 0.07, max_scale: float = 100.0, weight: float = 0.5) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))
        self.max_scale = max_scale
        self.weight = weight

    def forward(self, queries: Tensor, texts: Tensor) -> Tensor:
        image = F.normalize(queries.float().flatten(1), dim=-1)                 # (b, N·E)
        text = F.normalize(texts.float().flatten(1), dim=-1)
        all_text, first = gather_from_ranks(text)                               # (world·b, N·E)
        all_image, _ = gather_from_ranks(image)
        if all_image.shape[0] == 1:
            warnings.warn("the query-text contrastive loss is exactly 0 with a global batch of one image "
                          "(one pair, a 1x1 logit matrix); train with more images per step", stacklevel=2)
        scale = self.logit_scale.exp().clamp(max=self.max_scale)
        labels = torch.arange(image.shape[0], device=image.device) + first
        per_image = image @ all_text.T * scale                                  # (b, world·b)
        per_text = text @ all_image.T * scale
        return F.cross_entropy(per_image, labels) + F.cross_entropy(per_text, labels)

    def terms(self, queries: Tensor, texts: Tensor) -> LossTerms:
        return LossTerms({"contrastive_loss": self.weight * self(queries, texts)})
