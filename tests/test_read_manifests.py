"""Reading manifests from the blob store: batched across threads or in one thread, the same result."""

import hashlib
import os
import subprocess
import sys
import threading
import time

import orjson
import pytest

from fsck import layout
from fsck import manifests as m
from fsck.store import LocalStore


def store(v2, raw: bytes) -> bytes:
    digest = hashlib.sha256(raw).digest()
    path = os.path.join(v2, layout.blob_data(digest))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(raw)
    return digest


def image(n: int) -> bytes:
    config = {"mediaType": "application/vnd.oci.image.config.v1+json", "size": n, "digest": "sha256:" + f"{n:064x}"}
    return orjson.dumps({"schemaVersion": 2, "mediaType": m.OCI_MANIFEST, "config": config, "layers": []})


def stored_images(v2: str, count: int) -> dict[bytes, int]:
    """`count` image manifests stored as blobs in `v2`: digest -> size, as the scan would give them."""
    sizes = {}
    for n in range(count):
        raw = image(n)
        sizes[store(v2, raw)] = len(raw)
    return sizes


@pytest.mark.parametrize("count", [1, 31, 33, 257, 1500])
def test_threads_and_one_thread_read_the_same(tmp_path, monkeypatch, count):
    v2 = str(tmp_path)
    sizes = stored_images(v2, count)
    serial = m.read_manifests(LocalStore(v2), sizes, sizes, workers=1)
    monkeypatch.setattr(m, "_SLOW_READ", -1.0)  # every batch counts as slow: the rest go to threads
    monkeypatch.setattr(m, "_SWITCHING_SHARE", 0.0)
    threaded = m.read_manifests(LocalStore(v2), sizes, sizes, workers=8)
    assert threaded == serial
    assert set(threaded) == set(sizes)
    assert all(isinstance(parsed, m.Manifest) for parsed in threaded.values())
    assert {parsed.references[0].size for parsed in threaded.values()} == set(range(count))


def test_a_manifest_grown_since_the_scan_is_read_whole(tmp_path):
    v2 = str(tmp_path)
    raw = image(7) + b" " * 100_000  # trailing whitespace is still JSON
    digest = store(v2, raw)
    parsed = m.read_manifests(LocalStore(v2), [digest], {digest: 10})
    assert isinstance(parsed[digest], m.Manifest)


def test_a_manifest_shrunk_since_the_scan_is_judged_on_what_is_there(tmp_path):
    v2 = str(tmp_path)
    raw = image(7)
    digest = store(v2, raw)
    parsed = m.read_manifests(LocalStore(v2), [digest], {digest: len(raw) + 1000})
    assert isinstance(parsed[digest], m.Manifest)


def test_data_over_the_limit_is_invalid_unread(tmp_path):
    digest = bytes(32)
    parsed = m.read_manifests(LocalStore(str(tmp_path)), [digest], {digest: layout.MAX_MANIFEST_BYTES + 1})
    assert "byte limit" in parsed[digest].reason and not parsed[digest].unreadable


def test_fast_reads_stay_in_this_thread(tmp_path, monkeypatch):
    v2 = str(tmp_path)
    sizes = stored_images(v2, 600)
    monkeypatch.setattr(m, "_SLOW_READ", 3600.0)

    class NoThreads:
        def __init__(self, *args, **kwargs):
            raise AssertionError("no thread pool for fast reads")

    monkeypatch.setattr(m, "ThreadPoolExecutor", NoThreads)
    assert len(m.read_manifests(LocalStore(v2), sizes, sizes, workers=8)) == 600


@pytest.mark.parametrize("slow", [-1.0, 3600.0])
def test_unreadable_data_among_many(tmp_path, monkeypatch, slow):
    monkeypatch.setattr(m, "_SLOW_READ", slow)
    monkeypatch.setattr(m, "_SWITCHING_SHARE", 0.0)
    v2 = str(tmp_path)
    sizes = stored_images(v2, 300)
    broken = hashlib.sha256(b"broken").digest()
    os.makedirs(os.path.join(v2, layout.blob_data(broken)))  # a directory where data should be
    sizes[broken] = 4096
    parsed = m.read_manifests(LocalStore(v2), sizes, sizes)
    assert parsed[broken].unreadable
    assert sum(isinstance(p, m.Manifest) for p in parsed.values()) == 300


class _Paced:
    """A directory's reads, 1 ms longer each: spent computing (as a pause of the cycle collector) or waiting."""

    def __init__(self, root: str, waiting: bool) -> None:
        self.store = LocalStore(root)
        self.waiting = waiting
        self.threads: set[str] = set()

    def read(self, path: str, limit: int, expected: int) -> bytes:
        self.threads.add(threading.current_thread().name)
        if self.waiting:
            time.sleep(0.001)
        else:
            until = time.thread_time() + 0.001
            while time.thread_time() < until:
                pass
        return self.store.read(path, limit, expected)


@pytest.mark.parametrize("waiting", [False, True])
def test_reads_go_to_threads_when_they_wait_not_when_they_compute(tmp_path, waiting):
    v2 = str(tmp_path)
    sizes = stored_images(v2, 400)
    paced = _Paced(v2, waiting)
    assert len(m.read_manifests(paced, sizes, sizes, workers=4)) == 400
    assert (len(paced.threads) > 1) is waiting, paced.threads


def test_time_lost_to_a_busy_core_is_not_slow_storage(tmp_path, monkeypatch):
    """Another process on the same core (the walkers, while the walk goes on) makes reads from the page
    cache take longer than they compute, yet none waits on storage: they stay in this thread."""
    v2 = str(tmp_path)
    sizes = stored_images(v2, 1500)
    monkeypatch.setattr(m, "_SLOW_READ", 1e-7)  # any time not spent computing would count
    # Three batches, each longer than the scheduler's slice: each is preempted, and the first two decide.
    monkeypatch.setattr(m, "_BATCH_MIN", 500)
    monkeypatch.setattr(m, "_BATCH_MAX", 500)

    class NoThreads:
        def __init__(self, *args, **kwargs):
            raise AssertionError("reads from the page cache went to threads")

    monkeypatch.setattr(m, "ThreadPoolExecutor", NoThreads)
    m.read_manifests(LocalStore(v2), sizes, sizes, workers=8)  # warm: every read from the page cache
    cores = os.sched_getaffinity(0)
    core = min(cores)
    hog = subprocess.Popen([sys.executable, "-c", f"import os\nos.sched_setaffinity(0, {{{core}}})\nwhile True: pass"])
    try:
        os.sched_setaffinity(0, {core})  # this thread alone, beside the busy process
        time.sleep(0.2)
        started, computing = time.perf_counter(), time.thread_time()
        assert len(m.read_manifests(LocalStore(v2), sizes, sizes, workers=8)) == 1500
        waited = (time.perf_counter() - started) - (time.thread_time() - computing)
    finally:
        os.sched_setaffinity(0, cores)
        hog.kill()
        hog.wait()
    assert waited > 1e-7 * 1500 * 10, "the busy process never took the core: nothing was measured"
