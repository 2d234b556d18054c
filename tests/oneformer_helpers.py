"""A small OneFormer model and training config for the OneFormer tests (the tiny synthetic trunk, a small text
mapper)."""

from __future__ import annotations

from polymax.build import build_model
from polymax.config.train import load_config

SMALL_TEXT = ["oneformer.text_width=32", "oneformer.text_layers=1", "oneformer.text_heads=2",
              "oneformer.num_context=8"]


def oneformer_model(**overrides):
    return build_model("oneformer_kmax_tiny_synth", **overrides)


def oneformer_config(tmp_path=None, *extra: str):
    common = ["data.workers=0", "optim.warmup_steps=0", "log_every=1", "progress=false", "tensorboard=false",
              "data.check=false"]
    out = [f"out_dir={tmp_path}"] if tmp_path is not None else []
    return load_config(overrides=[*SMALL_TEXT, *common, *out, *extra])
