"""The quarantine: where a repair run keeps what it removed, with its journal; runs, undo, purge.

The quarantine is a store of its own (beside the registry's, on the same file system), laid
out here as the registry's tree is in `layout`:

    <quarantine>/
      lock                        held while a run, undo or purge works
      <run>/journal.jsonl         header (with the repair's options), then one entry per change,
                                  a "done" record after each batch, "commit"; then what undo and
                                  purge did ("undo"/"undone", "purge"/"purged")
      <run>/files/<path>          what the run removed, at its path relative to v2
      <run>/tmp/                  links are written here, then renamed into place

The journal entry describing a change is durable before the change is made (see `apply`),
so `undo` knows everything that may have happened: an entry whose change did not happen is
simply skipped. A "done" record says which entries before it were carried out. Entries a
crash left without one (at most the last batch) are checked against the trees: by `runs`
each time, and once for good by `undo` and `purge` before they change what the trees show.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum

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
DONE = "done"


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


def done_record(not_done: list[int]) -> dict:
    """Closes the change entries journaled since the last "done" record: all were carried out but
    those at `not_done` (their offsets among them: failed, or already gone)."""
    return {"op": DONE, "not_done": not_done}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _append(quarantine: Store, run: str, records: list[dict], ends_whole: bool = True) -> None:
    """Durable when it returns. After a line a crash tore (`ends_whole` False), a newline first."""
    journal = quarantine.open_journal(journal_of(run), new=False)
    try:
        journal.append((b"" if ends_whole else b"\n") + journal_lines(records))
    finally:
        journal.close()


def mark_purged(quarantine: Store, run: str) -> None:
    _append(quarantine, run, [{"op": "purged"}])


def safe_path(store: Store, relative: str, followed: Mapping[str, str] | None = None) -> str:
    """`relative`, refusing anything that is not plainly inside the store, or goes through a symbolic
    link other than the directory links in `followed` (link -> its real target), each still leading there."""
    parts = relative.split("/")
    if not relative or relative.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ApplyError(f"refusing unsafe path {relative!r}")
    for linked in store.linked_parents(relative):
        target = (followed or {}).get(linked)
        if target is None:
            raise ApplyError(f"refusing to go through the symbolic link {os.path.join(store.root, linked)}")
        if store.real_path(linked) != target:
            raise ApplyError(
                f"the symbolic link {os.path.join(store.root, linked)} leads elsewhere than {target} now"
            )
    return relative


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a run keeps what it removes: `main`, on v2's file system, holds the journal; what lies
    below a followed directory link on another file system goes to that file system's quarantine
    (a move is a rename only within one)."""

    main: Store
    elsewhere: tuple[tuple[str, Store], ...] = ()  # (a followed link, relative to v2; its file system's quarantine)
    followed: Mapping[str, str] = field(default_factory=dict)  # every followed link -> its real target

    def of(self, relative: str) -> Store:
        """The quarantine of the file system `relative` is on."""
        best: tuple[str, Store] | None = None
        for link, store in self.elsewhere:
            if (relative == link or relative.startswith(link + "/")) and (best is None or len(link) > len(best[0])):
                best = (link, store)
        return best[1] if best is not None else self.main

    @property
    def stores(self) -> tuple[Store, ...]:
        unique = {self.main.root: self.main}
        for _, store in self.elsewhere:
            unique.setdefault(store.root, store)
        return tuple(unique.values())

    def header(self) -> dict:
        """What the journal's header keeps of it, for undo, runs and purge."""
        return {
            "followed": dict(self.followed),
            "elsewhere": [[link, store.root] for link, store in self.elsewhere],
        }


def placement_of(quarantine: Store, header: dict) -> Placement:
    """The placement a run's journal header records (none recorded: everything in `quarantine`)."""
    return Placement(
        quarantine,
        tuple((link, quarantine.sibling(root)) for link, root in header.get("elsewhere", ())),
        dict(header.get("followed", {})),
    )


def entry_quarantine(placement: Placement, entry: dict) -> Store:
    """The quarantine holding what a journal entry removed."""
    named = entry.get("quarantine")
    if named is None:
        return placement.main
    return next((store for store in placement.stores if store.root == named), placement.main.sibling(named))


@contextmanager
def all_locked(placement: Placement) -> Iterator[None]:
    """Every quarantine of a run beyond the main one (whose lock the caller holds), locked."""
    with ExitStack() as held:
        for store in placement.stores[1:]:
            held.enter_context(locked(store))
        yield


def default_quarantine(v2: str) -> str:
    """Beside the registry's `docker/` tree, in its rootdirectory: same file system, outside what it serves."""
    root = layout.rootdirectory_of(v2)
    base = root if root != os.path.abspath(v2) else os.path.dirname(os.path.abspath(v2))
    return os.path.join(base, QUARANTINE_NAME)


def check_quarantine(quarantine: Store, registry: Store, link: str = "") -> None:
    """Refuse a quarantine inside the registry's tree, or on another file system than what it takes
    (`link`: a followed directory link, for the quarantine of its file system); creates nothing."""
    real_quarantine = quarantine.resolve(quarantine.root)
    real_v2 = registry.resolve(registry.root)
    on_its_own = layout.rootdirectory_of(registry.root) == real_v2
    registry_tree = real_v2 if on_its_own else os.path.dirname(os.path.dirname(real_v2))
    if real_quarantine == registry_tree or real_quarantine.startswith(registry_tree + os.sep):
        raise ApplyError(f"{quarantine.root}: the quarantine must be outside the registry's tree {registry_tree}")
    if not link and not registry.shares_volume(quarantine):
        raise ApplyError(
            f"{quarantine.root}: on another file system than {registry.root}; moving there would copy. "
            "Choose a --quarantine on the same file system"
        )
    if link:
        existing = quarantine.root
        while quarantine.sibling(existing).volume("") is None and existing != os.path.dirname(existing):
            existing = os.path.dirname(existing)
        if quarantine.sibling(existing).volume("") != registry.volume(link):
            raise ApplyError(
                f"no place for the quarantine of {os.path.join(registry.root, link)}: beside its target, "
                f"{quarantine.root} is on another file system (the target is the top of its own?), and "
                "inside the tree the registry would see it. Link a directory below that file system's top instead"
            )


@contextmanager
def locked(quarantine: Store) -> Iterator[None]:
    quarantine.make_dir("", 0o700, parents=True, exist_ok=True)
    with ExitStack() as held:
        try:
            held.enter_context(quarantine.lock(LOCK))
        except LockHeld as held:
            detail = f" ({held.holder})" if held.holder else ""
            raise ApplyError(f"{quarantine.root}: another registry-fsck run holds the lock{detail}") from None
        yield


class State(str, Enum):
    """What became of a run."""

    COMPLETE = "complete"
    INTERRUPTED = "interrupted"  # stopped before its commit; what it carried out stands
    UNDO_INTERRUPTED = "undo interrupted"
    PARTLY_UNDONE = "partly undone"  # some changes could not be put back; they stay in the quarantine
    UNDONE = "undone"
    PURGE_INTERRUPTED = "purge interrupted"
    PURGED = "purged"


@dataclass(frozen=True, slots=True)
class Run:
    run: str
    started: str
    state: State
    committed: bool
    journaled: int  # change entries in its journal: what may have happened
    changes: int  # of those, the ones carried out
    left: int | None  # changes not undone (None after an undo stopped part-way: not known)
    bytes: int  # what its removals hold in the quarantine now
    options: dict | None  # the repair's options; None in a journal from before they were kept

    @property
    def purged(self) -> bool:
        return self.state in (State.PURGED, State.PURGE_INTERRUPTED)

    @property
    def restorable(self) -> bool:
        """Has changes an undo can still put back."""
        return not self.purged and self.left != 0

    @property
    def holding(self) -> bool:
        """Its files/ may hold something for a purge to free."""
        return self.state not in (State.PURGED, State.UNDONE)


class _Reading:
    """A run's journal, record by record. A line that does not parse was torn by a crash as it was
    written: it was not durable yet, so its change never happened, and it is passed over."""

    def __init__(self, quarantine: Store, run: str) -> None:
        self.where = os.path.join(quarantine.root, run)
        self._lines = quarantine.lines(journal_of(run))
        self.ends_whole = True  # whether the last line has its newline

    def __iter__(self) -> Iterator[dict]:
        try:
            for line in self._lines:
                self.ends_whole = line.endswith(b"\n")
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
        except OSError as error:
            raise ApplyError(f"{self.where}: cannot read its journal: {error.strerror}") from None


@dataclass(slots=True)
class _Journal:
    """What a run's journal says, read once."""

    header: dict
    journaled: int = 0
    changes: int = 0
    moved: int = 0  # the bytes of the moves carried out
    open: list[dict] = field(default_factory=list)  # change entries no "done" record closes yet
    committed: bool = False
    undo: dict | None = None  # the last undo's record: "undo" as it started, "undone" once finished
    purge: dict | None = None  # likewise "purge", "purged"
    ends_whole: bool = True

    def close(self, not_done: Iterable[int]) -> None:
        """The open entries were carried out, but those at the offsets `not_done`."""
        skipped = set(not_done)
        for offset, entry in enumerate(self.open):
            if offset not in skipped:
                self.changes += 1
                if entry.get("op") == Kind.MOVE.value:
                    self.moved += entry.get("bytes", 0)
        self.open = []


def _read(quarantine: Store, run: str, changes: list[dict] | None = None) -> _Journal:
    """Read a run's journal; its change entries are also appended to `changes`, if given (for undo)."""
    reading = _Reading(quarantine, run)
    records = iter(reading)
    header = next(records, None)
    if header is None or header.get("format") != JOURNAL_FORMAT:
        raise ApplyError(f"{reading.where}: not a registry-fsck run")
    journal = _Journal(header)
    for record in records:
        op = record.get("op")
        if op in _CHANGES:
            journal.journaled += 1
            journal.open.append(record)
            if changes is not None:
                changes.append(record)
        elif op == DONE:
            journal.close(record.get("not_done", ()))
        elif op == "commit":
            journal.committed = True
        elif op in ("undo", "undone"):
            journal.undo = record
        elif op in ("purge", "purged"):
            journal.purge = record
    journal.ends_whole = reading.ends_whole
    return journal


def _registry_of(registry: Store | None, header: dict) -> Store | None:
    """`registry`, if the run was a run on it."""
    try:
        same = registry is not None and registry.resolve(get_path(header, "v2")) == registry.resolve(registry.root)
    except (KeyError, ValueError):
        return None
    return registry if same else None


def _not_carried_out(entries: list[dict], run: str, placement: Placement, registry: Store | None) -> list[int]:
    """The offsets of the `entries` (changes a crash left without their "done" record) that did not happen,
    as the trees show now: a move happened iff what it moved is in the run's files/; a link written or a
    directory removed is looked for in `registry` (None: not known, so counted as done, as it may have been)."""
    missing = []
    for offset, entry in enumerate(entries):
        try:
            relative, op = get_path(entry, "path"), entry.get("op")
            if op == Kind.MOVE.value:
                kept = entry_quarantine(placement, entry)
                happened = kept.stat(safe_path(kept, removed_path(run, relative))) is not None
                if happened and not kept.capabilities.atomic_rename and registry is not None:
                    happened = registry.stat(safe_path(registry, relative, placement.followed)) is None  # copied, deleted
            elif registry is None:
                happened = True
            elif op == "rmdir":
                happened = registry.stat(safe_path(registry, relative, placement.followed)) is None
            else:
                happened = _holds(registry, safe_path(registry, relative, placement.followed), entry.get("content", ""))
        except (ApplyError, KeyError, ValueError):
            happened = False  # a path apply refused too
        if not happened:
            missing.append(offset)
    return missing


def _settle(quarantine: Store, registry: Store | None, run: str, journal: _Journal, record: dict) -> None:
    """Append `record`, after a "done" record for the entries a crash left open, as the trees show them
    now: before an undo or a purge changes what they show."""
    closing = []
    if journal.open and journal.purge is None:
        registry = _registry_of(registry, journal.header)
        closing = [done_record(_not_carried_out(journal.open, run, placement_of(quarantine, journal.header), registry))]
    _append(quarantine, run, [*closing, record], journal.ends_whole)


def _run_names(quarantine: Store) -> list[str]:
    try:
        names = sorted(entry.name for entry in quarantine.list(""))
    except FileNotFoundError:
        return []
    return [name for name in names if name != LOCK and is_dir(quarantine, name)]


def list_runs(quarantine: Store, registry: Store | None = None) -> list[Run]:
    """The runs in the quarantine, oldest first. `registry` is where links a run wrote and directories
    it removed are looked for, when a crash left them without their "done" record."""
    runs = []
    for name in _run_names(quarantine):
        try:
            journal = _read(quarantine, name)
        except ApplyError:
            continue
        runs.append(_run_of(name, journal, quarantine, registry))
    return runs


def _run_of(name: str, journal: _Journal, quarantine: Store, registry: Store | None) -> Run:
    if journal.open:
        # A purged run from before "done" records: its files are gone, what it journaled counts.
        open_ones = [] if journal.purge else journal.open
        journal.close(_not_carried_out(
            open_ones, name, placement_of(quarantine, journal.header), _registry_of(registry, journal.header)
        ))
    undo, purge = journal.undo, journal.purge
    left = journal.changes if undo is None else (undo.get("left", 0) if undo["op"] == "undone" else None)
    if purge is not None:
        state = State.PURGED if purge["op"] == "purged" else State.PURGE_INTERRUPTED
        held = 0 if state is State.PURGED else held_bytes(quarantine, name)
    elif undo is None:
        state, held = (State.COMPLETE if journal.committed else State.INTERRUPTED), journal.moved
    elif undo["op"] == "undone":
        state, held = (State.UNDONE if left == 0 else State.PARTLY_UNDONE), undo.get("bytes", 0)
    else:
        state, held = State.UNDO_INTERRUPTED, held_bytes(quarantine, name)
    header = journal.header
    return Run(
        name, header.get("started", ""), state, journal.committed, journal.journaled, journal.changes, left, held,
        header.get("options"),
    )


@dataclass(slots=True)
class UndoOutcome:
    run: str
    restored: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


def undo(quarantine: Store, registry: Store, run: str | None = None) -> UndoOutcome:
    """Put a run's changes back, newest first. The caller holds the lock. Without `run`, the newest run
    with changes still to put back: one undone or purged is passed over."""
    known = {r.run: r for r in list_runs(quarantine, registry)}
    if run is None:
        restorable = [r.run for r in known.values() if r.restorable]
        if not restorable:
            raise ApplyError(f"{quarantine.root}: nothing to undo: no run has changes left to put back")
        run = restorable[-1]
    elif run not in known:
        raise ApplyError(f"{run}: no such run in {quarantine.root}")
    elif known[run].purged:
        raise ApplyError(f"{run}: its quarantine was purged; nothing to restore")
    elif known[run].state is State.UNDONE:
        raise ApplyError(f"{run}: already undone; nothing to restore")
    changes: list[dict] = []
    journal = _read(quarantine, run, changes)
    outcome = UndoOutcome(run)
    journaled_v2 = get_path(journal.header, "v2")
    if registry.resolve(journaled_v2) != registry.resolve(registry.root):
        raise ApplyError(f"{run}: a run on {journaled_v2}, not on {registry.root}")
    placement = placement_of(quarantine, journal.header)
    with all_locked(placement):
        _settle(quarantine, registry, run, journal, {"op": "undo", "started": _now()})
        held = 0  # the bytes of the moves left in the quarantine
        for entry in reversed(changes):
            relative = get_path(entry, "path")
            skipped = len(outcome.skipped)
            try:
                _undo_entry(entry, relative, registry, placement, run, outcome)
            except OSError as error:  # the others are still put back; the run stays to try again
                outcome.skipped.append((relative, f"could not restore: {error.strerror or error}"))
            except ApplyError as error:  # a link on its way leads elsewhere now: not through it
                outcome.skipped.append((relative, str(error)))
            if len(outcome.skipped) > skipped and entry["op"] == Kind.MOVE.value:
                held += entry.get("bytes", 0)
        for kept in placement.stores:  # a bucket's moves back delete their quarantined copies only now
            try:
                kept.settle()
            except OSError as error:
                raise ApplyError(f"{error.strerror or error}: everything is back; run undo again to clear the quarantine") from None
        _append(quarantine, run, [{
            "op": "undone", "restored": outcome.restored, "left": len(outcome.skipped), "bytes": held,
            "finished": _now(),
        }])
        if not outcome.skipped:  # the journal stays, so `runs` shows the run as undone
            for kept in placement.stores:
                for emptied in (FILES, TEMPORARY):
                    if is_dir(kept, f"{run}/{emptied}"):
                        kept.remove_tree(f"{run}/{emptied}")
    return outcome


def _undo_entry(
    entry: dict, relative: str, registry: Store, placement: Placement, run: str, outcome: UndoOutcome
) -> None:
    """Put one journaled change back, or say in `outcome` why not."""
    op = entry["op"]
    quarantine = entry_quarantine(placement, entry)
    safe_path(registry, relative, placement.followed)
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
        elif quarantine.stat(saved) is not None and not quarantine.capabilities.atomic_rename and _same_object(
            quarantine, saved, registry, relative
        ):
            # Copied, never deleted (a crash between the two): it is in its place; only the copy goes.
            saved_kind = quarantine.stat(saved)
            (quarantine.remove_tree if saved_kind and saved_kind.kind is EntryKind.DIR else quarantine.remove)(saved)
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
                safe_path(registry, directory, placement.followed)
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


def _same_object(one: Store, path: str, other: Store, other_path: str) -> bool:
    """Whether two objects (or two directories, object by object) hold the same bytes: the same MD5 where both
    stores keep one, else by hashing both."""
    first, second = one.stat(path), other.stat(other_path)
    if first is None or second is None or first.kind is not second.kind:
        return False
    if first.kind is EntryKind.DIR:
        try:
            names, other_names = sorted(e.name for e in one.list(path)), sorted(e.name for e in other.list(other_path))
        except OSError:
            return False
        return names == other_names and all(
            _same_object(one, f"{path}/{name}", other, f"{other_path}/{name}") for name in names
        )
    if first.kind is not EntryKind.FILE:
        return False
    if first.size != second.size:
        return False
    if first.md5 is not None and first.md5 == second.md5:
        return True  # else not known: a listing's ETag is no MD5 for every object (a multipart upload's)
    buffer = memoryview(bytearray(1 << 20))

    def sha256(store: Store, relative: str) -> bytes:
        directory, _, name = relative.rpartition("/")
        with store.reader(()) as reader:
            return reader.digest(directory, name, "sha256", buffer, lambda _n: None)

    return sha256(one, path) == sha256(other, other_path)


def _is_empty_dir(store: Store, relative: str) -> bool:
    here = store.stat(relative)
    try:
        return here is not None and here.kind is EntryKind.DIR and not store.list(relative)
    except OSError:
        return False


def held_bytes(quarantine: Store, run: str) -> int:
    """The bytes of the files in a run's files/ now, in each of its quarantines: what a purge frees."""
    try:
        placement = placement_of(quarantine, _read(quarantine, run).header)
    except ApplyError:
        placement = Placement(quarantine)
    return sum(_files_bytes(kept, run) for kept in placement.stores)


def _files_bytes(quarantine: Store, run: str) -> int:
    total = 0
    pending = [f"{run}/{FILES}"]
    while pending:
        directory = pending.pop()
        try:
            entries = quarantine.list(directory)
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(f"{directory}/{entry.name}")
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
        except FileNotFoundError:
            continue
        except OSError as error:
            raise ApplyError(f"{os.path.join(quarantine.root, directory)}: cannot read: {error.strerror}") from None
    return total


@dataclass(frozen=True, slots=True)
class Purged:
    run: str
    bytes: int | None  # freed; None: nothing was left to free (purged or undone before)


def purge(quarantine: Store, registry: Store | None, runs: list[str]) -> list[Purged]:
    """Free the space runs hold: delete their quarantined files, keep their journals. The caller holds the lock."""
    known = {r.run: r for r in list_runs(quarantine, registry)}
    unknown = [run for run in runs if run not in known]
    if unknown:
        raise ApplyError(f"{unknown[0]}: no such run in {quarantine.root}")
    purged = []
    for run in runs:
        if not known[run].holding:
            purged.append(Purged(run, None))
            continue
        journal = _read(quarantine, run)
        placement = placement_of(quarantine, journal.header)
        with all_locked(placement):
            freed = held_bytes(quarantine, run)
            _settle(quarantine, registry, run, journal, {"op": "purge", "started": _now()})
            files = f"{run}/{FILES}"
            for kept in placement.stores:
                if is_dir(kept, files):
                    kept.remove_tree(files)
            _append(quarantine, run, [{"op": "purged", "bytes": freed, "finished": _now()}])
        purged.append(Purged(run, freed))
    return purged
