"""Re-hash stored blobs against their digests (`--verify`).

hashlib releases the GIL while hashing more than 2 KiB, so threads use every core on large
blobs without the cost of processes. On many small blobs the cost is per file, not per
byte, so each file costs as few calls as it can: it is opened relative to its algorithm's
directory (no walk down the whole path each time), read straight into a buffer its thread
reuses (no file object, no new buffer), and threads take blobs in batches, never one task
per blob. Memory stays flat whatever the blob size.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from . import layout
from .layout import Digest

CHUNK = 1 << 20
_BATCH_BLOBS = 256

_Outcome = bool | str  # True: matches; False: does not; str: why it could not be read


@dataclass(frozen=True, slots=True)
class Verification:
    corrupt: frozenset[Digest]
    unreadable: tuple[tuple[str, str], ...]  # (path, reason)


def verify_blobs(
    v2: str, blobs: Mapping[Digest, int], progress: Callable[[int], None] | None = None, workers: int | None = None
) -> Verification:
    advance = progress or (lambda _n: None)
    workers = workers or os.cpu_count() or 2

    def check(digest: Digest, buffer: bytearray, view: memoryview) -> _Outcome:
        hasher = hashlib.new(layout.algorithm_of(digest))
        try:
            fd = directories.open_data(digest)
        except OSError as error:
            return error.strerror or str(error)
        try:
            while size := os.readv(fd, [buffer]):
                hasher.update(view[:size])
                advance(size)
        except OSError as error:
            return error.strerror or str(error)
        finally:
            os.close(fd)
        return hasher.digest() == digest

    def check_batch(batch: list[Digest]) -> list[tuple[Digest, _Outcome]]:
        buffer = bytearray(CHUNK)  # one per batch, so one per thread at a time
        view = memoryview(buffer)
        return [(digest, check(digest, buffer, view)) for digest in batch]

    corrupt: set[Digest] = set()
    unreadable: list[tuple[str, str]] = []
    batches = _batches(blobs, workers)
    directories = _AlgorithmDirectories(v2)
    try:
        if workers <= 1 or len(batches) <= 1:
            _collect(map(check_batch, batches), corrupt, unreadable)
        else:
            with ThreadPoolExecutor(max_workers=min(workers, len(batches))) as pool:
                _collect(pool.map(check_batch, batches), corrupt, unreadable)
    finally:
        directories.close()
    return Verification(frozenset(corrupt), tuple(unreadable))


def _collect(checked: Iterable[list[tuple[Digest, _Outcome]]], corrupt: set[Digest], unreadable: list[tuple[str, str]]) -> None:
    for batch in checked:
        for digest, outcome in batch:
            if outcome is False:
                corrupt.add(digest)
            elif isinstance(outcome, str):
                unreadable.append((layout.blob_data(digest), outcome))


def _batches(blobs: Mapping[Digest, int], workers: int) -> list[list[Digest]]:
    """Up to 256 blobs a batch, and no more bytes than leaves four batches per worker: many
    small blobs share a hand-off, and a few large ones still spread over every core."""
    limit = max(CHUNK, sum(blobs.values()) // (max(workers, 1) * 4))
    batches: list[list[Digest]] = []
    batch: list[Digest] = []
    held = 0
    for digest, size in blobs.items():
        batch.append(digest)
        held += size
        if len(batch) >= _BATCH_BLOBS or held >= limit:
            batches.append(batch)
            batch, held = [], 0
    if batch:
        batches.append(batch)
    return batches


class _AlgorithmDirectories:
    """`blobs/<algorithm>` held open, so that each blob is opened by its last three components.

    Where such a directory cannot be opened, its blobs are opened by their whole path, which
    then fails (or not) for each blob on its own, as it would have without this."""

    def __init__(self, v2: str) -> None:
        self.v2 = v2
        self.fds: dict[str, int] = {}
        for algorithm in layout.HEX_LENGTH:
            try:
                path = os.path.join(v2, layout.BLOBS, algorithm)
                self.fds[algorithm] = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            except OSError:
                pass

    def open_data(self, digest: Digest) -> int:
        fd = self.fds.get(layout.algorithm_of(digest))
        if fd is None:
            return os.open(os.path.join(self.v2, layout.blob_data(digest)), os.O_RDONLY | os.O_NOFOLLOW)
        return os.open(layout.blob_data_in_algorithm_dir(digest), os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
