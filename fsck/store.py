"""Every storage call of the package, behind one interface (distribution's StorageDriver).

A `Store` holds a tree of named objects. Paths are strings relative to its root, "" being
the root itself, built by the caller (`layout` for the registry, `quarantine` for the
quarantine): a store never builds a layout path. Two stores:

- `LocalStore(directory)`: the file system. Listings are `os.DirEntry` objects as they come
  (their d_type; no stat, no wrapper per entry); reads never open a symbolic link.
- `MemoryStore()`: a tree in dicts, for unit tests; it passes the same tests/test_store.py.

The quarantine is a second store of the same kind (`LocalStore(<quarantine directory>)`):
objects move between the two with `move(path, into, to)`, a rename on one file system.
What a store can do is data (`Capabilities`), so that callers ask rather than assume; an
object store (no directories, no symbolic links, moves that copy then delete) fits: `s3.S3Store`.
Errors are `OSError` as the file system raises them, and `LockHeld`.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat as modes
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar, Protocol


class EntryKind(str, Enum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    OTHER = "other"  # a device, a FIFO, a socket


@dataclass(frozen=True, slots=True)
class Capabilities:
    has_directories: bool  # False: directories exist only as prefixes of names (nothing to make or remove)
    has_symlinks: bool
    atomic_rename: bool  # False: a move copies, then deletes


@dataclass(frozen=True, slots=True)
class Stat:
    kind: EntryKind
    size: int
    mtime: float
    mode: int  # the permission bits
    uid: int
    gid: int
    symlink_target: str | None = None  # for a symbolic link, when it can be read
    md5: bytes | None = None  # the content's MD5, where the store keeps it (a bucket's plain ETag)


class PoolKind(str, Enum):
    SERIAL = "serial"  # one call at a time, in this thread (a store in memory)
    PROCESSES = "processes"  # calls are short and CPU-bound around them: the GIL would serialise threads
    THREADS = "threads"  # each call waits on the network: many in flight, the GIL released while waiting


@dataclass(frozen=True, slots=True)
class Concurrency:
    """How a store is best read in parallel, and how many operations to keep in flight."""

    kind: PoolKind
    jobs: int
    reason: str  # what it was chosen from, for --verbose and the benchmarks


# Where a lookup waits on a network or another process: many requests in flight pay off.
_REMOTE_FILE_SYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "lustre", "gpfs", "9p", "afs", "beegfs",
    "ocfs2", "gfs2", "davfs", "sshfs", "virtiofs",
})
REMOTE_JOBS = 32  # each operation waits about a round trip: enough to keep a network mount busy
# A local disk: walker processes, two a core. With the tree in the page cache a walk is CPU-bound and a
# second walker a core costs little; with it on the disk (a nightly run) each read waits on the device,
# and the walkers waiting leave their cores to the others (on 2 cores, 300k files: 30 s with two walkers,
# 18-22 s with four; eight gain a little more, and hold more parts waiting to be merged). At most
# LOCAL_JOBS_MAX: enough reads in flight for any local device.
LOCAL_JOBS_PER_CORE = 2
LOCAL_JOBS_MAX = 32
MAX_JOBS = 256


def file_system_type(path: str, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The type of the file system `path` (resolved) is on, from the kernel's mount table; None if unknown."""
    real = os.path.realpath(path)
    best, kind = -1, None
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as table:
            for line in table:
                fields = line.split()
                if " - " not in line or len(fields) < 5:
                    continue
                point = fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
                inside = real == point or real.startswith(point.rstrip("/") + "/")
                if inside and len(point) > best:
                    best, kind = len(point), line.split(" - ", 1)[1].split()[0]
    except OSError:
        return None
    return kind


def concurrency_for(fs_type: str | None, cores: int) -> Concurrency:
    if fs_type is not None and (fs_type in _REMOTE_FILE_SYSTEMS or fs_type.startswith("fuse")):
        return Concurrency(PoolKind.THREADS, REMOTE_JOBS, f"{fs_type}: a network or user-space file system")
    jobs = min(LOCAL_JOBS_MAX, max(1, cores) * LOCAL_JOBS_PER_CORE)
    return Concurrency(PoolKind.PROCESSES, jobs, f"{fs_type or 'unknown file system'}: local, {LOCAL_JOBS_PER_CORE} walkers a core")


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class EntryStat(Protocol):
    @property
    def st_size(self) -> int: ...

    @property
    def st_mtime(self) -> float: ...


class Entry(Protocol):
    """One name in a listing, as `os.DirEntry` has it (callers pass follow_symlinks=False)."""

    @property
    def name(self) -> str: ...

    def is_dir(self, *, follow_symlinks: bool = True) -> bool: ...

    def is_file(self, *, follow_symlinks: bool = True) -> bool: ...

    def is_symlink(self) -> bool: ...

    def stat(self, *, follow_symlinks: bool = True) -> EntryStat: ...


class Journal(Protocol):
    def append(self, data: bytes) -> None:
        """Durable when it returns."""

    def close(self) -> None: ...


Progress = Callable[[int], None]


class Reader(Protocol):
    def digest(self, directory: str, below: str, algorithm: str, buffer: memoryview, progress: Progress) -> bytes:
        """The `algorithm` digest of the object at `directory/below`, read through `buffer`;
        `progress(n)` after every n bytes."""


class LockHeld(Exception):
    """Another process holds the lock; `args[1]`, where the store can tell, who and since when."""

    @property
    def holder(self) -> str | None:
        return self.args[1] if len(self.args) > 1 else None


class Store(Protocol):
    root: str  # where the store is, for messages and the journal
    capabilities: Capabilities

    # Reading

    def concurrency(self) -> Concurrency:
        """How to read this store in parallel by default (`--jobs` overrides the number)."""

    def list(self, path: str) -> list[Entry]: ...

    def read(self, path: str, limit: int, expected: int) -> bytes:
        """Up to `limit` bytes of a file, never through a symbolic link; `expected` (its size
        when listed) sizes the first read."""

    def lines(self, path: str) -> Iterator[bytes]: ...

    def stat(self, path: str, *, follow_symlinks: bool = False) -> Stat | None:
        """None when nothing is there, or what is there cannot be told."""

    def reader(self, held_open: Iterable[str]) -> AbstractContextManager[Reader]:
        """A reader of many objects; those below a `held_open` directory open from it."""

    def linked_parents(self, path: str) -> list[str]:
        """The directories on the way to `path` that are symbolic links, top first."""

    def sibling(self, address: str) -> Store:
        """A store of the same kind at another address (the quarantine of another file system)."""

    def resolve(self, address: str) -> str:
        """The canonical form of a root address (a path with its symbolic links resolved)."""

    def real_path(self, path: str) -> str:
        """Where `path` really is: its address with every symbolic link on the way resolved."""

    def volume(self, path: str) -> int | None:
        """The file system `path` (followed) is on; a move is a rename only within one. None if it is gone."""

    def shares_volume(self, other: Store) -> bool:
        """Whether a move from this store into `other` is a rename."""

    # Changing

    def make_dir(self, path: str, mode: int = 0o777, *, parents: bool = False, exist_ok: bool = False) -> None: ...

    def move(self, path: str, into: Store, to: str) -> None:
        """`path` (a file or a whole directory) to `to` in `into`, whose parent must exist."""

    def copy(self, path: str, into: Store, to: str) -> None:
        """A durable copy with its metadata; a symbolic link is copied as one."""

    def write_atomically(
        self, path: str, data: bytes, *, staging: tuple[Store, str], siblings_in: Sequence[str],
        anywhere_below: Sequence[str],
    ) -> set[str]:
        """Write `data` at `path` as one atomic replacement, made durable first (at `staging`).
        Missing directories copy the owner and mode of the nearest existing one; the file those
        of a model: the first file of its name one directory below one of `siblings_in`, else
        anywhere below `anywhere_below`. Returns the directories whose entries changed."""

    def remove(self, path: str) -> None: ...

    def remove_dir(self, path: str) -> None:
        """An empty directory."""

    def remove_tree(self, path: str) -> None: ...

    def set_owner(self, path: str, mode: int, uid: int, gid: int) -> None:
        """The mode, and the owner where this process may change it."""

    def sync_dir(self, path: str) -> None:
        """Make the directory's entries durable."""

    def settle(self) -> None:
        """Carry out what the store defers (a bucket's deletes after moves): done and durable when it returns."""

    def lock(self, path: str) -> AbstractContextManager[None]:
        """Held until the context ends; `LockHeld` when another process holds it."""

    def open_journal(self, path: str, *, new: bool) -> Journal: ...


# The file system.

_READ = os.O_RDONLY | os.O_NOFOLLOW
_MORE = 1 << 16  # each further read of a file larger than its expected size


def is_dir(store: Store, path: str) -> bool:
    """A directory, or a symbolic link to one."""
    info = store.stat(path, follow_symlinks=True)
    return info is not None and info.kind is EntryKind.DIR


def _kind(mode: int) -> EntryKind:
    if modes.S_ISREG(mode):
        return EntryKind.FILE
    if modes.S_ISDIR(mode):
        return EntryKind.DIR
    if modes.S_ISLNK(mode):
        return EntryKind.SYMLINK
    return EntryKind.OTHER


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


@dataclass(frozen=True, slots=True)
class LocalStore:
    root: str
    capabilities: ClassVar[Capabilities] = Capabilities(has_directories=True, has_symlinks=True, atomic_rename=True)
    _prefix: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_prefix", self.root if self.root.endswith("/") else self.root + "/")

    def _path(self, path: str) -> str:
        return self._prefix + path if path else self.root

    def _same_kind(self, other: Store) -> LocalStore:
        if not isinstance(other, LocalStore):
            raise TypeError(f"cannot move or copy from a local store into {type(other).__name__}")
        return other

    # Reading

    def concurrency(self) -> Concurrency:
        return concurrency_for(file_system_type(self.root), usable_cores())

    def list(self, path: str) -> list[os.DirEntry]:
        with os.scandir(self._prefix + path if path else self.root) as entries:
            return list(entries)

    def read(self, path: str, limit: int, expected: int) -> bytes:
        fd = os.open(self._prefix + path, _READ)
        try:
            want = limit if limit <= expected else expected + 1
            chunk = os.read(fd, want)
            if len(chunk) < want:  # a regular file reads short only at its end: one read for most
                return chunk
            chunks = [chunk]
            remaining = limit - len(chunk)
            while remaining > 0:
                chunk = os.read(fd, min(remaining, _MORE))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        finally:
            os.close(fd)

    def lines(self, path: str) -> Iterator[bytes]:
        with open(self._path(path), "rb") as handle:
            yield from handle

    def stat(self, path: str, *, follow_symlinks: bool = False) -> Stat | None:
        full = self._path(path)
        try:
            info = os.stat(full, follow_symlinks=follow_symlinks)
        except OSError:
            return None
        kind = _kind(info.st_mode)
        target = None
        if kind is EntryKind.SYMLINK:
            try:
                target = os.readlink(full)
            except OSError:
                pass
        return Stat(
            kind, info.st_size, info.st_mtime, modes.S_IMODE(info.st_mode), info.st_uid, info.st_gid, target
        )

    @contextmanager
    def reader(self, held_open: Iterable[str]) -> Iterator[Reader]:
        fds: dict[str, int] = {}
        try:
            for directory in held_open:
                try:
                    fds[directory] = os.open(self._path(directory), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
                except OSError:
                    pass  # its objects open by their whole path, and fail (or not) each on its own
            yield _LocalReader(self._prefix, fds)
        finally:
            for fd in fds.values():
                os.close(fd)

    def linked_parents(self, path: str) -> list[str]:
        parts = path.split("/")
        current = self.root
        linked = []
        for depth, part in enumerate(parts[:-1], 1):
            current = os.path.join(current, part)
            if os.path.islink(current):
                linked.append("/".join(parts[:depth]))
        return linked

    def sibling(self, address: str) -> LocalStore:
        return LocalStore(address)

    def resolve(self, address: str) -> str:
        return os.path.realpath(address)

    def real_path(self, path: str) -> str:
        return os.path.realpath(self._path(path))

    def volume(self, path: str) -> int | None:
        try:
            return os.stat(self._path(path)).st_dev
        except OSError:
            return None

    def shares_volume(self, other: Store) -> bool:
        existing = os.path.realpath(self._same_kind(other).root)
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        return os.stat(existing).st_dev == os.stat(self.root).st_dev

    # Changing

    def make_dir(self, path: str, mode: int = 0o777, *, parents: bool = False, exist_ok: bool = False) -> None:
        full = self._path(path)
        if parents:
            os.makedirs(full, mode, exist_ok=exist_ok)
            return
        try:
            os.mkdir(full, mode)
        except FileExistsError:
            if not (exist_ok and os.path.isdir(full)):
                raise

    def move(self, path: str, into: Store, to: str) -> None:
        os.rename(self._path(path), self._same_kind(into)._path(to))

    def copy(self, path: str, into: Store, to: str) -> None:
        target = self._same_kind(into)._path(to)
        shutil.copy2(self._path(path), target, follow_symlinks=False)
        _fsync(target)
        _fsync(os.path.dirname(target), os.O_DIRECTORY)

    def write_atomically(
        self, path: str, data: bytes, *, staging: tuple[Store, str], siblings_in: Sequence[str],
        anywhere_below: Sequence[str],
    ) -> set[str]:
        parent = _parent(path)
        model = self._directory_model(parent)
        created = []
        probe = parent
        while probe and not os.path.isdir(self._path(probe)):
            created.append(probe)
            probe = _parent(probe)
        for directory in reversed(created):
            os.mkdir(self._path(directory), modes.S_IMODE(model.st_mode) if modes.S_ISDIR(model.st_mode) else 0o755)
            _chown_like(self._path(directory), model)
        staging_store, staging_path = staging
        temporary = self._same_kind(staging_store)._path(staging_path)
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        file_model = self._file_model(path.rpartition("/")[2], siblings_in, anywhere_below)
        os.chmod(temporary, modes.S_IMODE(file_model.st_mode) if file_model else 0o644)
        _chown_like(temporary, file_model or model)
        os.rename(temporary, self._path(path))
        return {parent, *created, *(_parent(directory) for directory in created)}

    def _directory_model(self, directory: str) -> os.stat_result:
        """The nearest existing directory at or above `directory`: new directories copy its owner and mode."""
        probe = directory
        while probe and not os.path.isdir(self._path(probe)):
            probe = _parent(probe)
        return os.stat(self._path(probe))

    def _file_model(
        self, name: str, siblings_in: Sequence[str], anywhere_below: Sequence[str]
    ) -> os.stat_result | None:
        for base in siblings_in:
            try:
                for entry in os.scandir(self._path(base)):
                    candidate = os.path.join(entry.path, name)
                    if (
                        entry.is_dir(follow_symlinks=False)
                        and os.path.isfile(candidate)
                        and not os.path.islink(candidate)
                    ):
                        return os.lstat(candidate)
            except OSError:
                continue
        for base in anywhere_below:
            for directory, _, names in os.walk(self._path(base)):
                if name in names and not os.path.islink(os.path.join(directory, name)):
                    return os.lstat(os.path.join(directory, name))
        return None

    def remove(self, path: str) -> None:
        os.unlink(self._path(path))

    def remove_dir(self, path: str) -> None:
        os.rmdir(self._path(path))

    def remove_tree(self, path: str) -> None:
        shutil.rmtree(self._path(path))

    def set_owner(self, path: str, mode: int, uid: int, gid: int) -> None:
        full = self._path(path)
        os.chmod(full, mode)
        try:
            os.chown(full, uid, gid, follow_symlinks=False)
        except PermissionError:
            pass  # not root: the directory is ours, as everything else this user writes

    def sync_dir(self, path: str) -> None:
        _fsync(self._path(path), os.O_DIRECTORY)

    def settle(self) -> None:
        pass  # a rename is whole when it returns

    @contextmanager
    def lock(self, path: str) -> Iterator[None]:
        fd = os.open(self._path(path), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockHeld(path) from None
            yield
        finally:
            os.close(fd)

    def open_journal(self, path: str, *, new: bool) -> Journal:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_EXCL if new else 0)
        return _LocalJournal(os.open(self._path(path), flags, 0o600))


def new_hasher(algorithm: str, data: bytes = b"", *, for_security: bool = True):
    """hashlib's hasher for `algorithm`. hashlib is imported on the first call, not at start-up: it maps
    OpenSSL's libcrypto, 3.6 MiB of resident memory, which only a run that hashes (--verify, a bucket's
    links) needs."""
    import hashlib

    return hashlib.new(algorithm, data, usedforsecurity=for_security)


@dataclass(frozen=True, slots=True)
class _LocalReader:
    """Opens each object from a held directory's fd (no walk down its whole path) and reads
    it straight into the caller's buffer (no file object, no new buffer)."""

    prefix: str
    fds: dict[str, int]

    def digest(self, directory: str, below: str, algorithm: str, buffer: memoryview, progress: Progress) -> bytes:
        hasher = new_hasher(algorithm)
        held = self.fds.get(directory)
        if held is None:
            fd = os.open(f"{self.prefix}{directory}/{below}", _READ)
        else:
            fd = os.open(below, _READ, dir_fd=held)
        try:
            while size := os.readv(fd, [buffer]):
                hasher.update(buffer[:size])
                progress(size)
        finally:
            os.close(fd)
        return hasher.digest()


@dataclass(frozen=True, slots=True)
class _LocalJournal:
    fd: int

    def append(self, data: bytes) -> None:
        os.write(self.fd, data)
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


def _fsync(path: str, flags: int = 0) -> None:
    fd = os.open(path, os.O_RDONLY | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _chown_like(path: str, model: os.stat_result) -> None:
    try:
        os.chown(path, model.st_uid, model.st_gid, follow_symlinks=False)
    except PermissionError:
        pass  # not root: the file is ours, as everything else this user writes


# In memory.


@dataclass(slots=True)
class _Node:
    kind: EntryKind
    mode: int
    uid: int
    gid: int
    mtime: float = 0.0
    data: bytes = b""  # a file's content
    target: str | None = None  # a symbolic link's
    children: dict[str, _Node] | None = None  # a directory's

    @property
    def st_size(self) -> int:
        return len(self.data)

    @property
    def st_mtime(self) -> float:
        return self.mtime


@dataclass(frozen=True, slots=True)
class _MemoryEntry:
    name: str
    node: _Node

    def is_dir(self, *, follow_symlinks: bool = True) -> bool:
        return self.node.kind is EntryKind.DIR

    def is_file(self, *, follow_symlinks: bool = True) -> bool:
        return self.node.kind is EntryKind.FILE

    def is_symlink(self) -> bool:
        return self.node.kind is EntryKind.SYMLINK

    def stat(self, *, follow_symlinks: bool = True) -> EntryStat:
        return self.node


def _error(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


@dataclass(slots=True)
class MemoryStore:
    """A tree in dicts. Symbolic links and special files are held as entries, never followed
    (following one finds nothing); durability and locks are this process's alone."""

    root: str = "memory:"
    uid: int = 0
    gid: int = 0
    capabilities: ClassVar[Capabilities] = Capabilities(has_directories=True, has_symlinks=True, atomic_rename=True)
    top: _Node = field(init=False, repr=False)
    locks: set[str] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        self.top = self._new(EntryKind.DIR, 0o755)

    def _new(self, kind: EntryKind, mode: int, **content) -> _Node:
        children = {} if kind is EntryKind.DIR else None
        return _Node(kind, mode, self.uid, self.gid, children=children, **content)

    def _find(self, path: str) -> _Node | None:
        node = self.top
        for part in path.split("/") if path else ():
            if node.children is None:
                return None
            node = node.children.get(part)
            if node is None:
                return None
        return node

    def _get(self, path: str) -> _Node:
        node = self._find(path)
        if node is None:
            raise _error(errno.ENOENT, path)
        return node

    def _directory(self, path: str) -> _Node:
        node = self._get(path)
        if node.children is None:
            raise _error(errno.ENOTDIR, path)
        return node

    def _file(self, path: str) -> _Node:
        node = self._get(path)
        if node.kind is EntryKind.SYMLINK:
            raise _error(errno.ELOOP, path)
        if node.kind is EntryKind.DIR:
            raise _error(errno.EISDIR, path)
        return node

    def _attach(self, path: str, node: _Node, *, replace: bool = False) -> None:
        parent, _, name = path.rpartition("/")
        children = self._directory(parent).children
        if name in children and not replace:
            raise _error(errno.EEXIST, path)
        children[name] = node

    def _detach(self, path: str) -> _Node:
        parent, _, name = path.rpartition("/")
        node = self._get(path)
        if not path:
            raise _error(errno.EBUSY, path)
        del self._directory(parent).children[name]
        return node

    def _members(self, into: Store) -> MemoryStore:
        if not isinstance(into, MemoryStore):
            raise TypeError(f"cannot move or copy from a memory store into {type(into).__name__}")
        return into

    # Writing what tests start from

    def put(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """A file, with any missing parent directories."""
        if _parent(path):
            self.make_dir(_parent(path), parents=True, exist_ok=True)
        self._attach(path, self._new(EntryKind.FILE, mode, data=data), replace=True)

    def put_special(self, path: str, kind: EntryKind, target: str | None = None) -> None:
        self._attach(path, self._new(kind, 0o777 if kind is EntryKind.SYMLINK else 0o644, target=target))

    # Reading

    def concurrency(self) -> Concurrency:
        return Concurrency(PoolKind.SERIAL, 1, "a store in memory")

    def list(self, path: str) -> list[Entry]:
        return [_MemoryEntry(name, node) for name, node in self._directory(path).children.items()]

    def read(self, path: str, limit: int, expected: int) -> bytes:
        return self._file(path).data[:limit]

    def lines(self, path: str) -> Iterator[bytes]:
        yield from self._file(path).data.splitlines(keepends=True)

    def stat(self, path: str, *, follow_symlinks: bool = False) -> Stat | None:
        node = self._find(path)
        if node is None or (follow_symlinks and node.kind is EntryKind.SYMLINK):
            return None
        return Stat(node.kind, len(node.data), node.mtime, node.mode, node.uid, node.gid, node.target)

    @contextmanager
    def reader(self, held_open: Iterable[str]) -> Iterator[Reader]:
        yield _MemoryReader(self)

    def linked_parents(self, path: str) -> list[str]:
        parts = path.split("/")
        linked = []
        for depth in range(1, len(parts)):
            node = self._find("/".join(parts[:depth]))
            if node is None or node.kind is not EntryKind.DIR:
                if node is not None and node.kind is EntryKind.SYMLINK:
                    linked.append("/".join(parts[:depth]))
                break  # a link is never followed here: nothing below it
        return linked

    def sibling(self, address: str) -> MemoryStore:
        return MemoryStore(root=address, uid=self.uid, gid=self.gid)

    def resolve(self, address: str) -> str:
        return address

    def real_path(self, path: str) -> str:
        return f"{self.root}/{path}" if path else self.root  # its links are never followed

    def volume(self, path: str) -> int | None:
        return 0 if self._find(path) is not None else None

    def shares_volume(self, other: Store) -> bool:
        return isinstance(other, MemoryStore)

    # Changing

    def make_dir(self, path: str, mode: int = 0o777, *, parents: bool = False, exist_ok: bool = False) -> None:
        node = self._find(path)
        if node is not None:
            if exist_ok and node.kind is EntryKind.DIR:
                return
            raise _error(errno.EEXIST, path)
        if parents and _parent(path) and self._find(_parent(path)) is None:
            self.make_dir(_parent(path), parents=True, exist_ok=True)
        self._attach(path, self._new(EntryKind.DIR, mode))

    def move(self, path: str, into: Store, to: str) -> None:
        target = self._members(into)
        node = self._get(path)
        existing = target._find(to)
        if existing is not None and existing.children:
            raise _error(errno.ENOTEMPTY, to)
        if existing is not None and (existing.kind is EntryKind.DIR) != (node.kind is EntryKind.DIR):
            raise _error(errno.EISDIR if existing.kind is EntryKind.DIR else errno.ENOTDIR, to)
        target._directory(_parent(to))
        self._detach(path)
        target._attach(to, node, replace=True)

    def copy(self, path: str, into: Store, to: str) -> None:
        node = self._get(path)
        if node.kind is EntryKind.DIR:
            raise _error(errno.EISDIR, path)
        self._members(into)._attach(
            to, _Node(node.kind, node.mode, node.uid, node.gid, node.mtime, node.data, node.target), replace=True
        )

    def write_atomically(
        self, path: str, data: bytes, *, staging: tuple[Store, str], siblings_in: Sequence[str],
        anywhere_below: Sequence[str],
    ) -> set[str]:
        parent = _parent(path)
        probe = parent
        created = []
        while probe and self._find(probe) is None:
            created.append(probe)
            probe = _parent(probe)
        model = self._directory(probe)
        for directory in reversed(created):
            self._attach(directory, _Node(EntryKind.DIR, model.mode, model.uid, model.gid, children={}))
        file_model = self._file_model(path.rpartition("/")[2], siblings_in, anywhere_below)
        owner = file_model or model
        mode = file_model.mode if file_model else 0o644
        self._attach(path, _Node(EntryKind.FILE, mode, owner.uid, owner.gid, data=data), replace=True)
        return {parent, *created, *(_parent(directory) for directory in created)}

    def _file_model(self, name: str, siblings_in: Sequence[str], anywhere_below: Sequence[str]) -> _Node | None:
        for base in siblings_in:
            node = self._find(base)
            for child in (node.children or {}).values() if node is not None else ():
                candidate = (child.children or {}).get(name)
                if candidate is not None and candidate.kind is EntryKind.FILE:
                    return candidate
        for base in anywhere_below:
            stack = [self._find(base)]
            while stack:
                node = stack.pop()
                if node is None or node.children is None:
                    continue
                candidate = node.children.get(name)
                if candidate is not None and candidate.kind is EntryKind.FILE:
                    return candidate
                stack.extend(node.children.values())
        return None

    def remove(self, path: str) -> None:
        if self._get(path).kind is EntryKind.DIR:
            raise _error(errno.EISDIR, path)
        self._detach(path)

    def remove_dir(self, path: str) -> None:
        if self._directory(path).children:
            raise _error(errno.ENOTEMPTY, path)
        self._detach(path)

    def remove_tree(self, path: str) -> None:
        self._directory(path)
        self._detach(path)

    def set_owner(self, path: str, mode: int, uid: int, gid: int) -> None:
        node = self._get(path)
        node.mode, node.uid, node.gid = mode, uid, gid

    def sync_dir(self, path: str) -> None:
        self._directory(path)

    def settle(self) -> None:
        pass

    @contextmanager
    def lock(self, path: str) -> Iterator[None]:
        if path in self.locks:
            raise LockHeld(path)
        if self._find(path) is None:
            self._attach(path, self._new(EntryKind.FILE, 0o600))
        self.locks.add(path)
        try:
            yield
        finally:
            self.locks.discard(path)

    def open_journal(self, path: str, *, new: bool) -> Journal:
        node = self._find(path)
        if node is None:
            node = self._new(EntryKind.FILE, 0o600)
            self._attach(path, node)
        elif new:
            raise _error(errno.EEXIST, path)
        return _MemoryJournal(self._file(path))


@dataclass(frozen=True, slots=True)
class _MemoryReader:
    store: MemoryStore

    def digest(self, directory: str, below: str, algorithm: str, buffer: memoryview, progress: Progress) -> bytes:
        hasher = new_hasher(algorithm)
        data = self.store._file(f"{directory}/{below}").data
        for start in range(0, len(data), len(buffer)):
            chunk = data[start : start + len(buffer)]
            hasher.update(chunk)
            progress(len(chunk))
        return hasher.digest()


@dataclass(frozen=True, slots=True)
class _MemoryJournal:
    node: _Node

    def append(self, data: bytes) -> None:
        self.node.data += data

    def close(self) -> None:
        pass
