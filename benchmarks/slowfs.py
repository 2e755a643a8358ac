"""A read-only FUSE passthrough that adds a fixed delay to every open() and read().

A stand-in for a network mount, to see whether reads on threads still pay off:

    apt-get install fuse libfuse2 && pip install --target /tmp/fusepy fusepy
    python benchmarks/slowfs.py ROOT/docker/registry/v2 /tmp/slow 0.0005 &     # 0.5 ms each
    python benchmarks/slowfs.py --read-manifests ROOT/docker/registry/v2 /tmp/slow
    fusermount -u /tmp/slow

`--read-manifests` scans the real tree, then times `read_manifests` on the mount with the
package's default workers and with one. The FUSE server is Python too, so even with no
delay each file costs a few hundred microseconds.
"""

from __future__ import annotations

import os
import sys
import time


def serve(source: str, mountpoint: str, delay: float) -> None:
    sys.path.insert(0, os.environ.get("FUSEPY", "/tmp/fusepy"))
    from fuse import FUSE, FuseOSError, Operations

    class Slow(Operations):
        def getattr(self, path, fh=None):
            try:
                st = os.lstat(source + path)
            except OSError as error:
                raise FuseOSError(error.errno) from None
            keys = ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime", "st_nlink", "st_size", "st_uid")
            return {key: getattr(st, key) for key in keys}

        def readdir(self, path, fh):
            return [".", "..", *os.listdir(source + path)]

        def open(self, path, flags):
            time.sleep(delay)
            return os.open(source + path, os.O_RDONLY)

        def read(self, path, size, offset, fh):
            time.sleep(delay)
            return os.pread(fh, size, offset)

        def release(self, path, fh):
            os.close(fh)
            return 0

    FUSE(Slow(), mountpoint, foreground=True, ro=True, nothreads=False)


def read_manifests(v2: str, mounted: str) -> None:
    from fsck import manifests, scan
    from fsck.store import LocalStore

    inventory = scan.scan(LocalStore(v2))
    named = manifests.named_by_links(inventory)
    for workers in (None, 1):
        extra = {} if workers is None else {"workers": workers}
        started = time.perf_counter()
        parsed = manifests.read_manifests(LocalStore(mounted), named, inventory.blobs, **extra)
        label = "default workers" if workers is None else f"workers={workers}"
        print(f"{label}: {len(parsed)} manifests in {time.perf_counter() - started:.2f} s", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--read-manifests"] and len(sys.argv) == 4:
        read_manifests(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4:
        serve(sys.argv[1], sys.argv[2], float(sys.argv[3]))
    else:
        sys.exit(__doc__)
