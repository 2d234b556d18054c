"""The command-line dispatcher: every verb has --help, user errors are one line with exit status 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from polymax.cli import _available_verbs, main
from polymax.presets import PRESETS


def test_top_level_help_lists_verbs(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for verb in _available_verbs():
        assert verb in out


@pytest.mark.parametrize("verb", sorted(_available_verbs()))
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([verb, "--help"])
    assert exit_info.value.code == 0
    assert "usage: polymax" in capsys.readouterr().out


def test_unknown_verb_exits_nonzero():
    with pytest.raises(SystemExit) as exit_info:
        main(["no-such-verb"])
    assert exit_info.value.code != 0


def test_version_runs_as_module():
    result = subprocess.run([sys.executable, "-m", "polymax", "--version"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0
    assert result.stdout.strip()


def test_presets_lists_the_tasks_of_each_preset(capsys):
    assert main(["presets", "synth"]) == 0
    models, tokenizers = capsys.readouterr().out.strip().split("\n\n")
    header, *rows = models.splitlines()
    assert header.split()[:3] == ["preset", "backbone", "tasks"]
    assert len(rows) == sum("synth" in name for name in PRESETS) >= 4
    for row in rows:
        name, _, tasks = row.split()[:3]
        assert tasks == ",".join(PRESETS[name]().task_names)
    assert {row.split()[2] for row in rows} >= {"panoptic", "semantic", "depth", "normals"}


def test_presets_lists_the_tokenizer_presets_and_says_when_nothing_matches(capsys):
    from polymax.tokenizer.presets import TOKENIZER_PRESETS

    assert main(["presets", "vqvae"]) == 0
    title, header, *rows = capsys.readouterr().out.strip().splitlines()
    assert "train-tokenizer" in title and header.split()[:2] == ["preset", "kind"]
    assert [row.split()[0] for row in rows] == list(TOKENIZER_PRESETS)
    assert main(["presets", "no_such_preset"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1 and "no_such_preset" in captured.err
