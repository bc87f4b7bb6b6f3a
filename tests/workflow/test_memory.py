import ctypes
import platform

import pytest
import torch

from pyro_vae.workflow.memory import retain_freed_memory


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_a_freed_tensor_of_a_few_mb_stays_in_the_heap_for_the_next_one():
    """After it, an 8 MB tensor comes from the heap, not from fresh mapped pages, and freeing it keeps the
    memory (glibc's defaults map it afresh: its mmap threshold is 128 KB until a mapped block is freed)."""
    libc = ctypes.CDLL("libc.so.6")
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("glibc before 2.33 has no mallinfo2")
    libc.mallinfo2.restype = MallInfo2
    assert retain_freed_memory()
    mapped_before = libc.mallinfo2().hblkhd
    block = torch.ones(2 << 20)  # 8 MB
    assert libc.mallinfo2().hblkhd < mapped_before + (8 << 20)  # not a mapping of its own
    heap = libc.mallinfo2().arena
    del block
    assert libc.mallinfo2().arena >= heap - (1 << 20)  # the heap did not give the 8 MB back
