"""Re-hash stored blobs against their digests (`--verify`).

hashlib releases the GIL while hashing, so threads use every core without the cost of
processes; reads are chunked so memory stays flat whatever the blob size.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from . import layout
from .layout import Digest

CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Verification:
    corrupt: frozenset[Digest]
    unreadable: tuple[tuple[str, str], ...]  # (path, reason)


def verify_blobs(
    v2: str, blobs: Mapping[Digest, int], progress: Callable[[int], None] | None = None, workers: int | None = None
) -> Verification:
    advance = progress or (lambda _n: None)

    def check(digest: Digest) -> tuple[Digest, bool | str]:
        algorithm = layout.algorithm_of(digest)
        hasher = hashlib.new(algorithm)
        try:
            fd = os.open(os.path.join(v2, layout.blob_data(digest)), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as error:
            return digest, error.strerror or str(error)
        try:
            with os.fdopen(fd, "rb", buffering=0) as handle:
                while chunk := handle.read(CHUNK):
                    hasher.update(chunk)
                    advance(len(chunk))
        except OSError as error:
            return digest, error.strerror or str(error)
        return digest, hasher.digest() == digest

    corrupt: set[Digest] = set()
    unreadable: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
        for digest, outcome in pool.map(check, list(blobs)):
            if outcome is False:
                corrupt.add(digest)
            elif isinstance(outcome, str):
                unreadable.append((layout.blob_data(digest), outcome))
    return Verification(frozenset(corrupt), tuple(unreadable))
