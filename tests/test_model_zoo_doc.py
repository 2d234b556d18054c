"""docs/model_zoo.md: every `polymax` command on the page parses with the command line, every preset it names
exists, and every official COCO / Cityscapes kMaX preset has its row."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from polymax.cli import build_parser
from polymax.presets import PRESETS

PAGE = Path(__file__).resolve().parents[1] / "docs" / "model_zoo.md"


def _commands() -> list[list[str]]:
    blocks = re.findall(r"```bash\n(.*?)```", PAGE.read_text(), re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith("polymax ")]


def test_page_has_commands_of_each_kind():
    verbs = [argv[0] for argv in _commands()]
    assert verbs.count("convert") >= 4 and verbs.count("eval") >= 4 and "train" in verbs and "predict" in verbs


@pytest.mark.parametrize("argv", _commands(), ids=lambda argv: " ".join(argv[:2]))
def test_command_parses(argv):
    args = build_parser(load_verb=argv[0]).parse_args(argv)   # argparse exits (fails the test) on a bad option
    if getattr(args, "preset", None):
        assert args.preset in PRESETS


def test_every_named_preset_exists_and_every_official_one_is_listed():
    named = set(re.findall(r"`((?:kmax|polymax)_[a-z0-9_]+)`", PAGE.read_text()))
    assert named and named <= set(PRESETS), sorted(named - set(PRESETS))
    official = {p for p in PRESETS if re.fullmatch(r"kmax_(r50|axial_r50|convnext_\w+)_(coco|cityscapes)", p)}
    assert len(official) == 12 and official <= named
    assert {"kmax_r50_ade20k", "kmax_convnext_large_ade20k"} <= named
