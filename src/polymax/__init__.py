"""PolyMaX: general dense prediction with k-means mask transformers, in PyTorch.

Public API: :func:`build_model`, :func:`load_model`, :func:`save_pretrained`, :func:`push_to_hub`, :data:`PRESETS`,
:data:`TASKS`.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "build_model", "load_model", "save_pretrained", "push_to_hub", "PRESETS", "TASKS"]


def __getattr__(name: str):
    # Lazy: `import polymax` stays cheap for the CLI.
    if name == "build_model":
        from polymax.build import build_model
        return build_model
    if name == "load_model":
        from polymax.io.pretrained import load_model
        return load_model
    if name == "save_pretrained":
        from polymax.io.pretrained import save_pretrained
        return save_pretrained
    if name == "push_to_hub":
        from polymax.io.push import push_to_hub
        return push_to_hub
    if name == "TASKS":
        from polymax.tasks import TASKS
        return TASKS
    if name == "PRESETS":
        from polymax.presets import PRESETS
        return PRESETS
    raise AttributeError(f"module 'polymax' has no attribute {name!r}")
