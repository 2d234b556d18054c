"""Process-wide CPU settings: keep freed memory in glibc's heap so that large feature maps are cheap.

glibc's malloc hands every allocation above its mmap threshold (which never rises past 32 MiB) fresh
pages from the kernel and unmaps them again on free, so each such tensor pays one page fault per 4 KiB on
first touch. A 1281² kMaX-R50 inference creates dozens of 50–100 MB maps; measured on this project's
machine, a 1×1 convolution writing a 321²×256 map took 43–50 ms that way against 13 ms with the pages
reused, and the whole model ran 5.1× slower at 1281² than at 641² (3.9× once reused, for 4.0× the pixels).

:func:`keep_freed_memory` turns mmap-served allocations off and heap trimming off, so freed blocks are
reused. The price is memory: freed blocks stay with the process until it exits and the heap can
fragment, so the resident peak grows (measured: 1.8 → 2.0–2.4 GiB for that 1281² inference, 5.6 → 6.3 GiB
for a 641² training step). ``polymax`` applies it at start-up (all verbs); set ``POLYMAX_SYSTEM_MALLOC=1``
to leave malloc as it is. On other C libraries (macOS, Windows, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import platform

_M_TRIM_THRESHOLD = -1      # glibc mallopt parameters (malloc.h)
_M_MMAP_MAX = -4
_applied = False


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as the module docstring says; True if it is (now or already) in effect."""
    global _applied
    if _applied:
        return True
    if os.environ.get("POLYMAX_SYSTEM_MALLOC") == "1" or platform.system() != "Linux":
        return False
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    _applied = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _applied


def malloc_tuned() -> bool:
    """Whether :func:`keep_freed_memory` is in effect in this process (reported with benchmark figures)."""
    return _applied
