"""Re-hash stored blobs against their digests (`--verify`).

hashlib releases the GIL while hashing more than 2 KiB, so threads use every core on large
blobs without the cost of processes. On many small blobs the cost is per file, not per
byte, so each file costs as few calls as it can: the store holds each `blobs/<algorithm>`
open and opens a blob below it (no walk down the whole path each time), each thread reads
into a buffer it reuses (no file object, no new buffer), and threads take blobs in
batches, never one task per blob. Memory stays flat whatever the blob size.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from . import layout
from .layout import Digest
from .store import Store

CHUNK = 1 << 20
_BATCH_BLOBS = 256


class _Stopped(Exception):
    """Hashing abandoned: the caller is on its way out."""


_Outcome = bool | str  # True: matches; False: does not; str: why it could not be read


@dataclass(frozen=True, slots=True)
class Verification:
    corrupt: frozenset[Digest]
    unreadable: tuple[tuple[str, str], ...]  # (path, reason)


def verify_blobs(
    store: Store, blobs: Mapping[Digest, int], progress: Callable[[int], None] | None = None, workers: int | None = None
) -> Verification:
    report = progress or (lambda _n: None)
    stopping = threading.Event()  # set when the caller is interrupted: the threads stop at their next chunk

    def advance(n: int) -> None:
        if stopping.is_set():
            raise _Stopped
        report(n)

    workers = workers or os.cpu_count() or 2
    algorithm_dirs = {algorithm: layout.join(layout.BLOBS, algorithm) for algorithm in layout.HEX_LENGTH}

    def check(digest: Digest, buffer: memoryview) -> _Outcome:
        algorithm = layout.algorithm_of(digest)
        below = layout.blob_data_in_algorithm_dir(digest)
        try:
            return reader.digest(algorithm_dirs[algorithm], below, algorithm, buffer, advance) == digest
        except OSError as error:
            return error.strerror or str(error)

    def check_batch(batch: list[Digest]) -> list[tuple[Digest, _Outcome]]:
        buffer = memoryview(bytearray(CHUNK))  # one per batch, so one per thread at a time
        return [(digest, check(digest, buffer)) for digest in batch]

    corrupt: set[Digest] = set()
    unreadable: list[tuple[str, str]] = []
    batches = _batches(blobs, workers)
    with store.reader(algorithm_dirs.values()) as reader:
        if workers <= 1 or len(batches) <= 1:
            _collect(map(check_batch, batches), corrupt, unreadable)
        else:
            pool = ThreadPoolExecutor(max_workers=min(workers, len(batches)))
            try:
                _collect(pool.map(check_batch, batches), corrupt, unreadable)
            except BaseException:  # Ctrl-C: not after every batch is hashed, which can take hours
                stopping.set()
                raise
            finally:
                pool.shutdown(cancel_futures=True)
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

