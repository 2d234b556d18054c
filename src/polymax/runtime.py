"""Where and how the process runs: the device a name means (:func:`resolve_device`, the one place that reads
'auto' / 'cpu' / 'cuda:N'), and process-wide CPU settings: keep freed memory in glibc's heap so that large
feature maps are cheap.

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

from polymax.errors import UserError

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


def resolve_device(device):
    """'auto' → cuda if available else cpu; cpu, cuda, cuda:N as given (a str or torch.device); a one-line error
    for a device this machine lacks or a name that is none. Returns a torch.device."""
    import torch  # here, not at the top: the command line imports this module before it needs torch

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise UserError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} requested but PyTorch sees no CUDA device here (torch {torch.__version__}, "
                        f"CUDA build {torch.version.cuda or 'none'}); use --device cpu")
    return resolved
