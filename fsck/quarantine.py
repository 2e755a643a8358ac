"""The quarantine: where a repair run keeps what it removed, with its journal; runs, undo, purge.

The quarantine is a store of its own (beside the registry's, on the same file system), laid
out here as the registry's tree is in `layout`:

    <quarantine>/
      lock                        held while a run, undo or purge works
      <run>/journal.jsonl         header, then one entry per change, then "commit"
      <run>/files/<path>          what the run removed, at its path relative to v2
      <run>/tmp/                  links are written here, then renamed into place

The journal entry describing a change is durable before the change is made (see `apply`),
so `undo` knows everything that may have happened: an entry whose change did not happen is
simply skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import orjson

from . import layout
from .plan import Kind
from .store import EntryKind, LockHeld, Store, is_dir

JOURNAL_FORMAT = "registry-fsck/journal/1"
JOURNAL = "journal.jsonl"
FILES = "files"
TEMPORARY = "tmp"
LOCK = "lock"
QUARANTINE_NAME = "registry-fsck-quarantine"
_CHANGES = (Kind.MOVE.value, Kind.WRITE_LINK.value, "rmdir")


class ApplyError(Exception):
    """A run cannot start or continue; the message is one line for the user."""


def journal_of(run: str) -> str:
    return f"{run}/{JOURNAL}"


def removed_path(run: str, relative: str) -> str:
    """Where the run keeps what it removed from `relative`."""
    return f"{run}/{FILES}/{relative}"


def put_path(entry: dict, key: str, path: str) -> dict:
    """Paths go into the journal as text; one that is not valid UTF-8 also as its bytes, to come back exact."""
    raw = path.encode("utf-8", "surrogateescape")
    try:
        entry[key] = raw.decode("utf-8")
    except UnicodeDecodeError:
        entry[key] = raw.decode("utf-8", "backslashreplace")
        entry[key + "_bytes"] = raw.hex()
    return entry


def get_path(entry: dict, key: str) -> str:
    raw = entry.get(key + "_bytes")
    return bytes.fromhex(raw).decode("utf-8", "surrogateescape") if raw else entry[key]


def journal_lines(entries: list[dict]) -> bytes:
    return b"".join(orjson.dumps(entry) + b"\n" for entry in entries)


def mark_purged(quarantine: Store, run: str) -> None:
    journal = quarantine.open_journal(journal_of(run), new=False)
    try:
        journal.append(journal_lines([{"op": "purged"}]))
    finally:
        journal.close()


def safe_path(store: Store, relative: str) -> str:
    """`relative`, refusing anything that is not plainly inside the store or goes through a symlink."""
    parts = relative.split("/")
    if not relative or relative.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ApplyError(f"refusing unsafe path {relative!r}")
    linked = store.linked_parent(relative)
    if linked is not None:
        raise ApplyError(f"refusing to go through the symbolic link {os.path.join(store.root, linked)}")
    return relative


def default_quarantine(v2: str) -> str:
    """Beside the registry's `docker/` tree, in its rootdirectory: same file system, outside what it serves."""
    root = layout.rootdirectory_of(v2)
    base = root if root != os.path.abspath(v2) else os.path.dirname(os.path.abspath(v2))
    return os.path.join(base, QUARANTINE_NAME)


def check_quarantine(quarantine: Store, registry: Store) -> None:
    """Refuse a quarantine inside the registry's tree or on another file system; creates nothing."""
    real_quarantine = quarantine.resolve(quarantine.root)
    real_v2 = registry.resolve(registry.root)
    on_its_own = layout.rootdirectory_of(registry.root) == real_v2
    registry_tree = real_v2 if on_its_own else os.path.dirname(os.path.dirname(real_v2))
    if real_quarantine == registry_tree or real_quarantine.startswith(registry_tree + os.sep):
        raise ApplyError(f"{quarantine.root}: the quarantine must be outside the registry's tree {registry_tree}")
    if not registry.shares_volume(quarantine):
        raise ApplyError(
            f"{quarantine.root}: on another file system than {registry.root}; moving there would copy. "
            "Choose a --quarantine on the same file system, or --delete"
        )


@contextmanager
def locked(quarantine: Store) -> Iterator[None]:
    quarantine.make_dir("", 0o700, parents=True, exist_ok=True)
    with ExitStack() as held:
        try:
            held.enter_context(quarantine.lock(LOCK))
        except LockHeld:
            raise ApplyError(f"{quarantine.root}: another registry-fsck run holds the lock") from None
        yield


@dataclass(frozen=True, slots=True)
class Run:
    run: str
    started: str
    committed: bool
    purged: bool
    changes: int
    bytes: int  # what its removals hold in the quarantine (0 once purged)


def _read_journal(quarantine: Store, run: str) -> list[dict]:
    entries = []
    try:
        for line in quarantine.lines(journal_of(run)):
            try:
                entries.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                break  # a torn last line after a crash: nothing after it happened
    except OSError as error:
        raise ApplyError(f"{os.path.join(quarantine.root, run)}: cannot read its journal: {error.strerror}") from None
    if not entries or entries[0].get("format") != JOURNAL_FORMAT:
        raise ApplyError(f"{os.path.join(quarantine.root, run)}: not a registry-fsck run")
    return entries


def list_runs(quarantine: Store) -> list[Run]:
    runs = []
    try:
        names = sorted(entry.name for entry in quarantine.list(""))
    except FileNotFoundError:
        return []
    for name in names:
        if name == LOCK or not is_dir(quarantine, name):
            continue
        try:
            entries = _read_journal(quarantine, name)
        except ApplyError:
            continue
        ops = [e.get("op") for e in entries[1:]]
        purged = "purged" in ops
        changes = [e for e in entries[1:] if e.get("op") in _CHANGES]
        runs.append(Run(
            name, entries[0].get("started", ""), "commit" in ops, purged, len(changes),
            0 if purged else sum(e.get("bytes", 0) for e in changes if e.get("op") == Kind.MOVE.value),
        ))
    return runs


@dataclass(slots=True)
class UndoOutcome:
    run: str
    restored: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


def undo(quarantine: Store, registry: Store, run: str | None = None) -> UndoOutcome:
    """Put a run's changes back, newest first. The caller holds the lock."""
    known = list_runs(quarantine)
    runs = [r for r in known if not r.purged]
    if run is None:
        if not runs:
            raise ApplyError(f"{quarantine.root}: no run to undo")
        run = runs[-1].run
    elif run not in {r.run for r in known}:
        raise ApplyError(f"{run}: no such run in {quarantine.root}")
    elif run not in {r.run for r in runs}:
        raise ApplyError(f"{run}: its quarantine was purged; nothing to restore")
    entries = _read_journal(quarantine, run)
    outcome = UndoOutcome(run)
    journaled_v2 = get_path(entries[0], "v2")
    if registry.resolve(journaled_v2) != registry.resolve(registry.root):
        raise ApplyError(f"{run}: a run on {journaled_v2}, not on {registry.root}")
    for entry in reversed(entries[1:]):
        if entry.get("op") not in _CHANGES:
            continue
        relative = get_path(entry, "path")
        try:
            _undo_entry(entry, relative, registry, quarantine, run, outcome)
        except OSError as error:  # the others are still put back; the run stays to try again
            outcome.skipped.append((relative, f"could not restore: {error.strerror or error}"))
    if not outcome.skipped:
        quarantine.remove_tree(run)
    return outcome


def _undo_entry(entry: dict, relative: str, registry: Store, quarantine: Store, run: str, outcome: UndoOutcome) -> None:
    """Put one journaled change back, or say in `outcome` why not."""
    op = entry["op"]
    safe_path(registry, relative)
    saved = removed_path(run, relative)
    parent = relative.rpartition("/")[0]
    if op == "rmdir":
        if registry.stat(relative) is None:
            registry.make_dir(relative, entry["mode"])
            outcome.restored += 1
        here = registry.stat(relative)
        if here is not None and here.kind is EntryKind.DIR:
            # Again on every replay: an undo killed between mkdir and chown must not leave root's directory.
            registry.set_owner(relative, entry["mode"], entry["uid"], entry["gid"])
    elif op == Kind.MOVE.value:
        if quarantine.stat(saved) is not None and _is_empty_dir(registry, relative):
            registry.remove_dir(relative)  # re-created as a parent by an earlier restore: nothing in it to keep
        if quarantine.stat(saved) is not None and registry.stat(relative) is None:
            registry.make_dir(parent, parents=True, exist_ok=True)
            quarantine.move(saved, registry, relative)
            outcome.restored += 1
        elif quarantine.stat(saved) is not None:
            outcome.skipped.append((relative, "something new is at its place; left in the quarantine"))
    else:
        content = entry.get("content", "")
        if entry.get("replaced"):
            if quarantine.stat(saved) is not None:
                ours = _holds(registry, relative, content) or _unchanged(registry, relative, quarantine, saved)
                if registry.stat(relative) is not None and not ours:  # the registry wrote it since: keep what it wrote
                    outcome.skipped.append((relative, "rewritten since the run; the original stays quarantined"))
                else:
                    registry.make_dir(parent, parents=True, exist_ok=True)
                    quarantine.move(saved, registry, relative)
                    outcome.restored += 1
        elif _holds(registry, relative, content):
            registry.remove(relative)
            for directory in reversed(entry.get("created_dirs", [])):
                safe_path(registry, directory)
                try:
                    registry.remove_dir(directory)
                except OSError:
                    break
            outcome.restored += 1


def _holds(registry: Store, relative: str, content: str) -> bool:
    """Whether `relative` is the link a run wrote (and not one the registry wrote since)."""
    try:
        return registry.read(relative, layout.MAX_LINK_BYTES, layout.MAX_LINK_BYTES) == content.encode()
    except OSError:
        return False


def _unchanged(registry: Store, relative: str, quarantine: Store, saved: str) -> bool:
    """Whether `relative` still is what the run saved from it (a run stopped before it rewrote the link)."""
    limit = layout.MAX_LINK_BYTES + 1
    current, original = registry.stat(relative), quarantine.stat(saved)
    current_is_link = current is not None and current.kind is EntryKind.SYMLINK
    original_is_link = original is not None and original.kind is EntryKind.SYMLINK
    if current_is_link or original_is_link:
        return (
            current_is_link and original_is_link and current.symlink_target is not None
            and current.symlink_target == original.symlink_target
        )
    try:
        return registry.read(relative, limit, limit) == quarantine.read(saved, limit, limit)
    except OSError:
        return False


def _is_empty_dir(store: Store, relative: str) -> bool:
    here = store.stat(relative)
    try:
        return here is not None and here.kind is EntryKind.DIR and not store.list(relative)
    except OSError:
        return False


def purge(quarantine: Store, runs: list[str]) -> int:
    """Free the space runs hold: delete their quarantined files, keep their journals. Returns bytes freed."""
    freed = 0
    known = {r.run: r for r in list_runs(quarantine)}
    for run in runs:
        if run not in known:
            raise ApplyError(f"{run}: no such run in {quarantine.root}")
        files = f"{run}/{FILES}"
        if is_dir(quarantine, files):
            freed += known[run].bytes
            quarantine.remove_tree(files)
            mark_purged(quarantine, run)
    return freed
