"""The store contract: one suite that every store passes (distribution's driver test suite)."""

import errno
import hashlib
import os

import pytest

from fsck.store import EntryKind, LocalStore, LockHeld, MemoryStore


class Local:
    """Stores on the file system, and how a test puts things into them."""

    def __init__(self, tmp_path):
        os.mkdir(tmp_path / "v2")
        self.registry = LocalStore(str(tmp_path / "v2"))
        self.quarantine = LocalStore(str(tmp_path / "quarantine"))

    def put(self, store, path, data=b"", mode=0o644):
        full = os.path.join(store.root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as handle:
            handle.write(data)
        os.chmod(full, mode)

    def symlink(self, store, path, target):
        os.symlink(target, os.path.join(store.root, path))

    def fifo(self, store, path):
        os.mkfifo(os.path.join(store.root, path))


class Memory:
    def __init__(self, tmp_path):
        self.registry = MemoryStore("memory:v2")
        self.quarantine = MemoryStore("memory:quarantine")

    def put(self, store, path, data=b"", mode=0o644):
        store.put(path, data, mode)

    def symlink(self, store, path, target):
        store.put_special(path, EntryKind.SYMLINK, target)

    def fifo(self, store, path):
        store.put_special(path, EntryKind.OTHER)


@pytest.fixture(params=[Local, Memory], ids=["local", "memory"])
def stores(request, tmp_path):
    return request.param(tmp_path)


def kinds(store, path):
    return {
        e.name: "symlink" if e.is_symlink() else "dir" if e.is_dir(follow_symlinks=False)
        else "file" if e.is_file(follow_symlinks=False) else "other"
        for e in store.list(path)
    }


def test_capabilities_are_data(stores):
    capabilities = stores.registry.capabilities
    assert (capabilities.has_directories, capabilities.has_symlinks, capabilities.atomic_rename) == (True, True, True)


def test_list_gives_every_kind_without_following(stores):
    registry = stores.registry
    stores.put(registry, "blobs/sha256/ab/data", b"12345")
    stores.symlink(registry, "blobs/sha256/elsewhere", "/etc")
    stores.fifo(registry, "blobs/sha256/pipe")
    assert kinds(registry, "") == {"blobs": "dir"}
    assert kinds(registry, "blobs/sha256") == {"ab": "dir", "elsewhere": "symlink", "pipe": "other"}
    (data,) = registry.list("blobs/sha256/ab")
    assert data.stat(follow_symlinks=False).st_size == 5


def test_list_of_what_is_missing_or_a_file(stores):
    stores.put(stores.registry, "a/file")
    with pytest.raises(FileNotFoundError):
        stores.registry.list("a/missing")
    with pytest.raises(NotADirectoryError):
        stores.registry.list("a/file")


def test_read_up_to_a_limit_whatever_the_expected_size(stores):
    registry = stores.registry
    stores.put(registry, "x/data", b"0123456789" * 10_000)
    assert registry.read("x/data", 5, 1000) == b"01234"
    assert registry.read("x/data", 1 << 20, 10) == b"0123456789" * 10_000  # grown since listed
    assert registry.read("x/data", 1 << 20, 10**6) == b"0123456789" * 10_000  # shrunk since listed
    stores.put(registry, "x/empty")
    assert registry.read("x/empty", 10, 0) == b""


def test_read_never_follows_a_symbolic_link(stores):
    registry = stores.registry
    stores.put(registry, "x/real", b"content")
    stores.symlink(registry, "x/link", "real")
    with pytest.raises(OSError) as raised:
        registry.read("x/link", 100, 7)
    assert raised.value.errno == errno.ELOOP
    with pytest.raises(IsADirectoryError):
        registry.read("x", 100, 7)
    with pytest.raises(FileNotFoundError):
        registry.read("x/missing", 100, 7)


def test_stat(stores):
    registry = stores.registry
    stores.put(registry, "x/file", b"abc", mode=0o640)
    stores.symlink(registry, "x/link", "file")
    assert registry.stat("x/missing") is None
    info = registry.stat("x/file")
    assert (info.kind, info.size, info.mode) == (EntryKind.FILE, 3, 0o640)
    assert registry.stat("x").kind is EntryKind.DIR
    link = registry.stat("x/link")
    assert (link.kind, link.symlink_target) == (EntryKind.SYMLINK, "file")
    assert registry.linked_parents("x/link/below") == ["x/link"]
    assert registry.linked_parents("x/file") == []


def test_digest_through_a_reused_buffer(stores):
    registry = stores.registry
    content = os.urandom(3 * 1024 + 5)
    stores.put(registry, "blobs/sha256/ab/abcd/data", content)
    seen = []
    buffer = memoryview(bytearray(1024))
    with registry.reader(["blobs/sha256", "blobs/sha512"]) as reader:
        assert reader.digest("blobs/sha256", "ab/abcd/data", "sha256", buffer, seen.append) == hashlib.sha256(
            content
        ).digest()
        with pytest.raises(FileNotFoundError):
            reader.digest("blobs/sha512", "ab/abcd/data", "sha512", buffer, seen.append)
    assert sum(seen) == len(content) and max(seen) <= 1024


def test_write_atomically_copies_owner_and_mode_from_a_sibling(stores):
    registry, quarantine = stores.registry, stores.quarantine
    quarantine.make_dir("run/tmp", 0o700, parents=True)
    stores.put(registry, "r/_layers/sha256/aa/link", b"old", mode=0o600)
    changed = registry.write_atomically(
        "r/_layers/sha256/bb/link", b"new", staging=(quarantine, "run/tmp/t1"),
        siblings_in=["r/_layers/sha256"], anywhere_below=[],
    )
    assert changed == {"r/_layers/sha256/bb", "r/_layers/sha256"}
    assert registry.read("r/_layers/sha256/bb/link", 100, 3) == b"new"
    assert registry.stat("r/_layers/sha256/bb/link").mode == 0o600
    assert quarantine.list("run/tmp") == []  # nothing staged is left behind
    registry.write_atomically(
        "r/_layers/sha256/bb/link", b"newer", staging=(quarantine, "run/tmp/t2"), siblings_in=[], anywhere_below=[]
    )
    assert registry.read("r/_layers/sha256/bb/link", 100, 5) == b"newer"
    assert registry.stat("r/_layers/sha256/bb/link").mode == 0o644  # no model: the registry's default


def test_write_atomically_finds_a_model_anywhere_below(stores):
    registry, quarantine = stores.registry, stores.quarantine
    quarantine.make_dir("tmp", 0o700, parents=True)
    stores.put(registry, "r/_manifests/revisions/sha256/cc/link", b"x", mode=0o604)
    registry.write_atomically(
        "r/_manifests/tags/t/current/link", b"y", staging=(quarantine, "tmp/t"),
        siblings_in=["r/_manifests/tags/t"], anywhere_below=["r/_layers", "r/_manifests"],
    )
    assert registry.stat("r/_manifests/tags/t/current/link").mode == 0o604


def test_move_into_the_quarantine_and_back(stores):
    registry, quarantine = stores.registry, stores.quarantine
    stores.put(registry, "blobs/sha256/ab/abcd/data", b"blob")
    assert registry.shares_volume(quarantine)
    quarantine.make_dir("", 0o700, parents=True, exist_ok=True)
    quarantine.make_dir("run/files/blobs/sha256/ab", 0o700, parents=True, exist_ok=True)
    registry.move("blobs/sha256/ab/abcd", quarantine, "run/files/blobs/sha256/ab/abcd")
    assert registry.stat("blobs/sha256/ab/abcd") is None
    assert quarantine.read("run/files/blobs/sha256/ab/abcd/data", 100, 4) == b"blob"
    quarantine.move("run/files/blobs/sha256/ab/abcd", registry, "blobs/sha256/ab/abcd")
    assert registry.read("blobs/sha256/ab/abcd/data", 100, 4) == b"blob"
    assert quarantine.list("run/files/blobs/sha256/ab") == []


def test_copy_keeps_the_original(stores):
    registry, quarantine = stores.registry, stores.quarantine
    stores.put(registry, "r/link", b"sha256:x", mode=0o640)
    quarantine.make_dir("saved", parents=True)
    registry.copy("r/link", quarantine, "saved/link")
    assert quarantine.read("saved/link", 100, 8) == registry.read("r/link", 100, 8) == b"sha256:x"
    assert quarantine.stat("saved/link").mode == 0o640


def test_directories(stores):
    registry = stores.registry
    registry.make_dir("a/b", 0o750, parents=True)
    registry.make_dir("a/b", exist_ok=True)
    with pytest.raises(FileExistsError):
        registry.make_dir("a/b")
    with pytest.raises(FileNotFoundError):
        registry.make_dir("x/y")
    stores.put(registry, "a/b/file")
    with pytest.raises(OSError) as raised:
        registry.remove_dir("a/b")
    assert raised.value.errno == errno.ENOTEMPTY
    registry.remove("a/b/file")
    registry.remove_dir("a/b")
    assert kinds(registry, "a") == {}
    registry.make_dir("a/c/d", parents=True)
    registry.set_owner("a/c", 0o701, os.getuid(), os.getgid())
    assert registry.stat("a/c").mode == 0o701
    registry.sync_dir("a")
    registry.remove_tree("a/c")
    assert registry.stat("a/c") is None


def test_journal_appends_and_reads_back_in_lines(stores):
    quarantine = stores.quarantine
    quarantine.make_dir("run", parents=True)
    journal = quarantine.open_journal("run/journal.jsonl", new=True)
    journal.append(b'{"a":1}\n')
    journal.append(b'{"b":2}\n{"c":3}\n')
    journal.close()
    with pytest.raises(FileExistsError):
        quarantine.open_journal("run/journal.jsonl", new=True)
    again = quarantine.open_journal("run/journal.jsonl", new=False)
    again.append(b'{"d":4}\n')
    again.close()
    assert list(quarantine.lines("run/journal.jsonl")) == [b'{"a":1}\n', b'{"b":2}\n', b'{"c":3}\n', b'{"d":4}\n']


def test_lock_is_held_until_released(stores):
    quarantine = stores.quarantine
    quarantine.make_dir("", 0o700, parents=True, exist_ok=True)
    other = LocalStore(quarantine.root) if isinstance(quarantine, LocalStore) else quarantine
    with quarantine.lock("lock"), pytest.raises(LockHeld), other.lock("lock"):
        pass
    with other.lock("lock"):
        pass
