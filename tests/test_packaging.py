"""Packaging files agree with pyproject.toml: licence, typing marker, citation, changelog, torch floor."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml

import polymax

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_licence_file_is_the_declared_licence():
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text        # the whole text, not a stub


def test_py_typed_ships_with_the_package():
    assert (ROOT / "src" / "polymax" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["polymax"]


def test_citation_credits_the_four_papers():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["version"] == polymax.__version__
    titles = {ref["title"] for ref in citation["references"]}
    assert titles == {"k-means Mask Transformer", "PolyMaX: General Dense Prediction with Mask Transformer",
                      "OneFormer: One Transformer to Rule Universal Image Segmentation",
                      "All in Tokens: Unifying Output Space of Visual Tasks via Soft Token"}
    assert all(ref["authors"] and ref["year"] for ref in citation["references"])


def test_changelog_names_the_current_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert f"## {polymax.__version__}" in text and PYPROJECT["project"]["version"] == polymax.__version__


def test_torch_floor_is_the_tested_version():
    floor = next(dep for dep in PYPROJECT["project"]["dependencies"] if dep.startswith("torch"))
    tested = re.search(r"^torch==([\d.]+)", (ROOT / "constraints.txt").read_text(), re.M).group(1)
    assert re.match(r"torch>=([\d.]+)", floor).group(1) == ".".join(tested.split(".")[:2])


def test_ci_type_checks_with_a_tool_of_the_dev_extra():
    assert any(dep.startswith("mypy") for dep in PYPROJECT["project"]["optional-dependencies"]["dev"])
    assert re.search(r"^mypy\b", (ROOT / ".ci" / "run").read_text(), re.M)
    assert "src/polymax/io" in PYPROJECT["tool"]["mypy"]["files"]
