"""Carry out a plan, journaled and crash-safe; undo a run; list and purge the quarantine.

Every removal is a rename into the run's quarantine directory on the same file system:
instant, atomic, and reversible. The journal entry describing a change is fsynced
before the change is made, so after a crash `undo` knows everything that may have
happened: an entry whose change did not happen is simply skipped.

    <quarantine>/
      lock                        held while a run, undo or purge works
      <run>/journal.jsonl         header, then one entry per change, then "commit"
      <run>/files/<path>          what the run removed, at its path relative to v2
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

import orjson

from . import layout
from .plan import Action, Kind, Plan

JOURNAL_FORMAT = "registry-fsck/journal/1"
JOURNAL = "journal.jsonl"
FILES = "files"
TEMPORARY = "tmp"  # links are written here, then renamed into place: a crash leaves nothing in the tree
LOCK = "lock"
QUARANTINE_NAME = "registry-fsck-quarantine"
BATCH = 256  # journal entries made durable together, before any of their changes


class ApplyError(Exception):
    """A run cannot start or continue; the message is one line for the user."""


def _put_path(entry: dict, key: str, path: str) -> dict:
    """Paths go into the journal as text; one that is not valid UTF-8 also as its bytes, to come back exact."""
    raw = path.encode("utf-8", "surrogateescape")
    try:
        entry[key] = raw.decode("utf-8")
    except UnicodeDecodeError:
        entry[key] = raw.decode("utf-8", "backslashreplace")
        entry[key + "_bytes"] = raw.hex()
    return entry


def _get_path(entry: dict, key: str) -> str:
    raw = entry.get(key + "_bytes")
    return bytes.fromhex(raw).decode("utf-8", "surrogateescape") if raw else entry[key]


def default_quarantine(v2: str) -> str:
    """Beside the registry's `docker/` tree, in its rootdirectory: same file system, outside what it serves."""
    root = layout.rootdirectory_of(v2)
    base = root if root != os.path.abspath(v2) else os.path.dirname(os.path.abspath(v2))
    return os.path.join(base, QUARANTINE_NAME)


def check_quarantine(quarantine: str, v2: str) -> None:
    """Refuse a quarantine inside the registry's tree or on another file system; creates nothing."""
    real_quarantine = os.path.realpath(quarantine)
    real_v2 = os.path.realpath(v2)
    registry_tree = os.path.dirname(os.path.dirname(real_v2)) if layout.rootdirectory_of(v2) != real_v2 else real_v2
    if real_quarantine == registry_tree or real_quarantine.startswith(registry_tree + os.sep):
        raise ApplyError(f"{quarantine}: the quarantine must be outside the registry's tree {registry_tree}")
    existing = real_quarantine
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if os.stat(existing).st_dev != os.stat(v2).st_dev:
        raise ApplyError(
            f"{quarantine}: on another file system than {v2}; moving there would copy. "
            "Choose a --quarantine on the same file system, or --delete"
        )


@contextmanager
def locked(quarantine: str) -> Iterator[None]:
    os.makedirs(quarantine, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(quarantine, LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ApplyError(f"{quarantine}: another registry-fsck run holds the lock") from None
        yield
    finally:
        os.close(fd)


@dataclass(slots=True)
class Outcome:
    run: str
    done: list[Action] = field(default_factory=list)
    vanished: list[Action] = field(default_factory=list)  # gone before the run reached it
    failed: list[tuple[Action, str]] = field(default_factory=list)
    directories_removed: int = 0
    deleted: bool = False

    @property
    def bytes(self) -> int:
        return sum(a.bytes for a in self.done)


class _Journal:
    def __init__(self, path: str, header: dict) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        self._seq = 0
        self.write([header])
        _fsync_dir(os.path.dirname(path))

    def write(self, entries: list[dict]) -> None:
        data = b"".join(orjson.dumps(entry) + b"\n" for entry in entries)
        os.write(self._fd, data)
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _safe(v2: str, relative: str) -> str:
    """The absolute path of `relative`, refusing anything that is not plainly inside v2 or goes through a symlink."""
    parts = relative.split("/")
    if not relative or relative.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ApplyError(f"refusing unsafe path {relative!r}")
    current = v2
    for part in parts[:-1]:
        current = os.path.join(current, part)
        if os.path.islink(current):
            raise ApplyError(f"refusing to go through the symbolic link {current}")
    return os.path.join(v2, *parts)


def new_run_id(now: datetime) -> str:
    """Sorts in the order runs started (undo takes the newest), and is unique."""
    return f"{now:%Y%m%dT%H%M%S.%fZ}-{secrets.token_hex(3)}"


def apply(
    plan: Plan,
    v2: str,
    quarantine: str,
    *,
    now: datetime,
    delete: bool = False,
    progress: Callable[[int], None] | None = None,
    after_action: Callable[[int], None] | None = None,
) -> Outcome:
    """Carry out `plan`. The caller holds the lock. `after_action(n)` runs after the n-th change (tests)."""
    advance = progress or (lambda _n: None)
    run = new_run_id(now)
    run_dir = os.path.join(quarantine, run)
    os.makedirs(os.path.join(run_dir, FILES), mode=0o700)
    os.mkdir(os.path.join(run_dir, TEMPORARY), mode=0o700)
    _fsync_dir(quarantine)
    journal = _Journal(os.path.join(run_dir, JOURNAL), _put_path({
        "format": JOURNAL_FORMAT, "run": run, "started": now.isoformat(timespec="seconds"), "delete": delete,
    }, "v2", v2))
    outcome = Outcome(run, deleted=delete)
    count = 0
    try:
        actions = list(plan.actions)
        for start in range(0, len(actions), BATCH):
            batch = actions[start:start + BATCH]
            journal.write([_entry(action, v2) for action in batch])
            touched: set[str] = set()
            for action in batch:
                touched |= _carry_out(action, v2, run_dir, outcome)
                count += 1
                advance(1)
                if after_action:
                    after_action(count)
            for directory in touched:
                _fsync_dir(directory)
        outcome.directories_removed = _remove_emptied_dirs(outcome, v2, journal, after_action, count)
        journal.write([{"op": "commit", "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}])
    finally:
        journal.close()
    if delete:
        shutil.rmtree(os.path.join(run_dir, FILES))
        with open(os.path.join(run_dir, JOURNAL), "ab") as handle:
            handle.write(orjson.dumps({"op": "purged"}) + b"\n")
    return outcome


def _entry(action: Action, v2: str) -> dict:
    entry = _put_path({"op": action.kind.value, "finding": action.finding, "bytes": action.bytes}, "path", action.path)
    if action.kind is Kind.WRITE_LINK:
        entry["content"] = layout.format_digest(action.content)
        existed = os.path.lexists(_safe(v2, action.path))
        entry["replaced"] = existed
        entry["created_dirs"] = _missing_dirs(v2, action.path)
    return entry


def _missing_dirs(v2: str, relative: str) -> list[str]:
    missing = []
    parent = os.path.dirname(relative)
    while parent and not os.path.isdir(os.path.join(v2, parent)):
        missing.append(parent)
        parent = os.path.dirname(parent)
    return list(reversed(missing))


def _carry_out(action: Action, v2: str, run_dir: str, outcome: Outcome) -> set[str]:
    """Make one change; returns the directories whose entries it changed (to fsync)."""
    try:
        source = _safe(v2, action.path)
        if action.kind is Kind.MOVE:
            if not os.path.lexists(source):
                outcome.vanished.append(action)
                return set()
            target = os.path.join(run_dir, FILES, action.path)
            os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
            os.rename(source, target)
            touched = {os.path.dirname(source), os.path.dirname(target)}
        else:
            touched = _write_link(action, v2, source, run_dir)
    except (OSError, ApplyError) as error:
        outcome.failed.append((action, getattr(error, "strerror", None) or str(error)))
        return set()
    outcome.done.append(action)
    return touched


def _write_link(action: Action, v2: str, path: str, run_dir: str) -> set[str]:
    """Write a link as the registry would: owner and mode from the links beside it, atomically."""
    parent = os.path.dirname(path)
    model = _ownership_model(parent)
    created = []
    probe = parent
    while not os.path.isdir(probe):
        created.append(probe)
        probe = os.path.dirname(probe)
    for directory in reversed(created):
        os.mkdir(directory, stat.S_IMODE(model.st_mode) if stat.S_ISDIR(model.st_mode) else 0o755)
        _chown_like(directory, model)
    if os.path.lexists(path):
        saved = os.path.join(run_dir, FILES, action.path)
        os.makedirs(os.path.dirname(saved), mode=0o700, exist_ok=True)
        shutil.copy2(path, saved, follow_symlinks=False)
        _fsync_file(saved)
        _fsync_dir(os.path.dirname(saved))
    temporary = os.path.join(run_dir, TEMPORARY, secrets.token_hex(8))
    with open(temporary, "wb") as handle:
        handle.write(layout.format_digest(action.content).encode())
        handle.flush()
        os.fsync(handle.fileno())
    file_model = _link_model(v2, action.path)
    os.chmod(temporary, stat.S_IMODE(file_model.st_mode) if file_model else 0o644)
    _chown_like(temporary, file_model or model)
    os.rename(temporary, path)
    return {parent, *created, *(os.path.dirname(directory) for directory in created)}


def _ownership_model(directory: str) -> os.stat_result:
    """The nearest existing directory at or above `directory`: new directories copy its owner and mode."""
    probe = directory
    while not os.path.isdir(probe):
        probe = os.path.dirname(probe)
    return os.stat(probe)


def _link_model(v2: str, relative: str) -> os.stat_result | None:
    """A link whose owner and mode a new link copies: a sibling's (`<alg>/<other hex>/link`), else any link
    in the same repository."""
    parts = relative.split("/")
    for depth in (len(parts) - 2, len(parts) - 3):
        base = os.path.join(v2, *parts[:depth])
        try:
            for entry in os.scandir(base):
                candidate = os.path.join(entry.path, layout.LINK)
                if entry.is_dir(follow_symlinks=False) and os.path.isfile(candidate) and not os.path.islink(candidate):
                    return os.lstat(candidate)
        except OSError:
            continue
    marker = next((i for i, part in enumerate(parts) if part in layout.REPOSITORY_MARKERS), None)
    if marker is None:
        return None
    for store in (layout.LAYERS, layout.MANIFESTS):  # the repository's own, not a nested repository's
        for directory, _, names in os.walk(os.path.join(v2, *parts[:marker], store)):
            if layout.LINK in names and not os.path.islink(os.path.join(directory, layout.LINK)):
                return os.lstat(os.path.join(directory, layout.LINK))
    return None


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _chown_like(path: str, model: os.stat_result) -> None:
    try:
        os.chown(path, model.st_uid, model.st_gid, follow_symlinks=False)
    except PermissionError:
        pass  # not root: the file is ours, as everything else this user writes


def _remove_emptied_dirs(
    outcome: Outcome, v2: str, journal: _Journal, after_action: Callable[[int], None] | None, count: int
) -> int:
    """Remove the directories this run left empty, deepest first, up to the layout's fixed directories."""
    candidates = set()
    for action in outcome.done:
        if action.kind is Kind.MOVE:
            parent = os.path.dirname(action.path)
            while parent and not layout.is_structural(parent):
                candidates.add(parent)
                parent = os.path.dirname(parent)
    removed = 0
    for relative in sorted(candidates, key=lambda p: (-p.count("/"), p)):
        path = _safe(v2, relative)
        try:
            if os.path.islink(path) or not os.path.isdir(path) or os.listdir(path):
                continue
            info = os.lstat(path)
        except OSError:
            continue
        journal.write([_put_path({
            "op": "rmdir", "mode": stat.S_IMODE(info.st_mode), "uid": info.st_uid, "gid": info.st_gid,
        }, "path", relative)])
        try:
            os.rmdir(path)
        except OSError:
            continue
        removed += 1
        count += 1
        if after_action:
            after_action(count)
    return removed


# Runs: list, undo, purge.


@dataclass(frozen=True, slots=True)
class Run:
    run: str
    started: str
    committed: bool
    purged: bool
    changes: int
    bytes: int  # what its removals hold in the quarantine (0 once purged)


def _read_journal(run_dir: str) -> list[dict]:
    entries = []
    try:
        with open(os.path.join(run_dir, JOURNAL), "rb") as handle:
            for line in handle:
                try:
                    entries.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    break  # a torn last line after a crash: nothing after it happened
    except OSError as error:
        raise ApplyError(f"{run_dir}: cannot read its journal: {error.strerror}") from None
    if not entries or entries[0].get("format") != JOURNAL_FORMAT:
        raise ApplyError(f"{run_dir}: not a registry-fsck run")
    return entries


def list_runs(quarantine: str) -> list[Run]:
    runs = []
    try:
        names = sorted(os.listdir(quarantine))
    except FileNotFoundError:
        return []
    for name in names:
        run_dir = os.path.join(quarantine, name)
        if name == LOCK or not os.path.isdir(run_dir):
            continue
        try:
            entries = _read_journal(run_dir)
        except ApplyError:
            continue
        ops = [e.get("op") for e in entries[1:]]
        purged = "purged" in ops
        changes = [e for e in entries[1:] if e.get("op") in (Kind.MOVE.value, Kind.WRITE_LINK.value, "rmdir")]
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


def undo(quarantine: str, v2: str, run: str | None = None) -> UndoOutcome:
    """Put a run's changes back, newest first. The caller holds the lock."""
    known = list_runs(quarantine)
    runs = [r for r in known if not r.purged]
    if run is None:
        if not runs:
            raise ApplyError(f"{quarantine}: no run to undo")
        run = runs[-1].run
    elif run not in {r.run for r in known}:
        raise ApplyError(f"{run}: no such run in {quarantine}")
    elif run not in {r.run for r in runs}:
        raise ApplyError(f"{run}: its quarantine was purged; nothing to restore")
    run_dir = os.path.join(quarantine, run)
    entries = _read_journal(run_dir)
    outcome = UndoOutcome(run)
    journaled_v2 = _get_path(entries[0], "v2")
    if os.path.realpath(journaled_v2) != os.path.realpath(v2):
        raise ApplyError(f"{run}: a run on {journaled_v2}, not on {v2}")
    for entry in reversed(entries[1:]):
        if entry.get("op") not in (Kind.MOVE.value, Kind.WRITE_LINK.value, "rmdir"):
            continue
        relative = _get_path(entry, "path")
        try:
            _undo_entry(entry, relative, v2, run_dir, outcome)
        except OSError as error:  # the others are still put back; the run stays to try again
            outcome.skipped.append((relative, f"could not restore: {error.strerror or error}"))
    if not outcome.skipped:
        shutil.rmtree(run_dir)
    return outcome


def _undo_entry(entry: dict, relative: str, v2: str, run_dir: str, outcome: UndoOutcome) -> None:
    """Put one journaled change back, or say in `outcome` why not."""
    op = entry["op"]
    path = _safe(v2, relative)
    saved = os.path.join(run_dir, FILES, relative)
    if op == "rmdir":
        if not os.path.lexists(path):
            os.mkdir(path, entry["mode"])
            outcome.restored += 1
        if os.path.isdir(path) and not os.path.islink(path):
            # Again on every replay: an undo killed between mkdir and chown must not leave root's directory.
            os.chmod(path, entry["mode"])
            _chown(path, entry["uid"], entry["gid"])
    elif op == Kind.MOVE.value:
        if os.path.lexists(saved) and _is_empty_dir(path):
            os.rmdir(path)  # re-created as a parent by an earlier restore: nothing in it to keep
        if os.path.lexists(saved) and not os.path.lexists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.rename(saved, path)
            outcome.restored += 1
        elif os.path.lexists(saved):
            outcome.skipped.append((relative, "something new is at its place; left in the quarantine"))
    else:
        if entry.get("replaced"):
            if os.path.lexists(saved):
                ours = _holds(path, entry.get("content", "")) or _unchanged(path, saved)
                if os.path.lexists(path) and not ours:  # the registry wrote it since: keep what it wrote
                    outcome.skipped.append((relative, "rewritten since the run; the original stays quarantined"))
                else:
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    os.rename(saved, path)
                    outcome.restored += 1
        elif _holds(path, entry.get("content", "")):
            os.unlink(path)
            for directory in reversed(entry.get("created_dirs", [])):
                try:
                    os.rmdir(_safe(v2, directory))
                except OSError:
                    break
            outcome.restored += 1


def _holds(path: str, content: str) -> bool:
    """Whether `path` is the link a run wrote (and not one the registry wrote since)."""
    try:
        with open(path, "rb") as handle:
            return not os.path.islink(path) and handle.read(layout.MAX_LINK_BYTES) == content.encode()
    except OSError:
        return False


def _unchanged(path: str, saved: str) -> bool:
    """Whether `path` still is what the run saved from it (a run stopped before it rewrote the link)."""
    limit = layout.MAX_LINK_BYTES + 1
    try:
        if os.path.islink(path) or os.path.islink(saved):
            return os.path.islink(path) and os.path.islink(saved) and os.readlink(path) == os.readlink(saved)
        with open(path, "rb") as current, open(saved, "rb") as original:
            return current.read(limit) == original.read(limit)
    except OSError:
        return False


def _is_empty_dir(path: str) -> bool:
    try:
        return not os.path.islink(path) and os.path.isdir(path) and not os.listdir(path)
    except OSError:
        return False


def _chown(path: str, uid: int, gid: int) -> None:
    try:
        os.chown(path, uid, gid, follow_symlinks=False)
    except PermissionError:
        pass


def purge(quarantine: str, runs: list[str]) -> int:
    """Free the space runs hold: delete their quarantined files, keep their journals. Returns bytes freed."""
    freed = 0
    known = {r.run: r for r in list_runs(quarantine)}
    for run in runs:
        if run not in known:
            raise ApplyError(f"{run}: no such run in {quarantine}")
        files = os.path.join(quarantine, run, FILES)
        if os.path.isdir(files):
            freed += known[run].bytes
            shutil.rmtree(files)
            with open(os.path.join(quarantine, run, JOURNAL), "ab") as handle:
                handle.write(orjson.dumps({"op": "purged"}) + b"\n")
    return freed
