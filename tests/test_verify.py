"""--verify's hashing: every blob read whole, in batches on threads or in one thread, alike."""

import hashlib
import os

import pytest

from fsck import layout
from fsck import verify as v
from fsck.store import LocalStore


def store(v2, content: bytes, algorithm: str = "sha256", stored: bytes | None = None) -> bytes:
    digest = hashlib.new(algorithm, content).digest()
    path = os.path.join(v2, layout.blob_data(digest))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(content if stored is None else stored)
    return digest


def sizes(v2, digests):
    return {d: os.path.getsize(os.path.join(v2, layout.blob_data(d))) for d in digests}


@pytest.mark.parametrize("workers", [1, 2, 8])
def test_corrupt_blobs_found_among_many(tmp_path, workers):
    v2 = str(tmp_path)
    good = [store(v2, f"blob {n}".encode() * (n % 50 + 1)) for n in range(700)]
    bad = [store(v2, f"bad {n}".encode(), stored=f"bad {n}!".encode()) for n in range(5)]
    result = v.verify_blobs(LocalStore(v2), sizes(v2, good + bad), workers=workers)
    assert result.corrupt == frozenset(bad)
    assert result.unreadable == ()


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
