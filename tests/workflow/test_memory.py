import platform
import subprocess
import sys

import pytest

PROBE = """
import ctypes, torch
from pyro_vae.workflow.memory import retain_freed_memory
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if {retain}:
    assert retain_freed_memory()
mapped = libc.mallinfo2().hblkhd
block = torch.ones(2 << 20)  # 8 MB
print(libc.mallinfo2().hblkhd - mapped)
"""


def _mapped_bytes(retain: bool) -> int:
    """In a fresh process: the bytes glibc maps for an 8 MB tensor, with or without the settings."""
    out = subprocess.run([sys.executable, "-c", PROBE.format(retain=retain)], capture_output=True, text=True,
                         check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_a_tensor_of_a_few_mb_comes_from_the_heap_instead_of_fresh_pages():
    """glibc's defaults map an 8 MB block afresh (its mmap threshold is 128 KB until a mapped block is freed);
    after retain_freed_memory it comes from the heap, where a freed one is kept for the next."""
    pytest.importorskip("ctypes").CDLL("libc.so.6").mallinfo2  # glibc 2.33 and later
    assert _mapped_bytes(retain=False) >= 8 << 20
    assert _mapped_bytes(retain=True) < 1 << 20
