"""`polymax bench --set PATH=VALUE`: model settings for the measured model (e.g. checkpoint_backbone=true)."""

from __future__ import annotations

import pytest

from polymax.cli.bench import model_settings
from polymax.errors import UserError


def test_assignments_become_typed_build_model_overrides():
    assert model_settings(["checkpoint_backbone=true", "kmax_decoder.num_queries=8"]) == {
        "checkpoint_backbone": True, "kmax_decoder.num_queries": 8}
    assert model_settings([]) == {}


def test_an_assignment_without_a_value_is_a_user_error():
    with pytest.raises(UserError, match="PATH=VALUE"):
        model_settings(["checkpoint_backbone"])
