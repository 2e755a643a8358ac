"""Carry out a plan, journaled and crash-safe (the quarantine's runs and undo: see `quarantine`).

Every removal is a move into the run's quarantine directory on the same file system:
instant, atomic, and reversible; on a bucket, a copy into the quarantine prefix whose delete the
store defers to the end of the plan step or of the batch (`Store.settle`), so deletes never run
ahead of the copies they follow, nor of the steps before theirs. The journal entry describing a change is made durable
before the change is made, so after a crash `undo` knows everything that may have
happened: an entry whose change did not happen is simply skipped. What was carried out is
said after it, by one "done" record per batch (written with the next batch's entries, so
no extra fsync): `runs` counts from those, and checks the trees only for a batch a crash
left without one. A run asked to stop (Ctrl-C) stops after the change under way, its
directories synced and its last "done" record written: the same, without the crash.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

from . import layout
from .plan import Action, Kind, Plan
from .quarantine import (
    FILES,
    JOURNAL_FORMAT,
    TEMPORARY,
    ApplyError,
    Placement,
    done_record,
    journal_lines,
    journal_of,
    mark_purged,
    put_path,
    removed_path,
    safe_path,
)
from .store import EntryKind, Journal, Store, is_dir

BATCH = 256  # journal entries made durable together, before any of their changes


@dataclass(slots=True)
class Outcome:
    run: str
    done: list[Action] = field(default_factory=list)
    vanished: list[Action] = field(default_factory=list)  # gone before the run reached it
    failed: list[tuple[Action, str]] = field(default_factory=list)
    directories_removed: int = 0
    deleted: bool = False
    interrupted: bool = False  # stopped with actions left: not committed, nothing deleted, undoable

    @property
    def bytes(self) -> int:
        return sum(a.bytes for a in self.done)


def new_run_id(now: datetime) -> str:
    """Sorts in the order runs started (undo takes the newest), and is unique."""
    return f"{now:%Y%m%dT%H%M%S.%fZ}-{os.urandom(3).hex()}"


def apply(
    plan: Plan,
    store: Store,
    placement: Placement | Store,
    *,
    now: datetime,
    delete: bool = False,
    options: Mapping[str, object] | None = None,
    progress: Callable[[int], None] | None = None,
    after_action: Callable[[int], None] | None = None,
    stop_requested: Callable[[], bool] = lambda: False,
) -> Outcome:
    """Carry out `plan`. The caller holds the lock. `options`: the repair's, kept in the journal's header
    for `runs`. `after_action(n)` runs after the n-th change (tests); `stop_requested()` is asked after
    every change (the command line's Ctrl-C)."""
    advance = progress or (lambda _n: None)
    if not isinstance(placement, Placement):
        placement = Placement(placement, followed={link.path: link.target for link in plan.followed})
    quarantine = placement.main
    run = new_run_id(now)
    for kept in placement.stores:
        kept.make_dir(f"{run}/{FILES}", 0o700, parents=True)
        kept.make_dir(f"{run}/{TEMPORARY}", 0o700)
        kept.sync_dir("")
    journal = quarantine.open_journal(journal_of(run), new=True)
    outcome = Outcome(run, deleted=delete)
    count = 0
    closing: list[dict] = []  # the "done" record of the changes before, made durable with the next append
    try:
        journal.append(journal_lines([put_path(put_path({
            "format": JOURNAL_FORMAT, "run": run, "started": now.isoformat(timespec="seconds"), "delete": delete,
            "options": dict(options) if options is not None else None, **placement.header(),
        }, "v2", store.root), "v2_real", store.real_path(""))]))
        quarantine.sync_dir(run)
        actions = list(plan.actions)
        for start in range(0, len(actions), BATCH):
            if stop_requested():
                break
            batch = actions[start:start + BATCH]
            journal.append(journal_lines([*closing, *(_entry(action, store, placement) for action in batch)]))
            in_registry: set[str] = set()
            in_quarantine: set[tuple[Store, str]] = set()
            not_done: list[int] = []
            processed = 0
            step = batch[0].step
            for offset, action in enumerate(batch):
                if action.step is not step:  # a step's deferred deletes before the next step's first change
                    _settle(store)
                    step = action.step
                processed = offset + 1
                carried = len(outcome.done)
                registry_dirs, quarantine_dirs = _carry_out(action, store, placement, run, outcome)
                if len(outcome.done) == carried:
                    not_done.append(offset)
                in_registry |= registry_dirs
                in_quarantine |= quarantine_dirs
                count += 1
                advance(1)
                if after_action:
                    after_action(count)
                if stop_requested():
                    break
            _settle(store)
            for directory in in_registry:
                store.sync_dir(directory)
            for kept, directory in in_quarantine:
                kept.sync_dir(directory)
            not_done.extend(range(processed, len(batch)))  # journaled, not reached: a stop came first
            closing = [done_record(not_done)]
        if count < len(actions):
            # What is done stays done and journaled (undo puts it back, a new repair finishes the job);
            # the run is not committed, and with --delete nothing is deleted: it stays undoable.
            journal.append(journal_lines(closing))
            outcome.interrupted, outcome.deleted = True, False
            return outcome
        outcome.directories_removed, closing = _remove_emptied_dirs(
            outcome, store, placement, journal, after_action, count, closing
        )
        journal.append(journal_lines([
            *closing, {"op": "commit", "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        ]))
    finally:
        journal.close()
    if delete:
        for kept in placement.stores:
            kept.remove_tree(f"{run}/{FILES}")
        mark_purged(quarantine, run)
    return outcome


def _settle(store: Store) -> None:
    """The deletes a store deferred (a bucket's, after its copies), before the batch is said to be done."""
    try:
        store.settle()
    except OSError as error:
        raise ApplyError(
            f"{error.strerror or error}: stopped; what was not deleted is still served, and a new run takes it"
        ) from None


def _entry(action: Action, store: Store, placement: Placement) -> dict:
    entry = put_path({"op": action.kind.value, "finding": action.finding.value, "bytes": action.bytes}, "path", action.path)
    if action.reason is not None:
        entry["reason"] = action.reason
    real = _real_path(action.path, placement.followed)
    if real is not None:  # below a followed link: where it really is, and which quarantine takes it
        put_path(entry, "real", real)
        kept = placement.of(action.path)
        if kept is not placement.main:
            entry["quarantine"] = kept.root
    if action.kind is Kind.WRITE_LINK:
        entry["content"] = layout.format_digest(action.content)
        entry["replaced"] = store.stat(safe_path(store, action.path, placement.followed)) is not None
        entry["created_dirs"] = _missing_dirs(store, action.path)
    return entry


def _real_path(relative: str, followed: Mapping[str, str]) -> str | None:
    """Where `relative` really is, when a followed link is on its way (the innermost one's target)."""
    link = relative
    while link:
        if link in followed:
            return followed[link] + relative[len(link):]
        link = link.rpartition("/")[0]
    return None


def _missing_dirs(store: Store, relative: str) -> list[str]:
    missing = []
    parent = relative.rpartition("/")[0]
    while parent and not is_dir(store, parent):
        missing.append(parent)
        parent = parent.rpartition("/")[0]
    return list(reversed(missing))


def _carry_out(
    action: Action, store: Store, placement: Placement, run: str, outcome: Outcome
) -> tuple[set[str], set[tuple[Store, str]]]:
    """Make one change; returns the directories whose entries it changed (to sync), in each store."""
    quarantine = placement.of(action.path)
    try:
        source = safe_path(store, action.path, placement.followed)
        if action.kind is Kind.MOVE:
            if store.stat(source) is None:
                outcome.vanished.append(action)
                return set(), set()
            target = removed_path(run, source)
            quarantine.make_dir(target.rpartition("/")[0], 0o700, parents=True, exist_ok=True)
            store.move(source, quarantine, target)
            touched = {source.rpartition("/")[0]}, {(quarantine, target.rpartition("/")[0])}
        else:
            touched = _write_link(action, store, quarantine, run), set()
    except OSError as error:
        if error.errno == errno.EXDEV:  # a mount point with no link to tell: not a rename, so not moved
            why = f"on another file system than the quarantine {quarantine.root}: not moved"
        else:
            why = error.strerror or str(error)
        outcome.failed.append((action, why))
        return set(), set()
    except ApplyError as error:
        outcome.failed.append((action, str(error)))
        return set(), set()
    outcome.done.append(action)
    return touched


def _write_link(action: Action, store: Store, quarantine: Store, run: str) -> set[str]:
    """Write a link as the registry would: owner and mode from the links beside it, atomically.
    What it replaces is kept in the quarantine first."""
    path = action.path
    if store.stat(path) is not None:
        saved = removed_path(run, path)
        quarantine.make_dir(saved.rpartition("/")[0], 0o700, parents=True, exist_ok=True)
        store.copy(path, quarantine, saved)
    siblings_in, anywhere_below = _link_models(path)
    return store.write_atomically(
        path, layout.format_digest(action.content).encode(),
        staging=(quarantine, f"{run}/{TEMPORARY}/{os.urandom(8).hex()}"),
        siblings_in=siblings_in, anywhere_below=anywhere_below,
    )


def _link_models(relative: str) -> tuple[list[str], list[str]]:
    """Where the links whose owner and mode a new link copies are: beside it (`<alg>/<other hex>/link`),
    else anywhere in the same repository's own link stores (not a nested repository's)."""
    parts = relative.split("/")
    siblings_in = ["/".join(parts[:depth]) for depth in (len(parts) - 2, len(parts) - 3)]
    marker = next((i for i, part in enumerate(parts) if part in layout.REPOSITORY_MARKERS), None)
    if marker is None:
        return siblings_in, []
    return siblings_in, [layout.join(*parts[:marker], part) for part in (layout.LAYERS, layout.MANIFESTS)]


def _remove_emptied_dirs(
    outcome: Outcome, store: Store, placement: Placement, journal: Journal, after_action: Callable[[int], None] | None, count: int,
    closing: list[dict],
) -> tuple[int, list[dict]]:
    """Remove the directories this run left empty, deepest first, up to the layout's fixed directories.
    Each removal's "done" record goes with the next append; returns the last one, still to write."""
    if not store.capabilities.has_directories:
        return 0, closing
    candidates = set()
    for action in outcome.done:
        if action.kind is Kind.MOVE:
            parent = action.path.rpartition("/")[0]
            while parent and not layout.is_structural(parent):
                candidates.add(parent)
                parent = parent.rpartition("/")[0]
    removed = 0
    for relative in sorted(candidates, key=lambda p: (-p.count("/"), p)):
        info = store.stat(safe_path(store, relative, placement.followed))
        if info is None or info.kind is not EntryKind.DIR:
            continue
        try:
            if store.list(relative):
                continue
        except OSError:
            continue
        journal.append(journal_lines([*closing, put_path({
            "op": "rmdir", "mode": info.mode, "uid": info.uid, "gid": info.gid,
        }, "path", relative)]))
        try:
            store.remove_dir(relative)
        except OSError:
            closing = [done_record([0])]
            continue
        closing = [done_record([])]
        removed += 1
        count += 1
        if after_action:
            after_action(count)
    return removed, closing
