"""Tie a child's life to its parent's: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``.

The hook runs between fork and exec, where allocating or importing can
deadlock, so everything it touches is bound here, in the parent, first.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


_prctl = _load_prctl()

#: True where children can be killed with their parent by the kernel.
SUPPORTED = _prctl is not None


def die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when this process dies.

    ``None`` off Linux (the lifeline pipe still ends replicas there).  The
    signal follows the *thread* that forks, so spawn from the event loop's
    thread, which lives as long as the server.
    """
    prctl = _prctl
    if prctl is None:
        return None
    parent = os.getpid()
    sigkill = int(signal.SIGKILL)
    option = _PR_SET_PDEATHSIG
    getppid = os.getppid
    exit_now = os._exit

    def hook() -> None:
        prctl(option, sigkill, 0, 0, 0)
        # The parent may have died between fork and prctl: then nobody would
        # ever send the signal, so leave now.
        if getppid() != parent:
            exit_now(1)

    return hook
