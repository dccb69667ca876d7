"""The cpu kernel gives freed heap back: a process that meets many input sizes does not creep
(finding 16: forward + backward over 200 sizes, three passes, grew 348 -> 382 -> 441 MB)."""
import subprocess
import sys
import textwrap

import pytest

from vheat_kernels import extension_available

SCRIPT = textwrap.dedent("""
    import ctypes, os, torch, vheat_kernels
    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    for _ in range(2):
        for h in range(40, 240):
            x = torch.randn(2, h, 2 * h + 1, 16, requires_grad=True)
            E = torch.rand(h, 2 * h + 1, 16, requires_grad=True)
            vheat_kernels.heat_conduction(x, E, backend="cpu").sum().backward()
    held = rss_mb()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    print(held - rss_mb())
""")
# What malloc_trim still finds to give back: below the op's own trim threshold (64 MB of
# frees) plus what torch's allocator holds; it was about 300 MB before.
MAX_HELD_BACK_MB = 150


@pytest.mark.slow
@pytest.mark.skipif(not extension_available(), reason="vheat_kernels._C not built")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_many_sizes_leave_little_heap_for_malloc_trim():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert float(proc.stdout.split()[-1]) < MAX_HELD_BACK_MB
