"""PolyMaX: general dense prediction with k-means mask transformers, in PyTorch.

Public API: :func:`build_model`, :func:`load_model`, :data:`PRESETS`.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "build_model", "load_model", "PRESETS"]


def __getattr__(name: str):
    # Lazy: `import polymax` stays cheap for the CLI.
    if name == "build_model":
        from polymax.build import build_model
        return build_model
    if name == "load_model":
        from polymax.io.pretrained import load_model
        return load_model
    if name == "PRESETS":
        from polymax.presets import PRESETS
        return PRESETS
    raise AttributeError(f"module 'polymax' has no attribute {name!r}")
