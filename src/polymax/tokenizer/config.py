"""The typed configuration of a VQ-VAE tokenizer; ``to_dict`` / ``from_dict`` round-trip through ``config.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from polymax.errors import UserError

# What a tokenizer encodes → whether a target value of 0 marks an invalid pixel (depth: holes in the ground
# truth, left out of the reconstruction loss) or is a value like any other (a mask's background).
ZERO_IS_INVALID = {"depth": True, "mask": False}


@dataclass(frozen=True)
class TokenizerConfig:
    """A VQ-VAE tokenizer (the layout of AiT's ``VQVAE`` with ``residul_type='v1'``).

    kind: what it encodes, 'depth' (metres, 0 = invalid) or 'mask' (a binary instance mask crop in 0..1).
    downsample_ratio: input pixels per token side (a power of two ≥ 2): log2 of it stride-2 convolutions.
    hidden_dim: width of the first convolution; each further one doubles it (16 → 256 at ratio 32).
    num_resnet_blocks: residual blocks after the encoder convolutions and before the decoder ones.
    num_codes, code_dim: the codebook (128 × 512 in AiT).
    ema_decay, commitment, epsilon: the EMA codebook update and the commitment weight of the encoder.
    use_norm, max_value: map inputs to [-1, 1] by 2·(x / max_value − 0.5) (AiT's masks) and outputs back.
    tau: the soft decode multiplies the code logits by tau before the softmax (AiT: 0.8 for depth).
    image_size: the training crop (H = W) the tokenizer was made for; any multiple of the ratio encodes.
    """

    preset: str = ""
    kind: str = "depth"
    channels: int = 1
    downsample_ratio: int = 32
    hidden_dim: int = 16
    num_resnet_blocks: int = 2
    num_codes: int = 128
    code_dim: int = 512
    ema_decay: float = 0.99
    commitment: float = 0.25
    epsilon: float = 1e-5
    use_norm: bool = False
    max_value: float = 10.0
    tau: float = 0.8
    image_size: int = 480

    def __post_init__(self) -> None:
        ratio = self.downsample_ratio
        if ratio < 2 or ratio & (ratio - 1):
            raise UserError(f"tokenizer downsample_ratio must be a power of two >= 2, got {ratio}")
        if self.kind not in ZERO_IS_INVALID:
            raise UserError(f"tokenizer kind must be one of {sorted(ZERO_IS_INVALID)}, got {self.kind!r}")
        for name in ("channels", "hidden_dim", "num_codes", "code_dim"):
            if getattr(self, name) < 1:
                raise UserError(f"tokenizer {name} must be positive, got {getattr(self, name)}")

    @property
    def zero_is_invalid(self) -> bool:
        return ZERO_IS_INVALID[self.kind]

    @property
    def decoder_width(self) -> int:
        """The widest layer: hidden_dim · ratio / 2 (256 for the depth tokenizer)."""
        return self.hidden_dim * self.downsample_ratio // 2

    def to_dict(self) -> dict[str, Any]:
        return {"tokenizer": asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenizerConfig:
        """Rebuild from ``to_dict``'s output, each value checked against its declared type."""
        section = data.get("tokenizer") if isinstance(data, dict) else None
        if not isinstance(section, dict):
            raise UserError("the tokenizer config must hold a 'tokenizer' mapping; the file is incomplete")
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(section) - set(known))
        if unknown:
            raise UserError(f"tokenizer config has unknown fields {unknown}; it was written by a newer polymax")
        checked = {}
        for name, value in section.items():
            kind = {"str": str, "int": int, "float": (int, float), "bool": bool}[known[name]]
            if isinstance(value, bool) != (known[name] == "bool") or not isinstance(value, kind):
                raise UserError(f"tokenizer config field {name!r} must be a {known[name]}, got {value!r}")
            checked[name] = float(value) if known[name] == "float" else value
        return cls(**checked)


def is_tokenizer_dict(data: Any) -> bool:
    """Whether a saved ``config`` section describes a tokenizer (rather than a kMaX / PolyMaX model)."""
    return isinstance(data, dict) and set(data) == {"tokenizer"}
