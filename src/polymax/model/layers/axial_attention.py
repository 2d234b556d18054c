"""Global axial attention with relative positional encodings (Axial-DeepLab, as deeplab2 computes it).

One axis at a time, every position attends to every position of its row (or column). Per head:

    logits[l, m] = BN_c(q_l·k_m) + BN_q(q_l·r_q[m-l]) + BN_k(k_m·r_k[m-l])     (one BN per term and head)
    w[l, :]      = softmax_m(logits[l, :])                                      (no 1/sqrt(d) scaling)
    out[l]       = BN_v(Σ_m w[l,m] v_m) + BN_r(Σ_m w[l,m] r_v[m-l])             (one BN per term, head, channel)

and the heads are concatenated (channel = head * d_v + c). There is no output projection: the enclosing
block's 1×1 conv plays that role. The BatchNorms replace the usual 1/sqrt(d) temperature.

Relative positional tables hold 2·255 − 1 = 509 rows shared by all heads; query l and key m use row
(m − l) + 254. Distances beyond ±254 (axes longer than 255) share the outermost rows, as in deeplab2.

Inference fast path (eval mode; the same result to float rounding; ``AxialAttention.attend_rows``): the
three BNs on the logits and the two on the outputs are fixed per-channel affines there, so their scales go
onto q, k and the value rows of the qkv weights (or the retrieved table term), the retrieval shifts onto the
value bias, and the similarity shifts are dropped (constant along each softmax row). It works on
channels-last maps directly, the qkv projection as one GEMM over the channel axis: no (N, 3, h, L, L) or
(N, 2, h, d_v, L) stacks, no BN passes, no whole-map layout copies (docs/benchmarks.md: ×1.35 per pass at
L = 41, ×1.70 at L = 81 against the per-term computation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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
        if not self.training:                   # (N, C_in, L) → (1, N, L, C_in) for the eval fast path
            return self.attend_rows(x.transpose(1, 2).unsqueeze(0)).squeeze(0).transpose(1, 2)
        n, _, length = x.shape
        h, dk, dv = self.num_heads, self.key_depth // self.num_heads, self.value_depth // self.num_heads
        qkv = self.bn_qkv(self.qkv(x))                                     # (N, 2·Dk + Dv, L)
        q, k, v = qkv.split((self.key_depth, self.key_depth, self.value_depth), dim=1)
        return self._attend(q.reshape(n, h, dk, length), k.reshape(n, h, dk, length), v.reshape(n, h, dv, length))

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

    def attend_rows(self, x: Tensor) -> Tensor:
        """Eval-mode attention along L of a (B, S, L, C_in) map, for every (b, s): → (B, S, L, value_depth).

        The module docstring's fast path, laid out for channels-last maps: the qkv projection is one GEMM
        over the channel axis, bn_qkv (when not folded away) and the retrieved-value BN scale ride on its
        weights, and both retrieval BN shifts ride on the value bias (softmax rows sum to one, so a constant
        added to every value comes out unchanged).
        """
        b, s, length, _ = x.shape
        h, dk, dv = self.num_heads, self.key_depth // self.num_heads, self.value_depth // self.num_heads
        n = b * s * h
        sim_scale, _ = _bn_affine(self.bn_similarity)                    # (3h,), channel = term·h + head
        s_content, s_query, s_key = sim_scale.view(3, h, 1)
        out_scale, out_shift = _bn_affine(self.bn_retrieved)             # (2·Dv,), channel = term·Dv + head·dv + c
        s_value, s_rpe = out_scale.view(2, self.value_depth)
        weight, bias = self._qkv_affine()
        value_rows = slice(2 * self.key_depth, None)
        weight = torch.cat((weight[:value_rows.start], weight[value_rows] * s_value[:, None]))
        bias = torch.cat((bias[:value_rows.start], bias[value_rows] * s_value + out_shift.view(2, -1).sum(0)))
        qkv = _project_channels(x, weight, bias)                             # (B, S, L, 2·Dk + Dv)
        q = qkv[..., :self.key_depth].unflatten(-1, (h, dk))                 # (B, S, L, h, dk)
        k = qkv[..., self.key_depth:value_rows.start].unflatten(-1, (h, dk))
        v = qkv[..., value_rows].unflatten(-1, (h, dv))
        r_q, r_k, r_v = self._relative_tables(length, x.device)              # (L, M, d); row l, column m: m − l

        # Batched over n = (b, s, head): content logits; batched over l (or m): the relative terms, added
        # in place (one strided read each). The similarity BN shifts are left out: constant along each
        # softmax row, they cancel in it.
        keys = (k * s_content).permute(0, 1, 3, 4, 2).reshape(n, dk, length)
        logits = torch.bmm(q.permute(0, 1, 3, 2, 4).reshape(n, length, dk), keys)               # (n, L, M)
        queries = (q * s_query).permute(2, 0, 1, 3, 4).reshape(length, n, dk)
        logits += torch.bmm(queries, r_q.transpose(1, 2)).transpose(0, 1)                       # (L, n, M)
        keys = (k * s_key).permute(2, 0, 1, 3, 4).reshape(length, n, dk)
        logits += torch.bmm(keys, r_k.permute(1, 2, 0)).permute(1, 2, 0)                       # (M, n, L)
        weights = logits.softmax(dim=-1)                                                         # (n, L, M)

        out = torch.bmm(weights, v.permute(0, 1, 3, 2, 4).reshape(n, length, dv))              # (n, L, dv)
        out = out.view(b, s, h, length, dv).transpose(2, 3).contiguous()                        # (B, S, L, h, dv)
        retrieved_rpe = torch.bmm(weights.transpose(0, 1), r_v)                                 # (L, n, dv)
        out.addcmul_(retrieved_rpe.view(length, b, s, h, dv).permute(1, 2, 0, 3, 4), s_rpe.view(h, dv))
        return out.view(b, s, length, self.value_depth)

    def _qkv_affine(self) -> tuple[Tensor, Tensor]:
        """The qkv projection with bn_qkv applied (eval): weight (2·Dk + Dv, C_in), bias (2·Dk + Dv,)."""
        weight = self.qkv.weight.squeeze(-1)
        bias = self.qkv.bias if self.qkv.bias is not None else weight.new_zeros(weight.shape[0])
        if isinstance(self.bn_qkv, nn.modules.batchnorm._BatchNorm):   # nn.Identity once folded
            scale, shift = _bn_affine(self.bn_qkv)
            return weight * scale[:, None], bias * scale + shift
        return weight, bias


def _project_channels(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """F.linear over the last axis of a (B, S, L, C) view as one 2-D GEMM.

    A channels-last map read along its other axis is a (S, L)-transposed view; F.linear would run that as a
    batched matmul against an expanded weight (about 1.6× slower on a CPU), so the GEMM runs on whichever
    of the two orders is contiguous and the result is handed back in the order asked for.
    """
    for view, swapped in ((x, False), (x.transpose(1, 2), True)):
        if view.is_contiguous():
            out = F.linear(view.reshape(-1, view.shape[-1]), weight, bias).view(*view.shape[:-1], -1)
            return out.transpose(1, 2) if swapped else out
    return F.linear(x.reshape(-1, x.shape[-1]), weight, bias).view(*x.shape[:-1], -1)


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
        if not self.training:
            return self._forward_eval(x)
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

    def _forward_eval(self, x: Tensor) -> Tensor:
        """The same passes on channels-last views: (B, C, H, W) read as (B, W, H, C), no whole-map copies."""
        y = self.height_axis.attend_rows(x.permute(0, 3, 2, 1))                # (B, W, H, Dv)
        y = y[:, :, :: self.stride]
        z = self.width_axis.attend_rows(y.transpose(1, 2))                     # (B, H', W, Dv)
        z = z[:, :, :: self.stride].permute(0, 3, 1, 2)                        # (B, Dv, H', W')
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            return z.contiguous(memory_format=torch.channels_last)
        return z.contiguous()
