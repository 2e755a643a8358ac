"""--verify's hashing: every blob read whole, in batches on threads, in one thread or in worker
processes, alike; Ctrl-C stops the worker processes with the command."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clirun import DEMO, REPO

from fsck import layout
from fsck import verify as v
from fsck.store import LocalStore, MemoryStore
from tests.harness import tree

WAYS = [{"workers": 1}, {"workers": 2, "processes": False}, {"workers": 8, "processes": False},
        {"workers": 2, "processes": True}, {"workers": 3, "processes": True}]


def store(v2, content: bytes, algorithm: str = "sha256", stored: bytes | None = None) -> bytes:
    digest = hashlib.new(algorithm, content).digest()
    path = os.path.join(v2, layout.blob_data(digest))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(content if stored is None else stored)
    return digest


def sizes(v2, digests):
    return {d: os.path.getsize(os.path.join(v2, layout.blob_data(d))) for d in digests}


@pytest.mark.parametrize("way", WAYS)
def test_corrupt_blobs_found_among_many(tmp_path, way):
    v2 = str(tmp_path)
    good = [store(v2, f"blob {n}".encode() * (n % 50 + 1)) for n in range(700)]
    bad = [store(v2, f"bad {n}".encode(), stored=f"bad {n}!".encode()) for n in range(5)]
    seen = []
    result = v.verify_blobs(LocalStore(v2), sizes(v2, good + bad), seen.append, **way)
    assert result.corrupt == frozenset(bad)
    assert result.unreadable == ()
    assert sum(seen) == sum(sizes(v2, good + bad).values())


def test_processes_and_threads_split_small_and_large_blobs_and_agree(tmp_path):
    v2 = str(tmp_path)
    small = [store(v2, os.urandom(n % 4000 + 1)) for n in range(1500)]
    large = [store(v2, os.urandom(v.SMALL + n)) for n in range(3)]
    bad = [store(v2, os.urandom(200), stored=os.urandom(200)), store(v2, os.urandom(v.SMALL + 9), stored=b"x" * (v.SMALL + 9))]
    gone = hashlib.sha256(b"gone").digest()
    blobs = {**sizes(v2, small + large + bad), gone: 10}
    results = {processes: v.verify_blobs(LocalStore(v2), blobs, workers=2, processes=processes) for processes in (True, False)}
    assert results[True] == results[False] == v.Verification(frozenset(bad), ((layout.blob_data(gone), os.strerror(2)),))


def test_unreadable_blobs_keep_their_order_from_worker_processes_and_threads(tmp_path):
    v2 = str(tmp_path)
    blobs, unreadable = {}, []
    for n in range(2000):
        blobs[store(v2, f"blob {n}".encode())] = 6
        if n % 7 == 0:  # missing: a small one, for a worker process
            unreadable.append(hashlib.sha256(f"gone {n}".encode()).digest())
            blobs[unreadable[-1]] = 9
        if n % 500 == 0:  # a directory in place of the data, said to be large: for a thread
            unreadable.append(hashlib.sha256(f"directory {n}".encode()).digest())
            os.makedirs(os.path.join(v2, layout.blob_data(unreadable[-1])))
            blobs[unreadable[-1]] = v.SMALL + 1
    result = v.verify_blobs(LocalStore(v2), blobs, workers=2, processes=True)
    assert [p for p, _ in result.unreadable] == [layout.blob_data(d) for d in unreadable]
    assert {reason for _, reason in result.unreadable} == {os.strerror(2), os.strerror(21)}


def test_only_a_local_store_forks_by_default(tmp_path, monkeypatch):
    contents = [f"blob {n}".encode() for n in range(600)]
    digests = [hashlib.sha256(c).digest() for c in contents]
    memory = MemoryStore(root="/mem")
    for digest, content in zip(digests, contents, strict=True):
        memory.put(layout.blob_data(digest), content)
        store(str(tmp_path), content)
    forks = []
    real_fork = os.fork
    monkeypatch.setattr(os, "fork", lambda: forks.append(1) or real_fork())
    assert v.verify_blobs(memory, dict.fromkeys(digests, 7), workers=2) == v.Verification(frozenset(), ())
    assert forks == []
    assert v.verify_blobs(LocalStore(str(tmp_path)), dict.fromkeys(digests, 7), workers=2) == v.Verification(frozenset(), ())
    assert len(forks) == 2


def test_large_blobs_hashed_in_chunks_with_progress(tmp_path):
    v2 = str(tmp_path)
    contents = [os.urandom(v.CHUNK * 2 + 17), os.urandom(v.CHUNK), b"", os.urandom(3000)]
    digests = [store(v2, content) for content in contents]
    corrupt = store(v2, os.urandom(v.CHUNK + 5), stored=os.urandom(v.CHUNK + 5))
    seen = []
    result = v.verify_blobs(LocalStore(v2), sizes(v2, digests + [corrupt]), seen.append, workers=2)
    assert result.corrupt == frozenset({corrupt})
    assert sum(seen) == sum(len(c) for c in contents) + v.CHUNK + 5
    assert max(seen) <= v.CHUNK


def test_a_blob_grown_since_the_scan_is_hashed_whole(tmp_path):
    v2 = str(tmp_path)
    content = os.urandom(5000)
    digest = store(v2, content)
    assert v.verify_blobs(LocalStore(v2), {digest: 10}).corrupt == frozenset()
    grown = store(v2, b"short", stored=b"short and then some")
    assert v.verify_blobs(LocalStore(v2), {grown: 5}).corrupt == frozenset({grown})


def test_unreadable_and_missing_data_are_reported_by_path(tmp_path):
    v2 = str(tmp_path)
    good = store(v2, b"fine")
    directory = hashlib.sha256(b"a directory").digest()
    os.makedirs(os.path.join(v2, layout.blob_data(directory)))
    missing = hashlib.sha256(b"gone").digest()
    result = v.verify_blobs(LocalStore(v2), {good: 4, directory: 4096, missing: 7})
    assert result.corrupt == frozenset()
    assert dict(result.unreadable) == {
        layout.blob_data(directory): os.strerror(21),  # EISDIR
        layout.blob_data(missing): os.strerror(2),  # ENOENT
    }


def test_a_symbolic_link_as_data_is_not_followed(tmp_path):
    v2 = str(tmp_path)
    target = tmp_path / "elsewhere"
    target.write_bytes(b"content")
    digest = hashlib.sha256(b"content").digest()
    path = os.path.join(v2, layout.blob_data(digest))
    os.makedirs(os.path.dirname(path))
    os.symlink(target, path)
    result = v.verify_blobs(LocalStore(v2), {digest: 7})
    assert [p for p, _ in result.unreadable] == [layout.blob_data(digest)]


def test_other_algorithms_hash_with_their_own(tmp_path):
    v2 = str(tmp_path)
    sha512 = store(v2, b"x" * 100, "sha512")
    sha256 = store(v2, b"y" * 100)
    assert v.verify_blobs(LocalStore(v2), {sha512: 100, sha256: 100}) == v.Verification(frozenset(), ())


def test_no_blob_store_at_all(tmp_path):
    digest = hashlib.sha256(b"z").digest()
    result = v.verify_blobs(LocalStore(str(tmp_path)), {digest: 1})
    assert [p for p, _ in result.unreadable] == [layout.blob_data(digest)]


def test_batches_keep_every_blob_once_and_spread_large_ones():
    blobs = {bytes([n % 256, n // 256]) * 16: (v.CHUNK * 4 if n < 20 else 100) for n in range(1000)}
    batches = v._batches(blobs, workers=2)
    assert sorted(d for b in batches for d in b) == sorted(blobs)
    assert all(len(b) <= 256 for b in batches)
    assert len([b for b in batches if any(blobs[d] > 100 for d in b)]) >= 4  # over two cores


# Ctrl-C and lost workers, on the real command line.


@pytest.fixture(scope="module")
def many_blobs(tmp_path_factory):
    """The demo tree with 30,000 more blobs: a --verify long enough to catch its worker processes at work."""
    root = tree.copy_tree(DEMO, tmp_path_factory.mktemp("many") / "root")
    tree.add_orphan_blobs(root, 30_000)
    return root


def start_verifying(root):
    """`audit --verify` in a session of its own (a terminal's process group), and its hashing processes
    once they are there (the walk in one thread: its children are the hashing processes)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "fsck", "audit", str(root), "--json", "--verify", "--jobs", "1"], cwd=REPO, start_new_session=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    deadline = time.monotonic() + 120
    while len(pids := children.read_text().split()) < 2:
        assert process.poll() is None and time.monotonic() < deadline, "no hashing processes"
        time.sleep(0.001)
    return process, [int(pid) for pid in pids]


def gone(pid):
    """Ended: no such process, or one that only waits to be reaped (by init, when its parent is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_ctrl_c_at_the_terminal_while_hashing_in_processes_is_one_line_exit_32_and_no_process_left(many_blobs):
    process, workers = start_verifying(many_blobs)
    os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to the whole foreground group
    stdout, stderr = process.communicate(timeout=30)
    assert (process.returncode, stderr, stdout) == (32, "registry-fsck: interrupted\n", "")
    assert all(gone(pid) for pid in workers)


def test_a_hashing_process_killed_from_outside_is_an_operational_error(many_blobs):
    process, workers = start_verifying(many_blobs)
    os.kill(workers[0], signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=30)
    assert (process.returncode, stdout) == (8, "")
    assert stderr.startswith("registry-fsck: error: a hashing process") and stderr.count("\n") == 1, stderr
    assert all(gone(pid) for pid in workers)


def test_hashing_processes_end_when_the_command_is_killed(many_blobs):
    process, workers = start_verifying(many_blobs)
    process.kill()  # no clean-up in the parent: each child must see the end of its tasks
    process.communicate(timeout=30)
    deadline = time.monotonic() + 30
    while not all(gone(pid) for pid in workers):
        assert time.monotonic() < deadline, f"hashing processes left: {[p for p in workers if not gone(p)]}"
        time.sleep(0.01)
