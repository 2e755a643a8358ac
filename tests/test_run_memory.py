"""What every run carries in memory whatever the tree: the libraries it maps, how its allocator behaves."""

import platform
import subprocess
import sys

import pytest
from clirun import DEMO, REPO

_PROBE = (
    "import atexit, sys, runpy\n"
    "atexit.register(lambda: sys.stderr.write('hashlib loaded: %s\\n' % ('_hashlib' in sys.modules)))\n"
    "sys.argv = ['registry-fsck', *sys.argv[1:]]\n"
    "runpy.run_module('fsck', run_name='__main__')\n"
)


def _probe(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 4, result.stderr
    return result.stderr.splitlines()[-1]


def test_an_audit_that_hashes_nothing_does_not_map_libcrypto():
    # hashlib maps OpenSSL's libcrypto (3.6 MiB resident): only a run that hashes needs it.
    assert _probe("audit", str(DEMO), "--json") == "hashlib loaded: False"
    assert _probe("audit", str(DEMO), "--json", "--verify") == "hashlib loaded: True"


_ALLOCATE = """
import sys
from fsck import entry
if sys.argv[1] == "fixed":
    entry._fix_mmap_threshold()
big = bytes(4 << 20)  # a mapping of its own, and when freed glibc's threshold rises to its size, unless fixed
del big
block = bytes(512 << 10)
heap = next(line.split()[0] for line in open("/proc/self/maps") if line.rstrip().endswith("[heap]"))
low, high = (int(end, 16) for end in heap.split("-"))
print("heap" if low <= id(block) < high else "mapped")
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's threshold is glibc's")
def test_large_blocks_keep_mappings_of_their_own_after_a_larger_one_is_freed():
    def where(mode: str) -> str:
        result = subprocess.run(
            [sys.executable, "-c", _ALLOCATE, mode], capture_output=True, text=True, cwd=REPO, timeout=60, check=True,
        )
        return result.stdout.strip()

    assert where("default") == "heap"  # glibc's own behaviour, which the fix is for
    assert where("fixed") == "mapped"
