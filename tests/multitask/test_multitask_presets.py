"""The tiny one-model-for-every-task presets post-process panoptic and instance results as the synthetic rooms'
panoptic preset does (area limits of 16 / 64 pixels: COCO's 400 / 6400 would drop every segment of a 65² room)."""

from __future__ import annotations

import pytest

from polymax.presets import PRESETS


@pytest.mark.parametrize("name", ["polymax_multitask_tiny_synth", "polymax_multitask_tiny_synth_tokens"])
def test_tiny_multitask_presets_use_the_rooms_post_processing(name):
    assert PRESETS[name]().postprocess == PRESETS["polymax_tiny_synth_panoptic"]().postprocess
