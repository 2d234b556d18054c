"""Global axial attention with relative positional encodings (Axial-DeepLab, as deeplab2 computes it).

One axis at a time, every position attends to every position of its row (or column). Per head:

    logits[l, m] = BN_c(q_l·k_m) + BN_q(q_l·r_q[m-l]) + BN_k(k_m·r_k[m-l])     (one BN per term and head)
    w[l, :]      = softmax_m(logits[l, :])                                      (no 1/sqrt(d) scaling)
    out[l]       = BN_v(Σ_m w[l,m] v_m) + BN_r(Σ_m w[l,m] r_v[m-l])             (one BN per term, head, channel)

and the heads are concatenated (channel = head * d_v + c). There is no output projection: the enclosing
block's 1×1 conv plays that role. The BatchNorms replace the usual 1/sqrt(d) temperature.

Relative positional tables hold 2·255 − 1 = 509 rows shared by all heads; query l and key m use row
(m − l) + 254. Distances beyond ±254 (axes longer than 255) share the outermost rows, as in deeplab2.

Inference fast path (eval mode; the same result to float rounding): the three BNs on the logits and the
two on the outputs are fixed per-channel affines there, so their scales go onto q, k, v (or the retrieved
table term) and their shifts are summed. That removes the (N, 3, h, L, L) and (N, 2, h, d_v, L) stacks and
their BN passes, about half of the attention's own time on a CPU (the qkv projection excluded).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polymax.model.layers.norms import batch_norm1d

MAX_SPAN = 255
RPE_ROWS = 2 * MAX_SPAN - 1     # 509
RPE_CENTRE = MAX_SPAN - 1       # 254: the row of relative distance 0


def relative_index(length: int, device: torch.device | None = None) -> Tensor:
    """(L, L) int64 table rows: index[l, m] = clamp((m − l) + 254, 0, 508)."""
    position = torch.arange(length, device=device)
    return (position[None, :] - position[:, None] + RPE_CENTRE).clamp_(0, RPE_ROWS - 1)


class AxialAttention(nn.Module):
    """Multi-head global self-attention along the last axis of a (N, C_in, L) sequence batch.

    qkv: 1×1 projection (no bias) to 2·key_depth + value_depth channels, then BN over channels.
    Output: (N, value_depth, L), heads concatenated, not activated.
    """

    def __init__(self, in_channels: int, *, key_depth: int, value_depth: int, num_heads: int = 8) -> None:
        super().__init__()
        if key_depth % num_heads or value_depth % num_heads:
            raise ValueError(f"key depth {key_depth} and value depth {value_depth} must be divisible by "
                             f"num_heads {num_heads}")
        self.num_heads = num_heads
        self.key_depth = key_depth
        self.value_depth = value_depth
        self.qkv = nn.Conv1d(in_channels, 2 * key_depth + value_depth, 1, bias=False)
        self.bn_qkv = batch_norm1d(2 * key_depth + value_depth)
        # One affine per (term, head): content, query-RPE, key-RPE (deeplab2 stores it as [3,1,h,1,1]).
        self.bn_similarity = batch_norm1d(3 * num_heads)
        # One affine per (term, head, channel): retrieved content, retrieved value-RPE ([2,1,h,1,d_v]).
        self.bn_retrieved = batch_norm1d(2 * value_depth)
        self.query_rpe = nn.Parameter(torch.empty(RPE_ROWS, key_depth // num_heads))
        self.key_rpe = nn.Parameter(torch.empty(RPE_ROWS, key_depth // num_heads))
        self.value_rpe = nn.Parameter(torch.empty(RPE_ROWS, value_depth // num_heads))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # deeplab2: truncated normal, std 1.0 for the tables and C_in^-0.5 for the qkv kernel.
        for table in (self.query_rpe, self.key_rpe, self.value_rpe):
            nn.init.trunc_normal_(table, std=1.0, a=-2.0, b=2.0)
        std = self.qkv.in_channels ** -0.5
        nn.init.trunc_normal_(self.qkv.weight, std=std, a=-2 * std, b=2 * std)

    def forward(self, x: Tensor) -> Tensor:
        n, _, length = x.shape
        h, dk, dv = self.num_heads, self.key_depth // self.num_heads, self.value_depth // self.num_heads
        qkv = self.bn_qkv(self.qkv(x))                                     # (N, 2·Dk + Dv, L)
        q, k, v = qkv.split((self.key_depth, self.key_depth, self.value_depth), dim=1)
        q = q.reshape(n, h, dk, length)
        k = k.reshape(n, h, dk, length)
        v = v.reshape(n, h, dv, length)
        if not self.training:
            return self._attend_folded(q, k, v)
        return self._attend(q, k, v)

    def _relative_tables(self, length: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """The query / key / value tables gathered for this length: (L, L, d); row l, column m is distance m − l."""
        index = relative_index(length, device).flatten()
        return tuple(table.index_select(0, index).view(length, length, table.shape[-1])
                     for table in (self.query_rpe, self.key_rpe, self.value_rpe))

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Training computation: BN statistics per term and head, as deeplab2 computes them."""
        n, h, dk, length = q.shape
        r_q, r_k, r_v = self._relative_tables(length, q.device)

        content = torch.einsum("nhdl,nhdm->nhlm", q, k)
        query_term = torch.einsum("nhdl,lmd->nhlm", q, r_q)
        key_term = torch.einsum("nhdm,lmd->nhlm", k, r_k)
        logits = torch.stack((content, query_term, key_term), dim=1)       # (N, 3, h, L, L)
        logits = self.bn_similarity(logits.view(n, 3 * h, length * length))
        weights = logits.view(n, 3, h, length, length).sum(dim=1).softmax(dim=-1)   # (N, h, L, L)

        retrieved_value = torch.einsum("nhlm,nhdm->nhdl", weights, v)
        retrieved_rpe = torch.einsum("nhlm,lmd->nhdl", weights, r_v)
        out = torch.stack((retrieved_value, retrieved_rpe), dim=1)          # (N, 2, h, dv, L)
        out = self.bn_retrieved(out.view(n, 2 * self.value_depth, length))
        return out.view(n, 2, self.value_depth, length).sum(dim=1)          # (N, h·dv, L)

    def _attend_folded(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Eval-mode computation with the five attention BNs folded (module docstring); same tables."""
        n, h, dk, length = q.shape
        dv = v.shape[2]
        r_q, r_k, r_v = self._relative_tables(length, q.device)

        sim_scale, sim_shift = _bn_affine(self.bn_similarity)               # (3h,), channel = term·h + head
        s_content, s_query, s_key = sim_scale.view(3, h, 1, 1)
        logits = torch.einsum("nhdl,nhdm->nhlm", q * s_content, k)
        logits += torch.einsum("nhdl,lmd->nhlm", q * s_query, r_q)
        logits += torch.einsum("nhdm,lmd->nhlm", k * s_key, r_k)
        logits += sim_shift.view(3, h).sum(dim=0).view(h, 1, 1)
        weights = logits.softmax(dim=-1)                                    # (N, h, L, L)

        out_scale, out_shift = _bn_affine(self.bn_retrieved)                # (2·Dv,), channel = term·Dv + head·dv + c
        s_value, s_rpe = out_scale.view(2, h, dv, 1)
        out = torch.einsum("nhlm,nhdm->nhdl", weights, v * s_value)         # (N, h, dv, L)
        out += torch.einsum("nhlm,lmd->nhdl", weights, r_v) * s_rpe
        out += out_shift.view(2, h, dv).sum(dim=0).unsqueeze(-1)
        return out.reshape(n, h * dv, length)


def _bn_affine(norm: nn.Module) -> tuple[Tensor, Tensor]:
    """(scale, shift) of an eval-mode BatchNorm: y = scale·x + shift per channel."""
    if not isinstance(norm, nn.modules.batchnorm._BatchNorm):
        raise TypeError("the attention's similarity / retrieval norms must be BatchNorms")
    scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
    return scale, norm.bias - norm.running_mean * scale


class AxialAttention2D(nn.Module):
    """Height-axis attention, then width-axis attention, on a (B, C_in, H, W) map.

    With stride s, rows are subsampled ([::s]) after the height pass and columns after the width pass,
    so (B, C_in, H, W) → (B, value_depth, ceil(H/s), ceil(W/s)).
    """

    def __init__(self, in_channels: int, *, key_depth: int, value_depth: int, num_heads: int = 8,
                 stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        self.height_axis = AxialAttention(in_channels, key_depth=key_depth, value_depth=value_depth,
                                          num_heads=num_heads)
        self.width_axis = AxialAttention(value_depth, key_depth=key_depth, value_depth=value_depth,
                                         num_heads=num_heads)

    def forward(self, x: Tensor) -> Tensor:
        b, c, height, width = x.shape
        # Height pass: columns become sequences, (B·W, C, H).
        columns = x.permute(0, 3, 1, 2).reshape(b * width, c, height)
        y = self.height_axis(columns)
        y = y.view(b, width, -1, height).permute(0, 2, 3, 1)               # (B, Dv, H, W)
        if self.stride > 1:
            y = y[:, :, :: self.stride, :]
        rows_count = y.shape[2]
        # Width pass: rows become sequences, (B·H', Dv, W).
        rows = y.permute(0, 2, 1, 3).reshape(b * rows_count, -1, width)
        z = self.width_axis(rows)
        z = z.view(b, rows_count, -1, width).permute(0, 2, 1, 3)          # (B, Dv, H', W)
        if self.stride > 1:
            z = z[:, :, :, :: self.stride]
        return z.contiguous()
