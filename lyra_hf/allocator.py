"""Keep freed CPU memory in the process, so that large temporary tensors reuse it instead of being page-faulted in anew.

glibc's malloc returns every freed block larger than its mmap threshold (at most 32 MB by default) to the kernel, so
each large temporary of a forward or backward pass (at 65,536 tokens per batch one (batch, length, 2E) activation of
the default model is 64 MB) is mapped afresh and faulted in page by page on every batch: about 40% of a default-model
forward at L = 1,024 on one thread of the machine in BENCHMARKS.md. Raising the mmap and trim thresholds makes malloc
keep and reuse those blocks; the process then holds on to its peak heap instead of returning it.

`lyra-train`, `lyra-predict` and `lyra-scan` call `retain_freed_memory()` at start. In your own process, call it once
before running a model, or set `MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=4294967296` in the
environment; other allocators (jemalloc, tcmalloc through `LD_PRELOAD`) cache freed memory themselves.
"""

import ctypes
import ctypes.util
import sys


# mallopt parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks up to this size come from (and return to) the heap; larger ones are still mapped directly.
MAX_HEAP_BLOCK_BYTES = 1 << 30
# Free heap memory at the top of the heap is returned to the kernel only beyond this much.
MAX_RETAINED_BYTES = (1 << 31) - 1


def retain_freed_memory() -> bool:
    """Make glibc's malloc keep freed blocks of up to 1 GiB for reuse. Returns whether it took effect (False off glibc,
    e.g. on macOS, Windows or musl, where nothing is changed)."""
    if not sys.platform.startswith("linux"):
        return False
    library = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(library)
        mallopt = libc.mallopt
    except (OSError, TypeError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MAX_HEAP_BLOCK_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, MAX_RETAINED_BYTES))
