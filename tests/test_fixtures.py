"""The golden fixtures live in the repository, so every parity test runs from a plain clone."""

from __future__ import annotations

import json
import subprocess

import numpy as np
from conftest import ONEFORMER_DIR, ONEFORMER_FILES, PARITY_DIR, PARITY_FILES, REPO_ROOT


def test_every_parity_fixture_is_in_the_repository() -> None:
    for path in [PARITY_DIR / name for name in PARITY_FILES] + [ONEFORMER_DIR / name for name in ONEFORMER_FILES]:
        name = path.name
        assert path.is_file(), f"{path} is missing"
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", str(path.relative_to(REPO_ROOT))],
                                 cwd=REPO_ROOT, capture_output=True, check=False)
        if tracked.returncode not in (0, 1):            # 128: not a git checkout (e.g. an unpacked sdist)
            continue
        assert tracked.returncode == 0, f"{name} is not tracked by git"


def test_fixtures_are_readable_and_complete() -> None:
    for fixture in ("coco_r50", "coco_convnext_tiny"):
        manifest = json.loads((PARITY_DIR / f"{fixture}_manifest.json").read_text())
        assert len(manifest["variables"]) > 1000
        with np.load(PARITY_DIR / f"{fixture}.npz") as data:
            assert "input_image" in data.files
