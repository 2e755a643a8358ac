"""Re-hash stored blobs against their digests (`--verify`, `--verify-subset N/M`).

On many small blobs the cost is per file, not per byte, and that part holds the GIL: threads
would hash them on one core. So on a local store the small blobs go to worker processes
(forked: each inherits the store's reader, the held directories and the batches, and is told
only which batch to take next), one per core, each returning the digests that do not match and
the blobs it could not read. Large blobs are hashed on threads: hashlib releases the GIL while
hashing more than 2 KiB, and a thread reports progress chunk by chunk. A store whose reader
cannot be shared with a forked child (anything but the local file system) uses threads for all.

Each file costs as few calls as it can: the store holds each `blobs/<algorithm>` open and opens
a blob below it (no walk down the whole path each time), each worker reads into a buffer it
reuses (no file object, no new buffer), and workers take blobs in batches, never one task per
blob. Memory stays flat whatever the blob size: every blob is read in chunks of `CHUNK`.
"""

from __future__ import annotations

import gc
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from itertools import islice
from typing import TYPE_CHECKING

from . import layout
from .layout import Digest
from .store import PoolKind, Reader, Store

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

CHUNK = 1 << 20
_BATCH_BLOBS = 256
SMALL = 1 << 18  # up to this size a blob's per-file cost (GIL held) weighs against its hashing (GIL released)
_PROCESS_BATCH_BYTES = 8 << 20  # progress moves at least this often per worker process
_TASKS_AHEAD = 2  # batches handed to each process before it asks for more: it never waits for the next one
_LARGEST_PARTS = 1 << 32


class _Stopped(Exception):
    """Hashing abandoned: the caller is on its way out."""


class WorkerLost(OSError):
    """A hashing process ended without reporting a batch it took (killed from outside, out of memory)."""


_Outcome = bool | str  # True: matches; False: does not; str: why it could not be read
_Checked = list[tuple[Digest, _Outcome]]  # of one batch: the blobs that do not match or could not be read


@dataclass(frozen=True, slots=True)
class Verification:
    corrupt: frozenset[Digest]
    unreadable: tuple[tuple[str, str], ...]  # (path, reason)


_SUBSET = re.compile(r"([0-9]{1,20})/([0-9]{1,20})")  # more digits are out of range anyway


@dataclass(frozen=True, slots=True)
class Subset:
    """Slice `part` of `parts` (restic's --read-data-subset N/M): the blobs whose digest, read as a
    big-endian integer, is `part - 1` modulo `parts`. Stable: the same blobs every night, and the
    `parts` slices together are every blob once."""

    part: int  # N, from 1 to parts
    parts: int  # M

    def __post_init__(self) -> None:
        if not 1 <= self.parts <= _LARGEST_PARTS:
            raise ValueError(f"M must be from 1 to {_LARGEST_PARTS}")
        if not 1 <= self.part <= self.parts:
            raise ValueError(f"N must be from 1 to M ({self.parts})")

    @classmethod
    def parse(cls, text: str) -> Subset:
        matched = _SUBSET.fullmatch(text.strip())
        if matched is None:
            raise ValueError("not N/M (two whole numbers, e.g. 1/7)")
        return cls(int(matched[1]), int(matched[2]))

    def __contains__(self, digest: Digest) -> bool:
        return int.from_bytes(digest, "big") % self.parts == self.part - 1

    def __str__(self) -> str:
        return f"{self.part}/{self.parts}"


def in_subset(blobs: Mapping[Digest, int], subset: Subset | None) -> Mapping[Digest, int]:
    """The blobs `--verify-subset` re-hashes (all of them without one)."""
    if subset is None:
        return blobs
    return {digest: size for digest, size in blobs.items() if digest in subset}


def verify_blobs(
    store: Store, blobs: Mapping[Digest, int], progress: Callable[[int], None] | None = None,
    workers: int | None = None, *, processes: bool | None = None,
) -> Verification:
    """`processes`: hash the small blobs in worker processes (default: where the store is best read by
    processes, a local disk, and over one core; on network storage threads wait on it as well)."""
    report = progress or (lambda _n: None)
    concurrency = store.concurrency()
    # Where each read waits on the network, as many in flight as the store suits; else a hasher per core.
    workers = workers or (concurrency.jobs if concurrency.kind is PoolKind.THREADS else os.cpu_count() or 2)
    if processes is None:
        processes = concurrency.kind is PoolKind.PROCESSES and workers > 1 and hasattr(os, "fork")
    small = {d: s for d, s in blobs.items() if s <= SMALL} if processes else {}
    large = {d: s for d, s in blobs.items() if s > SMALL} if processes else blobs
    algorithm_dirs = {algorithm: layout.join(layout.BLOBS, algorithm) for algorithm in layout.HEX_LENGTH}
    checked: list[_Checked] = []
    with store.reader(algorithm_dirs.values()) as reader:
        if small:
            batches = _batches(small, workers, _PROCESS_BATCH_BYTES)
            if len(batches) > 1:
                checked.extend(_in_processes(reader, algorithm_dirs, batches, workers, report))
            else:
                large = blobs  # one batch: a process would cost more than it saves
        checked.extend(_on_threads(reader, algorithm_dirs, large, workers, report))
    corrupt: set[Digest] = set()
    unreadable: list[tuple[Digest, str]] = []
    for batch in checked:
        for digest, outcome in batch:
            if outcome is False:
                corrupt.add(digest)
            elif isinstance(outcome, str):
                unreadable.append((digest, outcome))
    if unreadable and processes:  # small and large blobs were read apart: back to the order they were given in
        position = {digest: index for index, digest in enumerate(blobs)}
        unreadable.sort(key=lambda item: position[item[0]])
    return Verification(frozenset(corrupt), tuple((layout.blob_data(d), reason) for d, reason in unreadable))


def _check(
    reader: Reader, algorithm_dirs: Mapping[str, str], batch: list[Digest], buffer: memoryview,
    advance: Callable[[int], None],
) -> _Checked:
    checked: _Checked = []
    for digest in batch:
        algorithm = layout.algorithm_of(digest)
        try:
            outcome: _Outcome = reader.digest(
                algorithm_dirs[algorithm], layout.blob_data_in_algorithm_dir(digest), algorithm, buffer, advance
            ) == digest
        except OSError as error:
            outcome = error.strerror or str(error)
        if outcome is not True:
            checked.append((digest, outcome))
    return checked


def _on_threads(
    reader: Reader, algorithm_dirs: Mapping[str, str], blobs: Mapping[Digest, int], workers: int,
    report: Callable[[int], None],
) -> list[_Checked]:
    stopping = threading.Event()  # set when the caller is interrupted: the threads stop at their next chunk

    def advance(n: int) -> None:
        if stopping.is_set():
            raise _Stopped
        report(n)

    def check_batch(batch: list[Digest]) -> _Checked:
        return _check(reader, algorithm_dirs, batch, memoryview(bytearray(CHUNK)), advance)  # a buffer per batch

    batches = _batches(blobs, workers)
    if workers <= 1 or len(batches) <= 1:
        return list(map(check_batch, batches))
    pool = ThreadPoolExecutor(max_workers=min(workers, len(batches)))
    try:
        return list(pool.map(check_batch, batches))
    except BaseException:  # Ctrl-C: not after every batch is hashed, which can take hours
        stopping.set()
        raise
    finally:
        pool.shutdown(cancel_futures=True)


def _in_processes(
    reader: Reader, algorithm_dirs: Mapping[str, str], batches: list[list[Digest]], workers: int,
    report: Callable[[int], None],
) -> list[_Checked]:
    """Each batch's blobs that do not match or could not be read, in batch order. A batch goes to
    whichever process is free; on any exception (Ctrl-C) the processes are killed at once."""
    from multiprocessing.connection import Pipe, wait  # only with --verify: not at every start-up

    children: list[_Child] = []
    checked: list[_Checked | None] = [None] * len(batches)
    waiting = iter(range(len(batches)))
    finished = False
    try:
        with _interrupts_held():  # a Ctrl-C now is raised once every child forked is in `children`, to be killed
            for _ in range(min(workers, len(batches))):
                tasks_out, tasks_in = Pipe(duplex=False)
                results_out, results_in = Pipe(duplex=False)
                parent_ends = [tasks_in, results_out, *(end for c in children for end in (c.tasks, c.results))]
                serve = partial(_serve, reader, algorithm_dirs, batches, tasks_out, results_in, parent_ends)
                pid = _fork(serve)
                tasks_out.close()
                results_in.close()
                children.append(_Child(pid, tasks_in, results_out))
                for index in _take(waiting, _TASKS_AHEAD):
                    children[-1].tasks.send(index)
        by_results = {child.results: child for child in children}
        remaining = len(batches)
        while remaining:
            for ready in wait(list(by_results)):
                try:
                    index, hashed, found = ready.recv()
                except EOFError:
                    lost = by_results[ready].pid
                    raise WorkerLost(f"a hashing process (pid {lost}) ended before it was done") from None
                checked[index] = found
                remaining -= 1
                report(hashed)
                for following in _take(waiting, 1):
                    by_results[ready].tasks.send(following)
        finished = True
    finally:
        for child in children:
            if finished:
                with suppress(OSError):  # gone already: nothing left to tell it
                    child.tasks.send(None)
            else:
                os.kill(child.pid, signal.SIGKILL)  # ours, and not reaped yet: the pid cannot be another's
            child.tasks.close()
            child.results.close()
        for child in children:
            os.waitpid(child.pid, 0)
    return [c for c in checked if c is not None]


@dataclass(frozen=True, slots=True)
class _Child:
    pid: int
    tasks: Connection  # batch indices to it, None to stop
    results: Connection  # (batch index, bytes hashed, what does not match) from it


def _take(indices: Iterator[int], count: int) -> list[int]:
    return list(islice(indices, count))


@contextmanager
def _interrupts_held() -> Iterator[None]:
    """A SIGINT within is raised (by the handler in place before) when the block ends. Only the main
    thread runs signal handlers: elsewhere nothing can interrupt the block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received and callable(previous):
            previous(signal.SIGINT, None)


def _fork(serve: Callable[[], None]) -> int:
    """A child process that runs `serve` and exits, never returning into the caller's code. Called
    with interrupts held; the child ignores SIGINT: Ctrl-C at a terminal goes to the whole process
    group, and only the parent must act on it (it kills the children)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            gc.disable()  # a collection would touch, and so copy, the whole inherited heap
            serve()
            code = 0
        finally:
            os._exit(code)
    return pid


def _serve(
    reader: Reader, algorithm_dirs: Mapping[str, str], batches: list[list[Digest]], tasks: Connection,
    results: Connection, parent_ends: list[Connection],
) -> None:
    """In a child: hash the batches the parent names until it says stop (None) or goes away."""
    for end in parent_ends:  # closed here, so that when the parent goes, every child sees the end of its tasks
        end.close()
    buffer = memoryview(bytearray(CHUNK))
    hashed = [0]

    def count(n: int) -> None:
        hashed[0] += n

    while True:
        try:
            index = tasks.recv()
        except EOFError:
            return
        if index is None:
            return
        hashed[0] = 0
        found = _check(reader, algorithm_dirs, batches[index], buffer, count)
        results.send((index, hashed[0], found))


def _batches(blobs: Mapping[Digest, int], workers: int, most_bytes: int | None = None) -> list[list[Digest]]:
    """Up to 256 blobs a batch, and no more bytes than leaves four batches per worker (nor than
    `most_bytes`): many small blobs share a hand-off, and a few large ones still spread over every core."""
    limit = max(CHUNK, sum(blobs.values()) // (max(workers, 1) * 4))
    if most_bytes is not None:
        limit = min(limit, most_bytes)
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

