"""The depth_tokens criterion (AiT §3.3): token cross-entropy against the frozen tokenizer's codes of the ground
truth, plus SILog of the soft-decoded depth (the auxiliary loss that trains through the detokenizer).

    tokens  = tokenizer.encode(depth cropped to the token grid)                    (B, g_h, g_w)
    total   = w_ce · CE(final logits, tokens) + w_aux · Σ_layers CE(layer logits, tokens)
              + w_silog · SILog_λ(final soft-decoded depth, depth)

CE is the mean over tokens: AiT's (Σ CE + w · SILog · #tokens) / #tokens. SILog_λ = sqrt(mean d² − λ·mean(d)²),
d = ln g − ln p over the batch's valid pixels (g > 0), p clipped at 1e-3 m (AiT's form, λ = 0.5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polymax.losses.terms import LossTerms
from polymax.structures import Targets, TaskRun
from polymax.tokenizer.vqvae import VQVAE


def ait_silog(pred: Tensor, target: Tensor, *, lambd: float = 0.5) -> Tensor:
    """() SILog over the valid (target > 0) pixels of (B, 1, H, W) maps; 0 when none is valid."""
    valid = target > 0
    if not bool(valid.any()):
        return pred.sum() * 0
    d = torch.log(target[valid]) - torch.log(pred[valid].clamp_min(1e-3))
    value = d.square().mean() - lambd * d.mean().square()
    # sqrt with a finite gradient at a perfect prediction
    return torch.sqrt(value.clamp_min(1e-12)) if bool(value > 1e-12) else value.clamp_min(0.0)


class DepthTokensCriterion(nn.Module):
    """``criterion(run, targets) -> LossTerms`` (terms ``token_ce``, ``aux_<i>token_ce``, ``soft_silog``)."""

    def __init__(self, *, tokenizer: VQVAE, token_ce: float = 1.0, aux_token_ce: float = 1.0,
                 soft_silog: float = 1.0, silog_lambda: float = 0.5) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.token_ce, self.aux_token_ce = token_ce, aux_token_ce
        self.soft_silog, self.silog_lambda = soft_silog, silog_lambda

    def train(self, mode: bool = True) -> DepthTokensCriterion:
        super().train(mode)
        self.tokenizer.eval()                       # frozen: its EMA codebook never updates
        return self

    @torch.no_grad()
    def target_tokens(self, depth: Tensor, grid: tuple[int, int]) -> Tensor:
        """(B, H, W) metres → (B, g_h, g_w) codes of the top-left g·r × g·r part."""
        ratio = self.tokenizer.ratio
        self.tokenizer.to(depth.device)
        crop = depth[:, None, : grid[0] * ratio, : grid[1] * ratio].float()
        return self.tokenizer.encode(crop)

    def forward(self, run: TaskRun, targets: Targets) -> LossTerms:
        depth = targets.depth
        final = run.final
        tokens = self.target_tokens(depth, tuple(final.token_logits.shape[-2:]))
        terms = {}
        if self.token_ce:
            terms["token_ce"] = self.token_ce * F.cross_entropy(final.token_logits.float(), tokens)
        if self.aux_token_ce:
            for index, aux in enumerate(run.aux):
                if aux.token_logits is not None:
                    terms[f"aux_{index}token_ce"] = self.aux_token_ce * F.cross_entropy(aux.token_logits.float(),
                                                                                        tokens)
        if self.soft_silog and final.depth is not None:
            height = min(final.depth.shape[-2], depth.shape[-2])
            width = min(final.depth.shape[-1], depth.shape[-1])
            terms["soft_silog"] = self.soft_silog * ait_silog(final.depth[:, :, :height, :width].float(),
                                                              depth[:, None, :height, :width].float(),
                                                              lambd=self.silog_lambda)
        return LossTerms(terms)
