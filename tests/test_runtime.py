"""Process-wide malloc tuning: on glibc it applies (and reports so); the opt-out variable leaves malloc alone."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

PROBE = ("from polymax.runtime import keep_freed_memory, malloc_tuned; "
         "before = malloc_tuned(); first = keep_freed_memory(); second = keep_freed_memory(); "
         "print(before, first, second, malloc_tuned())")


def _probe(**env: str) -> list[str]:
    environment = {k: v for k, v in os.environ.items() if k != "POLYMAX_SYSTEM_MALLOC"} | env
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=environment,
                            check=True)
    return result.stdout.split()


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_glibc_malloc_is_tuned_once_and_reports_it() -> None:
    assert _probe() == ["False", "True", "True", "True"]


def test_opt_out_leaves_malloc_alone() -> None:
    assert _probe(POLYMAX_SYSTEM_MALLOC="1") == ["False", "False", "False", "False"]
