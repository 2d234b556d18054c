"""Depth at the right scale when the predictor resizes its input: a room seen at two input scales gives the
same metres. The model is a pinhole-law stub: depth = (focal · object width) / apparent width in pixels, which is
exactly how resizing biases a network that judges depth from apparent size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polymax.build import resolve_config
from polymax.geometry import Geometry
from polymax.inference.predictor import Predictor
from polymax.structures import DepthOutput
from polymax.tasks.depth import resize_scale

TRUE_DEPTH, SIDE = 2.0, 32        # metres; the white square's side in pixels at the original size


class PinholeRunner:
    """Runner protocol (config, task, fixed_size, __call__): reads the widest white row of the network input."""

    fixed_size = None
    task = "depth"

    def __init__(self) -> None:
        self.config = resolve_config("polymax_tiny_synth_depth")

    def __call__(self, images: torch.Tensor) -> DepthOutput:
        batch, _, height, width = images.shape
        apparent = (images[:, 0] > 180).sum(-1).amax(-1).float()                    # (B,) pixels
        depth = (TRUE_DEPTH * SIDE / apparent).view(batch, 1, 1, 1)
        size = ((height - 1) // 4 + 1, (width - 1) // 4 + 1)
        zeros = torch.zeros(batch, 1, *size)
        return DepthOutput(mask_logits=zeros, pixel_features=zeros, depth=depth.expand(batch, 1, *size),
                           cluster_depth=depth.view(batch, 1))


def room() -> np.ndarray:
    image = np.full((96, 128, 3), 90, dtype=np.uint8)
    image[32:64, 48:80] = 255                                                        # the square, 2 m away
    return image


@pytest.mark.parametrize("size", [(48, 64), (72, 96)])
def test_the_same_metres_at_two_input_scales(size):
    native = Predictor(PinholeRunner(), resize="none").predict(room()).depth
    resized = Predictor(PinholeRunner(), resize="fit", size=size).predict(room()).depth
    assert native.shape == resized.shape == (96, 128)
    assert np.allclose(native, TRUE_DEPTH, rtol=1e-6)
    scale = size[0] / 96
    # Without the correction the stub reports TRUE_DEPTH / scale (4 m at half size); with it, about 2 m (the
    # square's blurred edge costs a pixel or so of apparent width).
    assert abs(float(resized.mean()) - TRUE_DEPTH) < 0.1 * TRUE_DEPTH < abs(TRUE_DEPTH / scale - TRUE_DEPTH)


def test_resize_scale_is_one_without_resizing():
    assert resize_scale(Geometry(original=(96, 128), content=(96, 128), network=(97, 129))) == 1.0
    assert resize_scale(Geometry(original=(96, 128), content=(48, 64), network=(49, 65))) == 0.5
