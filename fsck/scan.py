"""One pass over the storage tree into an inventory. Records what is there; judges nothing.

Built for trees of millions of files: the store's listings with their d_type (no stat per
entry, except blob `data` and upload files, whose sizes are needed), digests held as raw
bytes, and no path kept that `layout` can rebuild from a repository name and a digest.

Directory symbolic links are followed, as the registry follows them (`blobs/` on another
disk, `docker/` on a mount), each real directory once: a link whose target holds it (a
loop) or is already in the tree (an alias) is recorded and not followed. Paths are the
registry's, through the links; links to files are recorded, never followed.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
import time
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime, timezone

from . import layout
from .layout import Digest, Digests, LinkContent, LinkDefect, StoredBlobs
from .store import Concurrency, Entry, EntryKind, PoolKind, Store


class LinkKind:
    LAYER = "layer"
    REVISION = "revision"
    CURRENT = "current"
    INDEX = "index"


@dataclass(frozen=True, slots=True)
class BadLink:
    """A link file that names no usable digest, or another digest than its path."""

    kind: str
    path: str
    path_digest: Digest | None  # None for a tag's current link
    content: LinkContent
    tag: str | None = None

    @property
    def may_name(self) -> set[Digest]:
        """Every digest this link may have been meant to name: its path's, and what its content holds."""
        return {d for d in (self.path_digest, self.content.digest, self.content.recoverable) if d is not None}


@dataclass(frozen=True, slots=True, init=False)
class Tag:
    name: str
    current: Digest | None  # None: missing or invalid (see the repository's bad_links)
    has_current_file: bool
    # Its index (entries whose link is valid and matches its path), None where that is the current target
    # alone, as it is for most tags (one set fewer a tag: 48 bytes): `index` gives it back either way.
    other_index: Digests | None

    def __init__(self, name: str, current: Digest | None, has_current_file: bool, index: Digests) -> None:
        alone = current is not None and len(index) == 1 and current in index
        set_name, set_current, set_has_current_file, set_other_index = _TAG_SLOTS
        set_name(self, name)
        set_current(self, current)
        set_has_current_file(self, has_current_file)
        set_other_index(self, None if alone else index)

    @property
    def index(self) -> Digests:
        if self.other_index is None:
            return Digests.in_order((self.current,))
        return self.other_index


_TAG_SLOTS = tuple(getattr(Tag, name).__set__ for name in ("name", "current", "has_current_file", "other_index"))


@dataclass(frozen=True, slots=True)
class Upload:
    upload_id: str
    started_at: datetime | None  # None: startedat missing or not RFC 3339
    modified_at: datetime
    size: int


@dataclass(slots=True)
class Repository:
    name: str
    has_layers_dir: bool = False
    has_manifests_dir: bool = False
    has_tags_dir: bool = False
    has_uploads_dir: bool = False
    # Sets while the walk fills them, `Digests` once the repository is walked.
    layer_links: AbstractSet[Digest] = field(default_factory=set)
    revisions: AbstractSet[Digest] = field(default_factory=set)
    tags: dict[str, Tag] = field(default_factory=dict)
    # Lists while the walk fills them, tuples once the repository is walked (most are empty: one shared
    # empty tuple, not two empty lists a repository).
    uploads: Sequence[Upload] = field(default_factory=list)
    bad_links: Sequence[BadLink] = field(default_factory=list)
    # Canonical digests that links under another algorithm name (legitimate aliases): never judged.
    aliases: AbstractSet[Digest] = field(default_factory=set)
    fully_read: bool = True  # False: part of it was unreadable, so nothing in it can be judged garbage

    def named_manifests(self) -> set[Digest]:
        """Every digest its valid manifest links name: revisions, tag index entries, current targets."""
        named = set(self.revisions)
        for tag in self.tags.values():
            named.update(tag.index)
            if tag.current is not None:
                named.add(tag.current)
        return named

    @property
    def parts(self) -> tuple[str, ...]:
        """Its own directories (others may be repositories nested inside it)."""
        present = (self.has_layers_dir, self.has_manifests_dir, self.has_uploads_dir)
        return tuple(name for name, here in zip(layout.REPOSITORY_MARKERS, present, strict=True) if here)


@dataclass(frozen=True, slots=True)
class Oddity:
    """Something with no place in the layout: kept for the report, never touched."""

    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class FollowedLink:
    """A directory symbolic link the walk went through: the registry's path, and where it leads."""

    path: str
    target: str  # the real directory


@dataclass(frozen=True, slots=True)
class LeftoverFile:
    path: str
    size: int


@dataclass(slots=True)
class Inventory:
    v2: str
    # digest -> size of data: a dict while the walk fills it, `StoredBlobs` once every blob is known
    blobs: Mapping[Digest, int] = field(default_factory=dict)
    repositories: dict[str, Repository] = field(default_factory=dict)
    oddities: list[Oddity] = field(default_factory=list)
    unreadable: list[Oddity] = field(default_factory=list)
    # What the registry may use but this tool does not read: symbolic links (the registry follows
    # them), special files, a blob store that is missing. Verdicts that depend on them are unsafe.
    unknown: list[Oddity] = field(default_factory=list)
    empty_dirs: list[str] = field(default_factory=list)  # topmost directories holding no file at all
    leftovers: list[LeftoverFile] = field(default_factory=list)  # *.tmp of interrupted writes
    followed: list[FollowedLink] = field(default_factory=list)  # directory links walked through, in walk order
    blobs_dir_readable: bool = True

    @property
    def complete(self) -> bool:
        return not self.unreadable and not self.unknown


Progress = Callable[[int], None]


# Told of repositories as the walk merges them, once every blob is known: (the inventory, their names).
Walked = Callable[[Inventory, list[str]], None]


def scan(
    store: Store, progress: Progress | None = None, concurrency: Concurrency | None = None,
    walked: Walked | None = None,
) -> Inventory:
    """The whole tree; with a concurrency of more than one job, blob fan-out directories and
    repositories are walked as units on a pool (processes or threads, as the store suits), the
    rest in this thread, and the parts merged in walk order: the inventory is the one a walk in
    one thread makes. A unit that meets a symbolic link cannot tell alone whether it is a loop
    or an alias of what another unit walks: then the whole tree is walked again in one thread.
    `walked`: told of the repositories as a walk on a pool merges them (a walk in one thread tells none)."""
    report = progress or (lambda _n: None)
    chosen = concurrency or store.concurrency()
    if chosen.jobs > 1 and chosen.kind is not PoolKind.SERIAL:
        units = _Units(store, chosen)
        try:
            walker = _Walker(store, Inventory(store.root), report, units)
            walker.top()
            units.finish(walker, walked)
            units.close()
            walker.blobs_known()
            return walker.inventory
        except _NeedsOneThread:
            units.close()
        except BrokenProcessPool:  # a worker died: killed from outside, or out of memory
            units.stop()
            raise WalkerLost("a walker process ended before it was done (killed?)") from None
        except BaseException:
            units.stop()
            raise
    walker = _Walker(store, Inventory(store.root), report)
    walker.top()
    walker.blobs_known()
    return walker.inventory


class WalkerLost(OSError):
    """A walker process ended before its part of the tree was done (killed from outside, out of memory)."""


class _NeedsOneThread(Exception):
    """A unit met a symbolic link: whether it loops or aliases is a question of the whole walk."""


@dataclass(frozen=True, slots=True)
class _Unit:
    kind: str  # "blobs": blob fan-out directories; "repositories": a batch of repositories
    items: tuple  # ("blobs") (relative, algorithm, fan_out); ("repositories") (relative, name, parts)


@dataclass(slots=True)
class _Part:
    """What a unit found: its own inventory, each item's answer, and how many directories it listed.
    From a walker process, the inventory comes packed (`_Packed`)."""

    inventory: Inventory | _Packed
    answers: list
    listed: int


@dataclass(frozen=True, slots=True)
class _Packed:
    """A unit's inventory for the trip back from a walker process: the digests of each set joined into
    one bytes object, blob sizes in one array. Unpickled, a part is a few large objects, not one per
    digest: the walk's process then makes one object per digest, the one it keeps, and the parts'
    copies leave no holes behind in its heap."""

    blobs: bytes  # packed digests, in digest order
    sizes: array  # of "q", the same order
    repositories: tuple  # of _pack_repository's tuples, in the dict's order
    oddities: list[Oddity]
    unreadable: list[Oddity]
    unknown: list[Oddity]
    empty_dirs: list[str]
    leftovers: list[LeftoverFile]


_VARIABLE = 0  # the first byte of packed digests of several widths: each is preceded by its own


def _pack(digests) -> bytes:
    """Digests as one bytes object: a width byte, then each digest; or `_VARIABLE`, then each digest
    after its own width byte."""
    listed = list(digests)
    if not listed:
        return b""
    width = len(listed[0])
    if all(len(digest) == width for digest in listed):
        return bytes((width,)) + b"".join(listed)
    return bytes((_VARIABLE,)) + b"".join(bytes((len(digest),)) + digest for digest in listed)


def _unpacked(packed: bytes) -> list[Digest]:
    if not packed:
        return []
    width = packed[0]
    if width != _VARIABLE:
        return [packed[start : start + width] for start in range(1, len(packed), width)]
    digests, at = [], 1
    while at < len(packed):
        width = packed[at]
        digests.append(packed[at + 1 : at + 1 + width])
        at += 1 + width
    return digests


def _pack_inventory(inventory: Inventory) -> _Packed:
    blobs, sizes = layout.in_digest_order(inventory.blobs)
    return _Packed(
        _pack(blobs), sizes,
        tuple(_pack_repository(repository) for repository in inventory.repositories.values()),
        inventory.oddities, inventory.unreadable, inventory.unknown, inventory.empty_dirs, inventory.leftovers,
    )


def _pack_set(digests: AbstractSet[Digest]) -> bytes:
    """A set in order, as `Digests` holds it: the merge takes it as it comes."""
    return _pack(digests if isinstance(digests, Digests) else sorted(digests))


def _pack_repository(repository: Repository) -> tuple:
    return (
        repository.name, repository.has_layers_dir, repository.has_manifests_dir, repository.has_tags_dir,
        repository.has_uploads_dir, _pack_set(repository.layer_links), _pack_set(repository.revisions),
        tuple(
            (tag.name, tag.current, tag.has_current_file, _pack_set(tag.index)) for tag in repository.tags.values()
        ),
        repository.uploads, repository.bad_links, _pack_set(repository.aliases), repository.fully_read,
    )


def _leave_ctrl_c() -> None:
    """In a walker process: a Ctrl-C reaches the whole process group, and it is the command's to handle
    (it stops the pool); a walker that died of it would only add a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _walk_unit(unit: _Unit, store: Store, packed: bool = False) -> _Part:
    listed = 0

    def count(n: int) -> None:
        nonlocal listed
        listed += n

    walker = _Walker(store, Inventory(store.root), count, in_unit=True)
    if unit.kind == "blobs":
        answers = [walker.blob_prefix(relative, algorithm, fan_out) for relative, algorithm, fan_out in unit.items]
    else:
        answers = []
        for relative, name, parts in unit.items:
            walker.repository(relative, name, parts)
            answers.append(None)
    return _Part(_pack_inventory(walker.inventory) if packed else walker.inventory, answers, listed)


# Units are queued until there is enough work to pay for starting a pool (a small tree is walked
# in this thread through the same units), or the walk turns out slow.
_POOL_AFTER_UNITS = 64
_POOL_AFTER_SECONDS = 0.2
_REPOSITORIES_PER_PROCESS_UNIT = 16  # a hand-off between processes costs a pickle each way
# Units handed to walker processes and not yet merged, per job: enough that the walkers seldom wait for
# this process to merge, few enough that the parts done ahead of the one being merged do not pile up
# here. While this process walks the namespaces it merges nothing: where that takes longer than the
# walkers take for the first window of units (many repositories on few cores), they wait for it. Threads
# (a network store) walk slower than this process merges: every unit goes to them as it is found.
_WINDOW_PER_JOB = 4


class _Units:
    """Units handed to a pool, merged back into the walk in the order they were queued."""

    def __init__(self, store: Store, concurrency: Concurrency) -> None:
        self.store = store
        self.concurrency = concurrency
        self.started = time.perf_counter()
        self.pool: Executor | None = None
        self.queued: list[tuple[_Unit, Callable[[list], None] | None]] = []
        self.pending: list[tuple[Future | _Unit, Callable[[list], None] | None, str]] = []  # and the unit's kind
        self.batch: list[tuple] = []
        processes = concurrency.kind is PoolKind.PROCESSES
        self.window = max(2, concurrency.jobs * _WINDOW_PER_JOB) if processes else sys.maxsize

    @property
    def _packed(self) -> bool:
        """Whether parts cross a process boundary (pickled): then they come packed."""
        return self.concurrency.kind is PoolKind.PROCESSES

    def _per_repository_unit(self) -> int:
        return _REPOSITORIES_PER_PROCESS_UNIT if self.concurrency.kind is PoolKind.PROCESSES else 1

    def blob_prefix(self, relative: str, algorithm: str, fan_out: str, then: Callable[[list], None]) -> None:
        self._queue(_Unit("blobs", ((relative, algorithm, fan_out),)), then)

    def repository(self, relative: str, name: str, parts: tuple) -> None:
        self.batch.append((relative, name, parts))
        if len(self.batch) >= self._per_repository_unit():
            self._flush_repositories()

    def _flush_repositories(self) -> None:
        if self.batch:
            self._queue(_Unit("repositories", tuple(self.batch)), None)
            self.batch = []

    def _queue(self, unit: _Unit, then: Callable[[list], None] | None) -> None:
        if self.pool is None and (
            len(self.queued) >= _POOL_AFTER_UNITS or time.perf_counter() - self.started > _POOL_AFTER_SECONDS
        ):
            self._start_pool()
        if self.pool is None or len(self.pending) >= self.window:  # the rest waits for `finish` to merge
            self.queued.append((unit, then))
        else:
            self.pending.append((self._submit(unit), then, unit.kind))

    def _submit(self, unit: _Unit) -> Future:
        assert self.pool is not None
        return self.pool.submit(_walk_unit, unit, self.store, self._packed)

    def _start_pool(self) -> None:
        if self.concurrency.kind is PoolKind.THREADS:
            self.pool = ThreadPoolExecutor(self.concurrency.jobs, thread_name_prefix="scan")
            self._submit_queued()
            return
        # fork: the workers start with this process's imports, not a fresh interpreter each. The first
        # submit forks them all; a Ctrl-C in the middle would reach a child before it ignores Ctrl-C, or
        # leave workers that no manager thread ever stops: it waits until every worker is there.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self.pool = ProcessPoolExecutor(
                self.concurrency.jobs, mp_context=multiprocessing.get_context("fork"), initializer=_leave_ctrl_c,
            )
            self._submit_queued()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def _submit_queued(self) -> None:
        room = self.window - len(self.pending)
        self.pending += [(self._submit(unit), then, unit.kind) for unit, then in self.queued[:room]]
        del self.queued[:room]

    def finish(self, walker: _Walker, walked: Walked | None = None) -> None:
        """Merge every unit, in the order queued, into the walker's inventory; hand each repository merged
        to `walked` once every blob is in too (what its manifests name can then be read)."""
        self._flush_repositories()
        work = [*self.pending, *((unit, then, unit.kind) for unit, then in self.queued)]
        submitted = len(self.pending)  # where the units not yet handed to the pool begin
        self.pending, self.queued = [], []
        last_blobs = max((at for at, (_, _, kind) in enumerate(work) if kind == "blobs"), default=-1)
        waiting: list[str] = []  # repositories merged before the last blobs
        for at in range(len(work)):
            while self.pool is not None and submitted < min(len(work), at + self.window):
                unit, then, kind = work[submitted]
                work[submitted] = (self._submit(unit), then, kind)
                submitted += 1
            job, then, _ = work[at]
            work[at] = None  # a part merged is let go at once, not when the whole walk is merged
            part = job.result() if isinstance(job, Future) else _walk_unit(job, self.store)
            del job
            names = walker.merge(part)
            if then is not None:
                then(part.answers)
            del part
            if walked is not None:
                waiting += names
                if at >= last_blobs and waiting:
                    walked(walker.inventory, waiting)
                    waiting = []
        if walker.seen is not None:
            walker._judge_stores(walker.seen)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def stop(self) -> None:
        """On the way out (Ctrl-C, an error): what the workers would still find is of no use, and waiting
        for them could outlast the user's patience; a worker process is ended at once."""
        if self.pool is None:
            return
        if isinstance(self.pool, ProcessPoolExecutor):
            for worker in list((getattr(self.pool, "_processes", None) or {}).values()):
                worker.terminate()
        # With every worker gone, the pool's own thread sees it at once and ends: waiting for it is short,
        # and leaves nothing for the interpreter's exit to stumble on.
        self.pool.shutdown(wait=True, cancel_futures=True)


_TMP_SUFFIX = ".tmp"


def _is_leftover(name: str) -> bool:
    # 3.1+ writes `<file>.<uuid>.tmp` and renames it into place.
    base = name.split(".", 1)[0]
    return name.endswith(_TMP_SUFFIX) and base in (layout.LINK, layout.DATA, layout.STARTEDAT)


_UNREADABLE = LinkContent(None, LinkDefect.UNREADABLE)
_STARTEDAT_BYTES = 128  # an RFC 3339 time, with room to spare


def _is_dir(entry: Entry) -> bool:
    """A directory, not a symbolic link to one (d_type; False when that cannot be told)."""
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _is_file(entry: Entry) -> bool:
    """A regular file, not a symbolic link to one (d_type; False when that cannot be told)."""
    try:
        return entry.is_file(follow_symlinks=False)
    except OSError:
        return False


def _within(path: str, directory: str) -> bool:
    """Whether the real path `path` is `directory` or below it."""
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _is_valid_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_NOT_YET_WALKED = Repository("", layer_links=Digests(), revisions=Digests(), aliases=Digests())

class _Walker:
    """Per-level walkers over the fixed layout; every method takes a path relative to v2."""

    def __init__(
        self, store: Store, inventory: Inventory, progress: Progress, units: _Units | None = None,
        in_unit: bool = False,
    ) -> None:
        self.store = store
        self.inventory = inventory
        self.progress = progress
        self.units = units  # where blob prefixes and repositories go, when walked on a pool
        self.in_unit = in_unit  # a unit's walker: a symbolic link is for the whole walk to judge
        self.seen: set[str] | None = None  # the stores v2 holds, once its listing is read
        # One bytes object per digest, however many blobs and links name it: a link's digest is the stored
        # blob's object once every blob is known (`stored`), else the one `others` keeps (this walk only).
        self.stored: StoredBlobs | None = None
        self.others: dict[Digest, Digest] = {}
        # Walker processes' blobs until every blob is known, one unit's after the other (each in digest
        # order, beginning at its start): no dict of every blob, with an int object a size, before
        # `stored` is made of them.
        self.blob_digests: list[Digest] = []
        self.blob_sizes = array("q")
        self.blob_starts = array("I")
        # One str per tag name across repositories ("latest", "v1" in thousands of them), as for digests.
        self.tag_names: dict[str, str] = {}
        # The real directories the walk covers: v2's, and each followed link's target.
        self.real_trees: list[str] = [store.real_path("")]

    # Helpers

    def _list(self, relative: str) -> list[Entry] | None:
        try:
            listed = self.store.list(relative)
        except OSError as error:
            self.inventory.unreadable.append(Oddity(relative, error.strerror or str(error)))
            return None
        self.progress(1)
        return listed

    def _odd(self, relative: str, reason: str) -> None:
        self.inventory.oddities.append(Oddity(relative, reason))

    def _classify(self, entry: Entry, relative: str) -> str | None:
        """'dir', 'file', or None after recording why the entry is not usable."""
        if not _is_valid_utf8(entry.name):
            self._odd(relative, "name is not valid UTF-8")
            return None
        if entry.is_symlink():
            return self._symlink(relative)
        try:
            if entry.is_dir(follow_symlinks=False):
                return "dir"
            if entry.is_file(follow_symlinks=False):
                return "file"
        except OSError as error:
            self._odd(relative, f"cannot tell what it is: {error.strerror}")
            return None
        self._odd(relative, "neither a regular file nor a directory")
        self.inventory.unknown.append(Oddity(relative, "special file"))
        return None

    def _symlink(self, relative: str) -> str | None:
        """'dir' for a directory link to follow; otherwise None after recording why it is not followed."""
        if self.in_unit:
            raise _NeedsOneThread(relative)
        led_to = self.store.stat(relative, follow_symlinks=True)
        if led_to is None or led_to.kind is not EntryKind.DIR:
            self._odd(relative, "symbolic link (never followed)")
            self.inventory.unknown.append(Oddity(relative, "symbolic link, not followed"))
            return None
        target = self.store.real_path(relative)
        if any(_within(target, tree) or _within(tree, target) for tree in self.real_trees):
            holder = self.store.real_path(relative.rpartition("/")[0])
            kind = "a loop: its target holds it" if _within(holder, target) else (
                "an alias: its target is already in the tree")
            reason = f"symbolic link to {target}, {kind} (not followed)"
            self._odd(relative, reason)
            self.inventory.unknown.append(Oddity(relative, reason))
            return None
        self.real_trees.append(target)
        self.inventory.followed.append(FollowedLink(relative, target))
        return "dir"

    def _digest(self, algorithm: str, hex_part: str) -> Digest | None:
        digest = layout.digest_key(algorithm, hex_part)
        return None if digest is None else self._intern(digest)

    def _intern(self, digest: Digest) -> Digest:
        if self.in_unit:  # the walk that merges the unit's part gives each digest its one object
            return digest
        stored = self.stored
        if stored is not None:
            at = stored.position(digest)
            if at >= 0:
                return stored.digests[at]
        return self.others.setdefault(digest, digest)

    def _shared(self, digests: Iterable[Digest]) -> list[Digest]:
        if self.stored is not None:
            return self.stored.shared(digests, self.others)
        keep = self.others.setdefault
        return [keep(digest, digest) for digest in digests]

    def blobs_known(self) -> None:
        """Every blob is in the inventory: from here on a link's digest is the stored blob's object, and
        the inventory's blobs are `StoredBlobs` (the dict they were walked into let go)."""
        if self.stored is None:
            if self.blob_starts:
                digests, sizes, starts = self.blob_digests, self.blob_sizes, self.blob_starts
                self.blob_digests, self.blob_sizes, self.blob_starts = [], array("q"), array("I")
                if self.inventory.blobs:  # some walked here: one run more
                    walked_here, their_sizes = layout.in_digest_order(self.inventory.blobs)
                    starts.append(len(digests))
                    digests += walked_here
                    sizes += their_sizes
                self.stored = self.inventory.blobs = StoredBlobs.of_runs(digests, sizes, starts)
            else:
                self.stored = self.inventory.blobs = StoredBlobs(self.inventory.blobs)

    def _what(self, entry: Entry, relative: str) -> str:
        return self._classify(entry, relative) or "odd"

    def _children(self, relative: str) -> list[tuple[Entry, str, str]] | None:
        """Usable entries as (entry, relative path, 'dir'|'file'); None when unreadable."""
        listed = self._list(relative)
        if listed is None:
            return None
        children = []
        for entry in listed:
            child = f"{relative}/{entry.name}" if relative else entry.name
            children.append((entry, child, self._what(entry, child)))
        return children

    def _empty(self, relative: str) -> None:
        """Record a directory holding no file; it replaces its own empty subdirectories."""
        prefix = relative + "/"
        empties = self.inventory.empty_dirs
        while empties and empties[-1].startswith(prefix):
            empties.pop()
        empties.append(relative)

    def _read_link(self, relative: str) -> LinkContent:
        raw = self._read_link_bytes(relative)
        return _UNREADABLE if raw is None else layout.parse_link(raw)

    def _read_link_bytes(self, relative: str) -> bytes | None:
        """The bytes of a link file (up to one more than a link may hold); None when unreadable."""
        try:
            return self.store.read(relative, layout.MAX_LINK_BYTES + 1, layout.MAX_LINK_BYTES)
        except OSError as error:
            self.inventory.unreadable.append(Oddity(relative, error.strerror or str(error)))
            return None

    def _leftover(self, entry: Entry, relative: str) -> None:
        try:
            size = entry.stat(follow_symlinks=False).st_size
        except OSError:
            size = 0
        self.inventory.leftovers.append(LeftoverFile(relative, size))

    def _interned(self, digests: Iterable[Digest]) -> Digests:
        return Digests(self._shared(digests))

    def merge(self, part: _Part) -> list[str]:
        """A unit's inventory into this walk's, every digest one object across the whole walk; the names
        of the repositories it brought."""
        self.progress(part.listed)
        if isinstance(part.inventory, _Packed):
            return self._merge_packed(part.inventory)
        mine, theirs = self.inventory, part.inventory
        if theirs.blobs:  # each blob in one place only: its digest is its own object
            mine.blobs.update(theirs.blobs)
        if theirs.repositories and self.stored is None:  # the blobs' units are merged before any repository's
            self.blobs_known()
        intern, name_of = self._intern, self.tag_names.setdefault
        for name, repository in theirs.repositories.items():
            repository.layer_links = self._interned(repository.layer_links)
            repository.revisions = self._interned(repository.revisions)
            repository.aliases = self._interned(repository.aliases)
            tags = (
                Tag(
                    name_of(tag.name, tag.name), None if tag.current is None else intern(tag.current),
                    tag.has_current_file, self._interned(tag.index),
                )
                for tag in repository.tags.values()
            )
            repository.tags = {tag.name: tag for tag in tags}
            mine.repositories[name] = repository  # in the place its discovery took
        mine.oddities += theirs.oddities
        mine.unreadable += theirs.unreadable
        mine.unknown += theirs.unknown
        mine.empty_dirs += theirs.empty_dirs
        mine.leftovers += theirs.leftovers
        return list(theirs.repositories)

    def _interned_in_order(self, packed: bytes) -> Digests:
        """A packed `Digests` (in order, each once), every digest this walk's one object."""
        return Digests.in_order(self._shared(_unpacked(packed)))

    def _merge_packed(self, theirs: _Packed) -> list[str]:
        mine = self.inventory
        if theirs.blobs:
            # The walk queues every blob unit before any repository's: blobs after `stored` would be lost.
            assert self.stored is None, "a blob unit merged after every blob was known"
            self.blob_starts.append(len(self.blob_digests))
            self.blob_digests += _unpacked(theirs.blobs)
            self.blob_sizes += theirs.sizes
        if theirs.repositories and self.stored is None:  # the blobs' units are merged before any repository's
            self.blobs_known()
        intern, name_of = self._intern, self.tag_names.setdefault
        for packed in theirs.repositories:
            (name, has_layers_dir, has_manifests_dir, has_tags_dir, has_uploads_dir, layer_links, revisions,
             tags, uploads, bad_links, aliases, fully_read) = packed
            mine.repositories[name] = Repository(
                name, has_layers_dir, has_manifests_dir, has_tags_dir, has_uploads_dir,
                self._interned_in_order(layer_links),
                self._interned_in_order(revisions),
                {
                    tag.name: tag
                    for tag in (
                        Tag(
                            name_of(tag_name, tag_name), None if current is None else intern(current),
                            has_current_file, self._interned_in_order(index),
                        )
                        for tag_name, current, has_current_file, index in tags
                    )
                },
                uploads, bad_links, self._interned_in_order(aliases), fully_read,
            )  # in the place its discovery took
        mine.oddities += theirs.oddities
        mine.unreadable += theirs.unreadable
        mine.unknown += theirs.unknown
        mine.empty_dirs += theirs.empty_dirs
        mine.leftovers += theirs.leftovers
        return [packed[0] for packed in theirs.repositories]

    # The tree

    def top(self) -> None:
        children = self._children("")
        if children is None:
            return
        seen = set()
        # Blobs first, whatever the directory's order: the repositories' manifests can be read as soon as
        # each repository is walked (see `walked`) only once every blob's size is known.
        for entry, _, what in sorted(children, key=lambda child: child[0].name != layout.BLOBS):
            name = entry.name
            if what == "dir" and name == layout.BLOBS:
                self.blobs(layout.BLOBS)
                seen.add(name)
            elif what == "dir" and name == layout.REPOSITORIES:
                if self.units is None:  # walked here, after the blobs (on a pool, `merge` tells)
                    self.blobs_known()
                self.namespace(layout.REPOSITORIES, "", top=True)
                seen.add(name)
            elif name in (layout.BLOBS, layout.REPOSITORIES):
                seen.add(name)
                if what == "file":
                    self._odd(name, "a file where the layout has a directory")
                    self.inventory.unknown.append(Oddity(name, "not a directory"))
            elif what != "odd":
                self._odd(name, "not part of the registry layout")
        self.seen = seen
        if self.units is None:
            self._judge_stores(seen)

    def _judge_stores(self, seen: set[str]) -> None:
        """One store without the other (an unmounted volume?) would make everything in the other look garbage."""
        self.blobs_known()  # a pool's blobs are not in the inventory until then
        inventory = self.inventory
        links = any(r.revisions or r.layer_links for r in inventory.repositories.values())
        if links and not inventory.blobs:
            why = "holds no blob" if layout.BLOBS in seen else "is missing"
            inventory.unknown.append(Oddity(layout.BLOBS, f"{why} while repositories link blobs (unmounted?)"))
        if inventory.blobs and layout.REPOSITORIES not in seen:
            inventory.unknown.append(Oddity(layout.REPOSITORIES, "is missing while blobs are stored (unmounted?)"))

    def blobs(self, relative: str) -> None:
        children = self._children(relative)
        if children is None:
            self.inventory.blobs_dir_readable = False
            return
        for entry, algorithm_dir, what in children:
            if what == "dir" and entry.name in layout.HEX_LENGTH:
                self.blob_fan_out(algorithm_dir, entry.name)
            elif what != "odd":
                self._odd(algorithm_dir, "not a digest algorithm directory")

    def blob_fan_out(self, relative: str, algorithm: str) -> None:
        children = self._children(relative)
        if children is None:
            return
        # In name order: a pool's units then bring their blobs in digest order, one after the other.
        for entry, fan_out_dir, what in sorted(children, key=lambda child: child[0].name):
            if what == "dir" and len(entry.name) == 2 and self.units is not None:
                self.units.blob_prefix(
                    fan_out_dir, algorithm, entry.name,
                    lambda answers, where=fan_out_dir: None if answers[0] else self._empty(where),
                )
            elif what == "dir" and len(entry.name) == 2:
                if not self.blob_prefix(fan_out_dir, algorithm, entry.name):
                    self._empty(fan_out_dir)
            elif what != "odd":
                self._odd(fan_out_dir, "not a blob fan-out directory")

    # The levels below hold nearly every entry of a large tree. An entry with the expected
    # name and type costs one d_type test; any other goes through _what (UTF-8, symbolic link,
    # special file), and either way to the verdict _children would have given.

    def blob_prefix(self, relative: str, algorithm: str, fan_out: str) -> bool:
        listed = self._list(relative)
        if listed is None:
            return True
        holds_files = False
        # A blob is in one place only: its digest is its own object (links are given it once all are known).
        for entry in listed:
            name = entry.name
            blob_dir = f"{relative}/{name}"
            digest = layout.digest_key(algorithm, name) if _is_dir(entry) else None
            what = "dir" if digest is not None else self._what(entry, blob_dir)  # hex: valid UTF-8
            if digest is None and what == "dir":  # a followed symbolic link
                digest = layout.digest_key(algorithm, name)
            if digest is not None and name.startswith(fan_out):
                if self.blob(blob_dir, digest):
                    holds_files = True
                else:
                    self._empty(blob_dir)
            else:
                holds_files = True
                if what != "odd":
                    self._odd(blob_dir, "not a blob directory")
        return holds_files

    def blob(self, relative: str, digest: Digest) -> bool:
        listed = self._list(relative)
        if listed is None:
            return True
        for entry in listed:
            name = entry.name
            path = f"{relative}/{name}"
            what = "file" if name == layout.DATA and _is_file(entry) else self._what(entry, path)
            if what == "file" and name == layout.DATA:
                try:
                    self.inventory.blobs[digest] = entry.stat(follow_symlinks=False).st_size
                except OSError as error:
                    self.inventory.unreadable.append(Oddity(path, error.strerror or str(error)))
            elif what == "file" and _is_leftover(name):
                self._leftover(entry, path)
            elif what != "odd":
                self._odd(path, "not part of a blob directory")
        return bool(listed)

    def namespace(self, relative: str, name: str, top: bool = False) -> bool:
        """A directory under repositories/: a repository when it holds a marker, else a namespace.
        Returns whether anything other than empty directories is below it."""
        children = self._children(relative)
        if children is None:
            return True
        names = {entry.name for entry, _, what in children if what == "dir"}
        is_repository = not top and bool(names.intersection(layout.REPOSITORY_MARKERS))
        if is_repository:
            parts = tuple((entry.name, path) for entry, path, what in children if what == "dir")
            if self.units is not None:
                # Its place in the walk's order, held by one shared placeholder (not three empty sets a
                # repository while the walk goes on): the unit's part, merged, takes the place.
                self.inventory.repositories[name] = _NOT_YET_WALKED
                self.units.repository(relative, name, parts)
            else:
                self.repository(relative, name, parts)
        holds = is_repository
        for entry, path, what in children:
            if what == "dir" and not entry.name.startswith("_"):
                child_name = f"{name}/{entry.name}" if name else entry.name
                if not layout.valid_repository_component(entry.name):
                    self._odd(path, "not a valid repository name component")
                if self.namespace(path, child_name):
                    holds = True
                else:
                    self._empty(path)
            elif what == "dir" and is_repository and entry.name in layout.REPOSITORY_MARKERS:
                continue
            elif what == "dir":
                holds = True
                self._odd(path, "reserved name: not part of the registry layout")
            elif what == "file":
                holds = True
                self._odd(path, "file outside any repository structure")
            else:
                holds = True
        return holds

    def repository(self, relative: str, name: str, parts: tuple[tuple[str, str], ...]) -> None:
        """`parts`: its subdirectories as (name, path)."""
        repository = Repository(name)
        self.inventory.repositories[name] = repository
        unknown_before = len(self.inventory.unreadable) + len(self.inventory.unknown)
        self._repository_parts(repository, parts)
        repository.layer_links = Digests(repository.layer_links)
        repository.revisions = Digests(repository.revisions)
        repository.aliases = Digests(repository.aliases)
        repository.uploads, repository.bad_links = tuple(repository.uploads), tuple(repository.bad_links)
        repository.fully_read = len(self.inventory.unreadable) + len(self.inventory.unknown) == unknown_before

    def _repository_parts(self, repository: Repository, parts: tuple[tuple[str, str], ...]) -> None:
        for entry_name, path in parts:
            if entry_name == layout.LAYERS:
                repository.has_layers_dir = True
                self.links(path, repository, LinkKind.LAYER, repository.layer_links)
            elif entry_name == layout.MANIFESTS:
                repository.has_manifests_dir = True
                self.manifests(path, repository)
            elif entry_name == layout.UPLOADS:
                repository.has_uploads_dir = True
                self.uploads(path, repository)

    def manifests(self, relative: str, repository: Repository) -> None:
        children = self._children(relative)
        if children is None:
            return
        for entry, path, what in children:
            if what == "dir" and entry.name == layout.REVISIONS:
                self.links(path, repository, LinkKind.REVISION, repository.revisions)
            elif what == "dir" and entry.name == layout.TAGS:
                repository.has_tags_dir = True
                self.tags(path, repository)
            elif what != "odd":
                self._odd(path, "not part of _manifests")

    def links(
        self, relative: str, repository: Repository, kind: str, into: set[Digest], tag: str | None = None
    ) -> bool:
        """`<alg>/<hex>/link` below `relative`; valid links go into `into`, others into bad_links."""
        children = self._children(relative)
        if children is None:
            return True
        holds = False
        for entry, algorithm_dir, what in children:
            if what == "dir" and entry.name in layout.HEX_LENGTH:
                if self.link_algorithm(algorithm_dir, entry.name, repository, kind, into, tag):
                    holds = True
                else:
                    self._empty(algorithm_dir)
            else:
                holds = True
                if what != "odd":
                    self._odd(algorithm_dir, "not a digest algorithm directory")
        return holds

    def link_algorithm(self, relative, algorithm, repository, kind, into, tag) -> bool:
        listed = self._list(relative)
        if listed is None:
            return True
        holds = False
        for entry in listed:
            name = entry.name
            digest_dir = f"{relative}/{name}"
            digest = self._digest(algorithm, name) if _is_dir(entry) else None
            what = "dir" if digest is not None else self._what(entry, digest_dir)
            if digest is None and what == "dir":  # a followed symbolic link
                digest = self._digest(algorithm, name)
            if digest is None:
                holds = True
                if what != "odd":
                    self._odd(digest_dir, "not a digest directory")
            elif self.link_dir(digest_dir, digest, repository, kind, into, tag, f"{algorithm}:{name}".encode()):
                holds = True
            else:
                self._empty(digest_dir)
        return holds

    def link_dir(self, relative, digest, repository, kind, into, tag, expected: bytes) -> bool:
        """`expected`: the bytes of a link that names exactly this directory's digest."""
        listed = self._list(relative)
        if listed is None:
            return True
        for entry in listed:
            name = entry.name
            path = f"{relative}/{name}"
            what = "file" if name == layout.LINK and _is_file(entry) else self._what(entry, path)
            if name == layout.LINK and what == "file":
                raw = self._read_link_bytes(path)
                if raw == expected:  # valid, and names the path's digest: parse_link would agree
                    into.add(digest)
                    continue
                content = _UNREADABLE if raw is None else layout.parse_link(raw)
                if content.digest == digest:
                    into.add(digest)
                elif content.digest is not None and layout.is_alias(digest, content.digest):
                    repository.aliases.add(self._intern(content.digest))
                else:
                    repository.bad_links.append(BadLink(kind, path, digest, content, tag))
            elif name == layout.LINK and what == "dir":
                repository.bad_links.append(BadLink(kind, path, digest, LinkContent(None, LinkDefect.NOT_A_FILE), tag))
            elif what == "file" and _is_leftover(name):
                self._leftover(entry, path)
            elif what == "dir" and name == layout.SIGNATURES and kind == LinkKind.REVISION:
                continue  # registries <= 2.4; nothing references these any more
            elif what != "odd":
                self._odd(path, "not part of a link directory")
        return bool(listed)

    def tags(self, relative: str, repository: Repository) -> None:
        children = self._children(relative)
        if children is None:
            return
        for entry, path, what in children:
            if what != "dir":
                if what != "odd":
                    self._odd(path, "file among tag directories")
                continue
            if not layout.valid_tag(entry.name):
                self._odd(path, "not a valid tag name")
            if not self.tag(path, entry.name, repository):
                self._empty(path)

    def tag(self, relative: str, name: str, repository: Repository) -> bool:
        children = self._children(relative)
        if children is None:
            return True
        index: set[Digest] = set()
        current: Digest | None = None
        has_current_file = False
        holds = False
        for entry, path, what in children:
            if what == "dir" and entry.name == layout.CURRENT:
                current, has_current_file, current_holds = self.current(path, repository, name)
                if current_holds:
                    holds = True
                else:
                    self._empty(path)
            elif what == "dir" and entry.name == layout.INDEX:
                if self.links(path, repository, LinkKind.INDEX, index, tag=name):
                    holds = True
                else:
                    self._empty(path)
            else:
                holds = True
                if what != "odd":
                    self._odd(path, "not part of a tag directory")
        if holds:
            if not self.in_unit:  # a unit's names are shared when its part is merged
                name = self.tag_names.setdefault(name, name)
            repository.tags[name] = Tag(name, current, has_current_file, Digests(index))
        return holds

    def current(self, relative: str, repository: Repository, tag: str) -> tuple[Digest | None, bool, bool]:
        children = self._children(relative)
        if children is None:
            return None, True, True
        current = None
        has_file = False
        for entry, path, what in children:
            if entry.name == layout.LINK and what == "file":
                has_file = True
                content = self._read_link(path)
                if content.digest is not None:
                    current = self._intern(content.digest)
                else:
                    repository.bad_links.append(BadLink(LinkKind.CURRENT, path, None, content, tag))
            elif entry.name == layout.LINK and what == "dir":
                has_file = True
                repository.bad_links.append(
                    BadLink(LinkKind.CURRENT, path, None, LinkContent(None, LinkDefect.NOT_A_FILE), tag)
                )
            elif what == "file" and _is_leftover(entry.name):
                self._leftover(entry, path)
            elif what != "odd":
                self._odd(path, "not part of a tag's current directory")
        return current, has_file, bool(children)

    def uploads(self, relative: str, repository: Repository) -> None:
        children = self._children(relative)
        if children is None:
            return
        for entry, path, what in children:
            if what == "dir":
                self.upload(path, entry, repository)
            elif what != "odd":
                self._odd(path, "file among uploads")

    def upload(self, relative: str, entry: Entry, repository: Repository) -> None:
        size = 0
        started_at = None
        stack = [relative]
        while stack:
            children = self._children(stack.pop())
            for child, path, what in children or ():
                if what == "dir":
                    stack.append(path)
                elif what == "file":
                    try:
                        size += child.stat(follow_symlinks=False).st_size
                    except OSError:
                        pass
                    if path == f"{relative}/{layout.STARTEDAT}":
                        started_at = self._read_started_at(path)
        try:
            modified = entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            modified = 0.0
        repository.uploads.append(
            Upload(entry.name, started_at, datetime.fromtimestamp(modified, timezone.utc), size)
        )

    def _read_started_at(self, relative: str) -> datetime | None:
        try:
            text = self.store.read(relative, _STARTEDAT_BYTES, _STARTEDAT_BYTES).decode("ascii")
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except (OSError, ValueError):
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
