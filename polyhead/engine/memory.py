"""The serving process's allocator: keep freed memory for the next batch.

Each forward allocates and frees activations of a few to a hundred MB. glibc's malloc
hands large freed blocks back to the kernel (blocks over its mmap threshold are unmapped;
a heap top over its trim threshold is trimmed), so the next batch's tensors fault their
pages in again, and every elementwise pass pays for it. ``keep_freed_memory`` raises both
thresholds (``mallopt``), so freed blocks stay in the process for the next batch: over
eight paired runs the int8 engine ran a median 8.5 % faster with no task and 6 % with 64
mixed tasks (−3 to +20 % pair by pair), fp32 within 1.5 % (BENCHMARKS "Engine"). The
cost: the process keeps its peak working memory (one largest batch's activations)
resident instead of returning it between batches.

Serving processes call it (the Serve replica, unless ``keep_freed_memory`` is off in its
config; ``bench.engine`` as the replica runs); nothing else changes its allocator. Other C
libraries (musl, macOS) are left alone.
"""

from __future__ import annotations

import ctypes
import logging
import platform

log = logging.getLogger(__name__)

# mallopt's parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
KEEP = {
    M_MMAP_THRESHOLD: 1 << 30,  # blocks under 1 GiB come from the heap, not fresh mappings
    M_TRIM_THRESHOLD: 1 << 30,  # the heap's free top is returned only past 1 GiB
    M_TOP_PAD: 64 << 20,  # and grows 64 MiB at a time
}
_kept = False


def keep_freed_memory() -> bool:
    """Set this process's glibc malloc to keep freed memory (once; later calls do nothing).
    False where the C library is not glibc or refuses a setting."""
    global _kept
    if _kept:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        log.info("allocator: not glibc; left as it is")
        return False
    libc = ctypes.CDLL(None)  # this process's own C library
    refused = [param for param, value in KEEP.items() if libc.mallopt(param, value) != 1]
    if refused:
        log.warning("allocator: glibc refused mallopt %s; freed memory is returned as before", refused)
        return False
    _kept = True
    return True
