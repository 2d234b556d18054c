"""Inference-time fusion for the CPU: convolution + activation (+ residual add) as one oneDNN kernel.

After BatchNorm folding (``fold.py``) the trunk is a chain of conv → ReLU/GELU and conv + shortcut sums.
Eager PyTorch runs each activation and each residual add as its own pass over the feature map; oneDNN can
apply them as post-operations of the convolution while the output is still in cache. On kMaX-R50 at 641²
on two cores that took one inference from 937 to 824 ms (median of 5, alternating; docs/benchmarks.md).

    fused = fuse_for_inference(fold_batch_norms(model))      # a fused copy; ``model`` is untouched
    fast = optimise_for_inference(model)                      # fold + channels-last + fuse, a copy

Rewrites, inference only (eval mode, no autograd through the fused kernels):

* every folded :class:`ConvBN` with a ReLU, erf-GELU or no activation → :class:`FusedConv2d`;
* every eval-mode :class:`BottleneckBlock` / :class:`AxialBlock` → :class:`FusedResidualBlock`, whose last
  1×1 conv adds the shortcut inside the kernel; inside a stage, a block whose output only feeds the next
  block also applies that block's input ReLU there (the next block then skips it; oneDNN has no GELU after
  an add). A stage's last block still returns the un-activated sum: stage outputs are endpoints.

The fused modules fall back to the plain operations wherever the kernel does not apply (not a CPU float32
tensor, gradients requested, CPU autocast on, a PyTorch built without oneDNN), so a fused model runs
anywhere and computes what the unfused one would.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polymax.model.layers.blocks import AxialBlock, BottleneckBlock, ResidualStage, residual_shortcut
from polymax.model.layers.conv import ConvBN

# oneDNN post-op name of each activation module we can fuse ("none": no activation; GELU in _activation_name).
_ACTIVATIONS: dict[type[nn.Module], str] = {nn.Identity: "none", nn.ReLU: "relu"}


def _activation_name(module: nn.Module) -> str | None:
    if isinstance(module, nn.GELU):
        return "gelu" if module.approximate == "none" else None
    return _ACTIVATIONS.get(type(module))


def _pointwise_kernels() -> tuple | None:
    """(unary, binary) oneDNN fused convolution ops, or None where this PyTorch build lacks them."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        op = torch.ops.mkldnn._convolution_pointwise
        return op.default, op.binary
    except (AttributeError, RuntimeError):
        return None


_KERNELS = _pointwise_kernels()


class FusedConv2d(nn.Module):
    """conv2d (+ residual) → activation. (B, Cin, H, W) [+ (B, Cout, H', W')] → (B, Cout, H', W').

    Holds the folded convolution's ``weight`` and ``bias`` under the same names as ``nn.Conv2d``.
    """

    def __init__(self, conv: nn.Conv2d, activation: str) -> None:
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("only explicitly zero-padded convolutions can be fused")
        if activation not in ("none", "relu", "gelu"):
            raise ValueError(f"cannot fuse activation {activation!r} (use 'none', 'relu' or 'gelu')")
        self.weight = conv.weight
        self.bias = conv.bias
        self.stride, self.padding, self.dilation = list(conv.stride), list(conv.padding), list(conv.dilation)
        self.groups = conv.groups
        self.activation = activation

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        if self._kernel_applies(x, residual):
            unary, binary = _KERNELS
            algorithm = "none" if self.activation == "gelu" else ""
            if residual is None:
                return unary(x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups,
                             self.activation, [], algorithm)
            post = None if self.activation == "none" else self.activation
            return binary(x, residual, self.weight, self.bias, self.padding, self.stride, self.dilation,
                          self.groups, "add", None, post, [], algorithm if post else None)
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if residual is not None:
            y = y + residual
        if self.activation == "relu":
            return F.relu(y)
        return F.gelu(y) if self.activation == "gelu" else y

    def _kernel_applies(self, x: Tensor, residual: Tensor | None) -> bool:
        if _KERNELS is None or x.device.type != "cpu" or x.dtype != torch.float32:
            return False
        if torch.is_autocast_enabled("cpu"):        # the fused op is not autocast-aware; F.conv2d is
            return False
        if self.weight.dtype != torch.float32 or (self.bias is not None and self.bias.dtype != torch.float32):
            return False
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad
                                        or (residual is not None and residual.requires_grad)):
            return False
        return residual is None or (residual.device.type == "cpu" and residual.dtype == torch.float32)

    def extra_repr(self) -> str:
        return (f"{self.weight.shape[1] * self.groups}, {self.weight.shape[0]}, kernel_size="
                f"{tuple(self.weight.shape[2:])}, stride={tuple(self.stride)}, dilation={tuple(self.dilation)}, "
                f"groups={self.groups}, activation={self.activation}")


class FusedResidualBlock(nn.Module):
    """A bottleneck or axial block whose last 1×1 conv adds the shortcut: un-activated (or activated) sum.

    Keeps the block's parts under their names (``conv1``, ``conv2`` or ``attention``…, ``conv3``,
    ``shortcut``). ``input_activation`` is the block's own act (nn.Identity when the previous block already
    applied it); ``output_activation`` is 'none' or the next block's activation.
    """

    def __init__(self, block: BottleneckBlock | AxialBlock, *, output_activation: str = "none") -> None:
        super().__init__()
        self.stride = block.stride
        self.input_activation = block.act
        branch = ("conv1", "conv2") if isinstance(block, BottleneckBlock) else ("conv1", "attention", "attention_act")
        self.branch_names = branch
        for name in branch:
            self.add_module(name, getattr(block, name))
        self.conv3 = FusedConv2d(block.conv3.conv, output_activation)
        self.shortcut = block.shortcut

    def forward(self, x: Tensor) -> Tensor:
        activated = self.input_activation(x)
        h = activated
        for name in self.branch_names:
            h = getattr(self, name)(h)
        return self.conv3(h, residual=residual_shortcut(self.shortcut, activated, self.stride))


def _fuse_conv_bn(module: ConvBN) -> bool:
    """Fuse a folded ConvBN's activation into its convolution in place; False if it cannot be fused."""
    activation = _activation_name(module.act)
    if not isinstance(module.bn, nn.Identity) or activation is None or not isinstance(module.conv, nn.Conv2d):
        return False
    module.conv = FusedConv2d(module.conv, activation)
    module.act = nn.Identity()
    return True


def _fuse_stage(stage: ResidualStage) -> int:
    """Replace the stage's foldable blocks by FusedResidualBlocks; returns how many were replaced."""
    blocks = list(stage.blocks)
    fusable = [isinstance(b, (BottleneckBlock, AxialBlock)) and isinstance(b.conv3.bn, nn.Identity)
               and isinstance(b.conv3.act, nn.Identity) and not b.drop_path.training for b in blocks]
    replaced = 0
    for index, block in enumerate(blocks):
        if not fusable[index]:
            continue
        output = "none"
        following = blocks[index + 1] if index + 1 < len(blocks) else None
        if following is not None and fusable[index + 1] and _activation_name(following.act) == "relu":
            output = "relu"             # oneDNN fuses only ReLU after the residual add
        stage.blocks[index] = FusedResidualBlock(block, output_activation=output)
        replaced += 1
        if index > 0 and isinstance(stage.blocks[index - 1], FusedResidualBlock) \
                and stage.blocks[index - 1].conv3.activation != "none":
            stage.blocks[index].input_activation = nn.Identity()
    return replaced


@torch.no_grad()
def fuse_for_inference(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Fuse activations and residual adds into the convolutions of a BN-folded ``model`` (module docstring).

    Returns the fused model in eval mode (a deep copy unless ``inplace``); the number of fused convolutions
    and blocks is stored as ``model.fused_convolutions`` / ``model.fused_blocks``. BNs that were not folded
    keep their convolutions unfused, so calling this on an unfolded model is correct, only less useful.
    """
    target = model if inplace else copy.deepcopy(model)
    target.eval()
    stages = [m for m in target.modules() if isinstance(m, ResidualStage)]
    target.fused_blocks = sum(_fuse_stage(stage) for stage in stages)
    target.fused_convolutions = sum(_fuse_conv_bn(m) for m in list(target.modules()) if isinstance(m, ConvBN))
    return target


def optimise_for_inference(model: nn.Module, *, device: torch.device | str = "cpu") -> nn.Module:
    """An eval-mode copy of ``model`` prepared for fast inference on ``device``; ``model`` is untouched.

    BatchNorms folded into their convolutions (``fold_batch_norms``), then on a CPU channels-last weights
    and the fusions above. Outputs equal the model's to float32 rounding (the deeplab2 parity tests run on
    this form too). Images may come in either memory format: the first convolution, whose weights are
    channels-last, returns a channels-last map.
    """
    from polymax.inference.fold import fold_batch_norms

    target = fold_batch_norms(model).to(device)
    if torch.device(device).type == "cpu":
        target = target.to(memory_format=torch.channels_last)
        fuse_for_inference(target, inplace=True)
    return target
