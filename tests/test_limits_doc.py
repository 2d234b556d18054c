"""docs/limits.md states the limits the code enforces (the numbers cannot drift apart)."""

from __future__ import annotations

from pathlib import Path

from polymax.data.images import MAX_PIXELS
from polymax.model.meta_arch import FAR_OUTSIDE
from polymax.serve.app import DEFAULT_MAX_UPLOAD, DEFAULT_TIMEOUT, LARGE_DECODE_PIXELS

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _spaced(number: int) -> str:
    return f"{number:,}".replace(",", " ")


def test_the_limits_in_the_docs_are_the_code_s():
    text = (DOCS / "limits.md").read_text()
    assert f"{_spaced(MAX_PIXELS)} pixels" in text
    assert f"{DEFAULT_MAX_UPLOAD // (1024 * 1024)} MiB" in text
    assert f"{DEFAULT_TIMEOUT:g} s" in text
    assert f"{_spaced(LARGE_DECODE_PIXELS)} pixels" in text
    assert f"±{_spaced(int(FAR_OUTSIDE))}" in text


def test_the_readme_links_the_limits():
    assert "(docs/limits.md)" in (DOCS.parent / "README.md").read_text()


def test_the_serve_command_defaults_to_the_same_limits():
    from polymax.cli import build_parser

    args = build_parser("serve").parse_args(["serve", "--model", "m"])
    assert args.max_pixels == MAX_PIXELS and args.timeout == DEFAULT_TIMEOUT
    assert args.max_upload_mb * 1024 * 1024 == DEFAULT_MAX_UPLOAD
