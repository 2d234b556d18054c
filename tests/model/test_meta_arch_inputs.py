"""The model's input check: values far outside RGB 0..255 are an error, 0..1 floats a warning; trace-safe."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import polymax
from polymax.errors import UserError
from polymax.inference.predictor import Predictor
from polymax.model.meta_arch import check_images


@pytest.fixture(scope="module")
def model():
    return polymax.build_model("polymax_tiny_synth_depth").eval()


def test_huge_values_are_an_error_naming_the_range(model):
    with pytest.raises(UserError, match=r"0\.\.255"):
        model(torch.full((1, 3, 17, 17), 1e30))
    with pytest.raises(UserError, match=r"0\.\.255"):
        Predictor(model, optimise=False).predict(np.full((9, 9, 3), -1e30, dtype=np.float32))


def test_unit_range_floats_warn_and_name_the_range(model):
    with pytest.warns(UserWarning, match=r"0\.\.1.*0\.\.255"):
        model(torch.rand(1, 3, 17, 17))
    with pytest.warns(UserWarning, match=r"0\.\.255"):
        Predictor(model, optimise=False).predict(np.random.default_rng(0).random((9, 9, 3), dtype=np.float32))


def test_ordinary_images_pass_silently(model):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        output = model(torch.rand(1, 3, 17, 17) * 255)
    assert torch.isfinite(output.run.final.depth).all()


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")   # shape checks are constant in a trace, by design
def test_the_check_is_skipped_while_tracing():
    def run(images):
        check_images(images)
        return images * 2

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        traced = torch.jit.trace(run, torch.full((1, 3, 4, 4), 1e30), check_trace=False)
    assert traced(torch.ones(1, 3, 4, 4)).sum() == 96
