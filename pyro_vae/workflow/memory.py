"""The C allocator's settings for a ``pyro-vae`` process: freed memory kept for reuse.

glibc's malloc serves a block above its mmap threshold with fresh pages and returns a freed heap top above
its trim threshold to the system. Torch's CPU tensors of a few MB (a chunk of the importance sampler's
decoded rows) then come back as fresh pages on every chunk: each 4 KB page faults and is zeroed by the
kernel. Raising both thresholds keeps the freed memory for the next chunk. Two runs of
``python -m benchmarks --only likelihood`` (2 threads), the first with glibc's defaults, the second with
both raised through glibc's environment (``MALLOC_TRIM_THRESHOLD_=2000000000
MALLOC_MMAP_THRESHOLD_=300000000``): 18.7 s and 0.8 s of system time in 84 s and
71 s of wall time (the runs' images/s, 77 and 107 at K = 1,000, also moved with the machine's speed).
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_BYTES = 32 << 20  # blocks up to this size come from the heap (glibc's default largest mmap threshold, 64 bits)
TRIM_BYTES = 1 << 30  # a freed heap top is returned to the system only above this


def retain_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds to :data:`MMAP_BYTES` and :data:`TRIM_BYTES` for this process;
    returns whether both were set (False where the C library has no ``mallopt``: not glibc)."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, MMAP_BYTES) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_BYTES) == 1
