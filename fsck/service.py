"""The pipeline, defined once: target → load → audit → plan → apply, and the exit code of each
outcome. The commands, the benchmarks and the tests all call these; none wires its own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from enum import IntFlag
from typing import TYPE_CHECKING, Protocol

from . import (
    apply,
    checks,
    guards,
    layout,
    manifests,
    plan,
    reach,
    removal,
    scan,
    usage,
    verify,
)
from . import quarantine as quarantines
from .catalogue import Id, Severity
from .config import ConfigError, S3Config, UnsupportedDriver, load_config, load_storage
from .scan import FollowedLink, Oddity
from .store import Concurrency, EntryKind, LocalStore, PoolKind, Store, usable_cores

if TYPE_CHECKING:  # imported where they are used: an audit does without the S3 driver, ls's and retain's modules
    from . import listing, policy, pulllog
    from . import s3 as buckets


class ExitCode(IntFlag):
    """fsck(8)-style bits, combined."""

    OK = 0
    REPAIRED = 1
    PROBLEMS_LEFT = 4
    OPERATIONAL = 8
    USAGE = 16
    INTERRUPTED = 32


class OperationalError(Exception):
    """Stops the run with one line on stderr and exit code 8."""


class Progress(Protocol):
    """Where the stages report progress: `counter(...)` gives a context manager with `update(n)`."""

    def counter(self, description: str, unit: str, total: int | None = None, scale: bool = False): ...


class _Silent:
    def update(self, _n: int = 1) -> None:
        pass


class Silent:
    def counter(self, description: str, unit: str, total: int | None = None, scale: bool = False):
        return nullcontext(_Silent())


# The target.


@dataclass(frozen=True, slots=True)
class Target:
    root: str  # the rootdirectory (on S3: s3://bucket/rootdirectory)
    v2: str
    http_addr: str | None = None  # from --config: where the registry would answer if it is running
    s3: buckets.Location | None = None  # the registry's keys in a bucket; None: a directory
    # The client that probed the bucket, for every store of the run: making one costs a service model.
    s3_client: object | None = field(default=None, compare=False, repr=False)

    def store(self, after_change: Callable[[str], None] | None = None) -> Store:
        """`after_change(kind)`: on a bucket, after every change to it (the crash tests stop there)."""
        if self.s3 is None:
            return LocalStore(self.v2)
        from . import s3 as buckets

        return buckets.S3Store(self.s3, client=self.s3_client, after_change=after_change)


def quarantine_store(target: Target, where: str, registry: Store | None = None) -> Store:
    """The quarantine at `where`: a directory, or on a bucket a prefix of it (sharing `registry`'s client)."""
    if target.s3 is None:
        return LocalStore(where)
    try:
        return (registry or target.store()).sibling(where)
    except OSError as error:
        raise OperationalError(error.strerror or str(error)) from None


def resolve_target(path: str | None, config: str | None, *, endpoint_url: str | None = None) -> Target:
    """PATH (a rootdirectory or its v2 directory, or s3://bucket/prefix), or the registry's config file.
    `endpoint_url`: the S3 endpoint of an s3:// PATH (else AWS's, or AWS_ENDPOINT_URL)."""
    try:
        registry_config = load_storage(config) if config is not None else None
        if isinstance(registry_config, S3Config):
            from . import s3 as buckets

            return _s3_target(buckets.Location(
                registry_config.bucket, registry_config.rootdirectory, registry_config.endpoint_url,
                registry_config.region, registry_config.accesskey, registry_config.secretkey,
                registry_config.v4auth,
            ), registry_config.http_addr)
        if path is not None and path.startswith("s3://"):
            from . import s3 as buckets

            bucket, prefix = buckets.parse_url(path)
            return _s3_target(buckets.Location(bucket, prefix, endpoint_url), None)
        if endpoint_url is not None:
            raise OperationalError("--endpoint-url is for an s3://bucket/prefix PATH")
        v2 = layout.find_v2(path if path is not None else registry_config.rootdirectory)
    except (ConfigError, layout.NotARegistry, ValueError) as error:
        raise OperationalError(str(error)) from None
    v2 = os.path.abspath(v2)
    return Target(layout.rootdirectory_of(v2), v2, registry_config.http_addr if registry_config else None)


def _s3_target(location: buckets.Location, http_addr: str | None) -> Target:
    """The bucket answers these credentials, and holds keys under the registry's prefix: else one line, exit 8."""
    from . import s3 as buckets

    probing = buckets.S3Store(location)
    try:
        found = probing.probe()
    except OSError as error:
        raise OperationalError(error.strerror or str(error)) from None
    if not found:
        raise OperationalError(f"{location.v2_address}: not a registry's storage (no keys below {location.v2_prefix})")
    return Target(location.root_address, location.v2_address, http_addr, location, probing.client)


# Loading and auditing.


@dataclass(frozen=True, slots=True)
class Loaded:
    store: Store
    inventory: scan.Inventory
    manifests: dict
    verification: verify.Verification | None  # with --verify
    # Processes the checks may use: two where the walk ran on processes (a local disk, several cores).
    checking: int = 1


def concurrency(store: Store, jobs: int | None) -> Concurrency:
    """The store's own choice of pool, with `--jobs` operations in flight when given (1: one thread)."""
    chosen = store.concurrency()
    if jobs is None:
        return chosen
    if jobs == 1:
        return Concurrency(PoolKind.SERIAL, 1, "--jobs 1")
    return replace(chosen, jobs=jobs, reason=f"{chosen.reason}; --jobs {jobs}")


def load(
    target: Target, *, verify_blobs: bool = False, progress: Progress = Silent(), jobs: int | None = None,
    subset: verify.Subset | None = None,
) -> Loaded:
    """Scan, read the manifests and, with --verify, re-hash the blobs: everything judging needs.
    `jobs`: storage operations in flight (the store's default when None)."""
    store = target.store()
    pool = concurrency(store, jobs)
    # Where the walk runs in processes (a local disk), this thread reads the manifests of the repositories
    # walked so far while the processes walk on: the cores share the work that would follow the walk.
    early = manifests.WhileWalking(store) if pool.kind is PoolKind.PROCESSES else None
    with progress.counter("scanning", " dirs") as bar:
        inventory = scan.scan(store, bar.update, pool, early.walked if early is not None else None)
    readers = max(pool.jobs, 8) if pool.kind is PoolKind.THREADS else 8 if jobs is None else jobs
    if early is not None:
        with progress.counter("manifests", " manifests"):
            parsed = early.finish(inventory, readers)
    else:
        named = manifests.named_by_links(inventory)
        with progress.counter("manifests", " manifests", total=len(named)):
            parsed = manifests.read_manifests(store, named, inventory.blobs, readers)
    verification = None
    if verify_blobs or subset is not None:
        chosen = verify.in_subset(inventory.blobs, subset)
        with progress.counter("verifying", "B", total=sum(chosen.values()), scale=True) as bar:
            verification = verify.verify_blobs(store, chosen, bar.update)
    # Two walkers on one core overlap their reads; two checking processes there would only share it.
    checking = 2 if pool.kind is PoolKind.PROCESSES and pool.jobs > 1 and usable_cores() > 1 else 1
    return Loaded(store, inventory, parsed, verification, checking)


def judge(loaded: Loaded, policy: checks.Policy, ignore: frozenset[Id] | None = None) -> checks.Audit:
    verification = loaded.verification
    result = checks.audit(
        loaded.inventory, loaded.manifests, policy,
        verification.corrupt if verification else frozenset(),
        tuple(Oddity(path, reason) for path, reason in verification.unreadable) if verification else (),
        processes=loaded.checking,
    )
    return checks.ignore(result, ignore) if ignore is not None else result


def audit(
    target: Target, policy: checks.Policy, *, verify_blobs: bool = False, ignore: frozenset[Id] | None = None,
    progress: Progress = Silent(), jobs: int | None = None, subset: verify.Subset | None = None,
    loaded_with: Callable[[Loaded], None] | None = None,
) -> checks.Audit:
    """`loaded_with(loaded)`, before judging: what the caller keeps of the load (the store's request counts)."""
    loaded = load(target, verify_blobs=verify_blobs, progress=progress, jobs=jobs, subset=subset)
    if loaded_with is not None:
        loaded_with(loaded)
    return judge(loaded, policy, ignore).released()


def store_facts(target: Target, loaded: Loaded) -> dict | None:
    """What the report says of the store: on a bucket, the requests made of it by kind; None on disk."""
    if target.s3 is None:
        return None
    from . import s3 as buckets

    assert isinstance(loaded.store, buckets.S3Store)
    return {"kind": "s3", "requests": loaded.store.requests.as_dict()}


# Repair.


@dataclass(frozen=True, slots=True)
class Repair:
    audit: checks.Audit
    plan: plan.Plan
    loaded: Loaded


def plan_repair(loaded: Loaded, policy: checks.Policy, selection: plan.Selection) -> Repair:
    audit_now = judge(loaded, policy)

    def modified(location: layout.Location) -> datetime | None:
        newest = None
        for path in layout.dated_paths(location):
            stat = loaded.store.stat(path)
            if stat is not None:
                newest = stat.mtime if newest is None else max(newest, stat.mtime)
        return datetime.fromtimestamp(newest, timezone.utc) if newest is not None else None

    return Repair(audit_now, plan.prepare(audit_now, loaded.inventory, selection, modified, policy.now), loaded)


@dataclass(frozen=True, slots=True)
class InUse:
    """Who is using the tree, as the commands that change it say it."""

    refusal: str | None  # why not now (stop it first, or --force); None: go ahead
    warnings: tuple[str, ...]


def _served_root(config: str, environ: Mapping[str, str]) -> str | None:
    try:
        return load_config(config, environ).rootdirectory
    except UnsupportedDriver:
        return None  # it keeps no tree on the filesystem
    except ConfigError as error:
        raise guards.UnknownRoot(str(error)) from None


def _who(process: guards.Process) -> str:
    command = process.command if len(process.command) <= 200 else process.command[:197] + "..."
    return f"pid {process.pid} ({command})"


def _serves_bucket(location: buckets.Location) -> guards.ServedBucket:
    def serves(config: str, environ: Mapping[str, str]) -> bool:
        try:
            storage = load_storage(config, environ)
        except UnsupportedDriver:
            return False
        except ConfigError as error:
            raise guards.UnknownRoot(str(error)) from None
        return (
            isinstance(storage, S3Config) and storage.bucket == location.bucket
            and storage.rootdirectory.strip("/") == location.rootdirectory.strip("/")
        )

    return serves


def _in_use_on_s3(target: Target) -> InUse:
    """On a bucket: a registry here whose config names it (found in /proc), or one answering at --config's
    `http.addr`, refuses; the ones elsewhere cannot be seen, and the store's own limits, only warn."""
    assert target.s3 is not None
    warnings = [f"registries on other hosts cannot be seen from here: make sure none serves {target.root}"]
    try:
        seen = guards.bucket_liveness(_serves_bucket(target.s3))
    except OSError as error:
        seen = None
        warnings.append(f"could not look for a live registry in /proc: {error.strerror or error}")
    else:
        warnings += [f"registry {_who(u.process)}: what it serves is unknown ({u.reason})" for u in seen.unknown]
    note = lock_note(target, quarantine_of(target, None))
    if note is not None:
        warnings.append(note)
    from . import s3 as buckets

    store = target.store()
    assert isinstance(store, buckets.S3Store)
    if store.versioning() in ("Enabled", "Suspended"):
        warnings.append(f"{target.root}: the bucket is versioned: a delete keeps the old version, so nothing is freed "
                        "until a lifecycle rule expires noncurrent versions")
    reasons = []
    if seen and seen.serving:
        reasons.append(f"{', '.join(f'registry {_who(p)}' for p in seen.serving)} "
                       f"{'is' if len(seen.serving) == 1 else 'are'} serving {target.root}")
    elif target.http_addr and guards.registry_answers(target.http_addr):
        reasons.append(f"the registry answers at {guards.describe_address(target.http_addr)}")
    count = len(seen.serving) if seen and seen.serving else len(reasons)
    refusal = f"{'; '.join(reasons)}: stop {'it' if count == 1 else 'them'} first (or --force)" if reasons else None
    return InUse(refusal, tuple(warnings))


def in_use(target: Target) -> InUse:
    """A registry serving the tree (found in /proc, or with --config answering at its `http.addr`), or a
    process holding a file open under it, refuses; a working directory inside it, what could not be
    inspected, only warn."""
    if target.s3 is not None:
        return _in_use_on_s3(target)
    try:
        seen = guards.liveness(target.root, _served_root)
    except OSError as error:
        seen = None
        warnings = [f"could not look for a live registry in /proc: {error.strerror or error}"]
    else:
        warnings = [f"{_who(h.process)} works in {h.path}, inside the tree: make sure it writes nothing there"
                    for h in seen.cwd_under]
        warnings += [f"registry {_who(u.process)}: what it serves is unknown ({u.reason})" for u in seen.unknown]
        if seen.uninspected:
            warnings.append(
                f"{seen.uninspected} {'process' if seen.uninspected == 1 else 'processes'} could not be inspected "
                "(permission denied): a registry or a file held open under the tree among them would go unseen"
            )
    reasons, stoppable = [], 0
    if seen and seen.serving:
        registries = ", ".join(f"registry {_who(p)}" for p in seen.serving)
        reasons.append(f"{registries} {'is' if len(seen.serving) == 1 else 'are'} serving {target.root}")
        stoppable += len(seen.serving)
    elif target.http_addr and guards.registry_answers(target.http_addr):
        reasons.append(f"the registry answers at {guards.describe_address(target.http_addr)}")
        stoppable += 1
    if seen and seen.open_files:
        shown = seen.open_files[:3]
        reasons += [f"{_who(h.process)} has {h.path} open" for h in shown]
        if len(seen.open_files) > len(shown):
            reasons.append(f"{len(seen.open_files) - len(shown)} more processes have files open under it")
        stoppable += len(seen.open_files)
    refusal = f"{'; '.join(reasons)}: stop {'it' if stoppable == 1 else 'them'} first (or --force)" if reasons else None
    return InUse(refusal, tuple(warnings))


_STOP_FIRST = re.compile(r": stop (it|them) first \(or --force\)$")


def refuse_if_in_use(target: Target, warn: Callable[[str], None], *, force: bool = False) -> None:
    """For the commands that change the tree: warn, then raise OperationalError if it is in use
    (with `force`, say what is overridden and go on)."""
    found = in_use(target)
    for warning in found.warnings:
        warn(warning)
    if found.refusal is not None and force:
        warn(_STOP_FIRST.sub("", found.refusal) + "; going ahead (--force)")
    elif found.refusal is not None:
        raise OperationalError(found.refusal)


def quarantine_of(target: Target, option: str | None) -> str:
    """The quarantine of v2's file system: --quarantine, or beside `docker/` in the rootdirectory; when
    `docker/` (or a directory below it, on the way to v2) links to another file system, beside the
    top-most such link's target."""
    if target.s3 is not None:
        return _bucket_quarantine(target, option)
    if option is not None:
        return os.path.abspath(option)
    beside_docker = quarantines.default_quarantine(target.v2)
    root = layout.rootdirectory_of(target.v2)
    if root == target.v2:
        return beside_docker
    above = LocalStore(root)
    v2_volume = above.volume(layout.join(*layout.V2_PARTS))
    if v2_volume is None or above.volume("") == v2_volume:
        return beside_docker
    for depth in range(1, len(layout.V2_PARTS) + 1):
        step = layout.join(*layout.V2_PARTS[:depth])
        info = above.stat(step)
        if info is not None and info.kind is EntryKind.SYMLINK and above.volume(step) == v2_volume:
            return os.path.join(os.path.dirname(above.real_path(step)), quarantines.QUARANTINE_NAME)
    return beside_docker


def _bucket_quarantine(target: Target, option: str | None) -> str:
    """On a bucket: `registry-fsck-quarantine/` beside `docker/` in the rootdirectory, or --quarantine's
    s3://BUCKET/PREFIX in the same bucket (a copy is server-side only within one)."""
    assert target.s3 is not None
    if option is None:
        return f"{target.root}/{quarantines.QUARANTINE_NAME}"
    text = str(option)
    text = "s3://" + text[len("s3:/"):] if text.startswith("s3:/") and not text.startswith("s3://") else text
    bucket, _, prefix = text[len("s3://"):].partition("/") if text.startswith("s3://") else ("", "", "")
    if bucket != target.s3.bucket or not prefix.strip("/"):
        raise OperationalError(
            f"--quarantine {option}: on S3 the quarantine is a prefix in the registry's bucket, "
            f"s3://{target.s3.bucket}/PREFIX"
        )
    where = f"s3://{bucket}/{prefix.strip('/')}"
    v2 = target.v2 + "/"
    if (where + "/").startswith(v2) or v2.startswith(where + "/"):
        raise OperationalError(f"--quarantine {option}: the quarantine must be outside {target.v2}")
    return where


@dataclass(frozen=True, slots=True)
class Elsewhere:
    """The quarantine that takes what lies below a followed directory link (that of its file system)."""

    link: str  # relative to v2
    quarantine: str


def quarantines_for(target: Target, main: str, followed: tuple[FollowedLink, ...]) -> tuple[Elsewhere, ...]:
    """For each directory link the audit followed, the quarantine of its file system: `main` on v2's; on
    another, `registry-fsck-quarantine/` beside the target of the top-most followed link on it."""
    if not followed:
        return ()
    registry = target.store()
    v2_volume = registry.volume("")
    by_volume: dict[int | None, str] = {v2_volume: main}
    placed = []
    for link in sorted(followed, key=lambda f: (f.path.count("/"), f.path)):
        volume = registry.volume(link.path)
        if volume not in by_volume:
            by_volume[volume] = os.path.join(os.path.dirname(link.target), quarantines.QUARANTINE_NAME)
        placed.append(Elsewhere(link.path, by_volume[volume]))
    return tuple(placed)


@contextmanager
def locked_quarantine(target: Target, where: str, registry: Store | None = None) -> Iterator[Store]:
    kept = quarantine_store(target, where, registry)
    try:
        with quarantines.locked(kept):
            yield kept
    except quarantines.ApplyError as error:
        raise OperationalError(str(error)) from None


def carry_out(
    target: Target, the_plan: plan.Plan, where: str, *, now: datetime, delete: bool = False,
    options: Mapping[str, object] | None = None,
    progress: Callable[[int], None] | None = None, after_action: Callable[[int], None] | None = None,
    after_change: Callable[[str], None] | None = None, stop_requested: Callable[[], bool] = lambda: False,
) -> apply.Outcome:
    """`where`: the quarantine of v2's file system; what lies below a followed link on another file
    system goes to that one's (`quarantines_for`). `options`: the repair's, as `runs` will show them.
    `after_action(n)` after the n-th action; `after_change(kind)` after each change to a bucket (tests)."""
    registry = target.store(after_change)
    elsewhere = quarantines_for(target, where, the_plan.followed)
    try:
        quarantines.check_quarantine(quarantine_store(target, where, registry), registry)
        for placed in elsewhere:
            if placed.quarantine != where:
                quarantines.check_quarantine(LocalStore(placed.quarantine), registry, placed.link)
    except quarantines.ApplyError as error:
        raise OperationalError(str(error)) from None
    with locked_quarantine(target, where, registry) as kept, ExitStack() as held:
        others = {where: kept}
        try:
            for placed in elsewhere:
                if placed.quarantine not in others:
                    others[placed.quarantine] = LocalStore(placed.quarantine)
                    held.enter_context(quarantines.locked(others[placed.quarantine]))
            placement = quarantines.Placement(
                kept, tuple((p.link, others[p.quarantine]) for p in elsewhere),
                {link.path: link.target for link in the_plan.followed},
            )
            return apply.apply(
                the_plan, registry, placement, now=now, delete=delete, options=options, progress=progress,
                after_action=after_action, stop_requested=stop_requested,
            )
        except quarantines.ApplyError as error:
            raise OperationalError(str(error)) from None


def undo(
    target: Target, where: str, run: str | None, after_change: Callable[[str], None] | None = None,
) -> quarantines.UndoOutcome:
    registry = target.store(after_change)
    with locked_quarantine(target, where, registry) as kept:
        try:
            return quarantines.undo(kept, registry, run)
        except quarantines.ApplyError as error:
            raise OperationalError(str(error)) from None


def runs(target: Target, where: str) -> list[quarantines.Run]:
    try:
        registry = target.store()
        return quarantines.list_runs(quarantine_store(target, where, registry), registry)
    except quarantines.ApplyError as error:
        raise OperationalError(str(error)) from None


def purge_plan(
    target: Target, where: str, choose: Callable[[list[quarantines.Run]], list[str]]
) -> list[tuple[quarantines.Run, int]]:
    """The runs `choose` picks from all of them, each with the bytes its files/ holds now. Changes nothing."""
    registry = target.store()
    kept = quarantine_store(target, where, registry)
    try:
        known = {r.run: r for r in quarantines.list_runs(kept, registry)}
        chosen = choose(list(known.values()))
        unknown = [run for run in chosen if run not in known]
        if unknown:
            raise quarantines.ApplyError(f"{unknown[0]}: no such run in {where}")
        return [
            (known[run], quarantines.held_bytes(kept, run) if known[run].holding else 0) for run in chosen
        ]
    except quarantines.ApplyError as error:
        raise OperationalError(str(error)) from None


def purge(target: Target, where: str, runs: list[str]) -> list[quarantines.Purged]:
    """Delete what these runs hold in the quarantine; each says the bytes it freed."""
    registry = target.store()
    with locked_quarantine(target, where, registry) as kept:
        try:
            return quarantines.purge(kept, registry, runs)
        except quarantines.ApplyError as error:
            raise OperationalError(str(error)) from None


def lock_note(target: Target, where: str) -> str | None:
    """What the quarantine's lock cannot do on this store, said before a run relies on it (None: nothing)."""
    if target.s3 is None:
        return None
    from . import s3 as buckets

    kept = quarantine_store(target, where)
    assert isinstance(kept, buckets.S3Store)
    try:
        honoured = kept.conditional_puts_honoured(f"{quarantines.LOCK}.probe")
    except OSError as error:
        raise OperationalError(error.strerror or str(error)) from None
    return None if honoured else kept.unexclusive_note()


def break_lock(target: Target, where: str, run: str) -> bool:
    """Remove a bucket quarantine's lock that `run` holds (a run that died): False when none is held."""
    if target.s3 is None:
        raise OperationalError("--break-lock is for a quarantine on S3: a local lock ends with the process holding it")
    from . import s3 as buckets

    kept = quarantine_store(target, where)
    assert isinstance(kept, buckets.S3Store)
    try:
        return kept.break_lock(quarantines.LOCK, run)
    except OSError as error:
        raise OperationalError(error.strerror or str(error)) from None


# Exit codes: one function, from the outcome.


@dataclass(frozen=True, slots=True)
class RepairOutcome:
    audit: checks.Audit
    plan: plan.Plan
    applied: apply.Outcome | None = None  # None: dry run, declined, refused or nothing to do
    refused: bool = False


def exit_code(
    outcome: checks.Audit | RepairOutcome | quarantines.UndoOutcome, fail_on: Severity = Severity.GARBAGE
) -> ExitCode:
    """`fail_on`: the least severe finding an audit's exit code counts (notices never count)."""
    code = ExitCode.OK
    if isinstance(outcome, quarantines.UndoOutcome):
        return ExitCode.PROBLEMS_LEFT if outcome.skipped else code
    the_audit = outcome.audit if isinstance(outcome, RepairOutcome) else outcome
    if not the_audit.complete:
        code |= ExitCode.OPERATIONAL  # a partial view is said, whatever else happened
    if isinstance(outcome, checks.Audit):
        if any(f.severity is not Severity.NOTICE and f.severity.rank <= fail_on.rank for f in outcome.findings):
            code |= ExitCode.PROBLEMS_LEFT
        return code
    if outcome.refused:
        return code | ExitCode.OPERATIONAL  # a refusal is 8, whatever the plan holds
    applied = outcome.applied
    if applied is None:
        if outcome.plan.leftover or outcome.plan.actions:
            code |= ExitCode.PROBLEMS_LEFT
        return code
    if applied.done:
        code |= ExitCode.REPAIRED
    if outcome.plan.leftover or applied.failed or applied.interrupted:
        code |= ExitCode.PROBLEMS_LEFT
    if applied.interrupted:
        code |= ExitCode.INTERRUPTED
    if applied.failed:
        code |= ExitCode.OPERATIONAL
    return code


# Listing: what the tree holds (`ls`), judged by nothing.


@dataclass(frozen=True, slots=True)
class Listed:
    complete: bool  # False: part of the tree could not be read; exit code 8
    repositories: tuple[listing.RepositoryRow, ...]  # every repository, without a repository named
    repository: listing.RepositoryListing | None  # the one named


def list_contents(
    target: Target, repository: str | None = None, *, progress: Progress = Silent(), jobs: int | None = None
) -> Listed:
    """Every repository with its counts; with `repository`, its tags. Only its manifests are read."""
    from . import listing

    store = target.store()
    with progress.counter("scanning", " dirs") as bar:
        inventory = scan.scan(store, bar.update, concurrency(store, jobs))
    if repository is None:
        return Listed(inventory.complete, listing.repositories(inventory), None)
    if repository not in inventory.repositories:
        raise OperationalError(f"{repository}: no such repository in {target.v2}")
    named = listing.manifests_to_read(inventory.repositories[repository])
    graph = reach.build_graph(inventory, manifests.read_manifests(store, named, inventory.blobs))
    return Listed(inventory.complete, (), listing.listing_of(store, inventory, graph, repository))


# Usage (`du`, and the treemap of `audit --html`): from the audit's graph, before it is released.


def audit_and_usage(
    target: Target, policy: checks.Policy, *, namespaces: tuple[str, ...] = (), verify_blobs: bool = False,
    ignore: frozenset[Id] | None = None, progress: Progress = Silent(), jobs: int | None = None,
    subset: verify.Subset | None = None, names_check: Callable[[list[str]], None] | None = None,
    loaded_with: Callable[[Loaded], None] | None = None,
) -> tuple[checks.Audit, usage.Usage]:
    """The audit (released, `ignore` applied) and the usage of every repository, with a subtotal per prefix
    in `namespaces`; the usage reads every finding, ignored or not. `names_check` is given the repository
    names before any accounting: it raises to refuse names that match none."""
    loaded = load(target, verify_blobs=verify_blobs, progress=progress, jobs=jobs, subset=subset)
    if loaded_with is not None:
        loaded_with(loaded)
    if names_check is not None:
        names_check(sorted(loaded.inventory.repositories))
    judged = judge(loaded, policy)
    accounted = usage.account(judged, loaded.inventory, namespaces)
    result = checks.ignore(judged, ignore) if ignore is not None else judged
    return result.released(), accounted


# Removal (rm, retain): the cascade of what is named, planned and carried out as a repair's plan is.


@dataclass(frozen=True, slots=True)
class Removing:
    audit: checks.Audit
    removal: removal.RemovalPlan
    loaded: Loaded


def plan_rm(loaded: Loaded, policy: checks.Policy, wanted: removal.Removal, protection: plan.Protection) -> Removing:
    """The removal's plan, judged against an audit of the tree as it is now."""
    audit_now = judge(loaded, policy)
    return Removing(audit_now, removal.plan_removal(audit_now, loaded.inventory, wanted, protection), loaded)


def removal_exit_code(removing: Removing, applied: apply.Outcome | None, refused: bool = False) -> ExitCode:
    """As a repair's; items of this removal left (protected, skipped) set bit 4, garbage found before does not."""
    code = exit_code(RepairOutcome(removing.audit, removing.removal.plan, applied, refused))
    if removing.removal.protected and not refused:
        code |= ExitCode.PROBLEMS_LEFT
    return code


# Retain: a policy decides which tags stay; what goes is a removal, planned as rm's is.

# An image config past this is no config a registry was pushed (they hold a few KiB of history).
_CONFIG_LIMIT = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Retaining:
    decisions: policy.Decisions
    removing: Removing
    untouched: int  # repositories no rule selects


def pull_record(paths: list[str], window: timedelta | None, now: datetime) -> pulllog.Pulls:
    """The pulls the logs hold; refused (operational) when they do not reach back to `now - window`."""
    from . import pulllog

    try:
        pulls = pulllog.read_logs(paths)
    except pulllog.LogError as error:
        raise OperationalError(str(error)) from None
    since = (now - window).timestamp() if window is not None else now.timestamp()
    if not pulls.covers(since):
        earliest = (
            datetime.fromtimestamp(pulls.earliest, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            if pulls.earliest is not None else None
        )
        reach_back = f"their earliest line is from {earliest}" if earliest else "no line in them is dated"
        raise OperationalError(
            f"the pull logs do not cover keep-pulled-within: {reach_back}, later than the start of the window "
            f"({datetime.fromtimestamp(since, timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')}); give the rotated logs "
            "too (gzip'd ones are read), or a shorter window"
        )
    return pulls


def retain_facts(loaded: Loaded, assigned: Mapping[str, policy.Rule], graph: reach.Graph) -> policy.Facts:
    """Push times (one stat of each `current` link) and, for keep-last by created, the images' `created`:
    for the repositories a rule selects only."""
    from . import policy

    store, inventory = loaded.store, loaded.inventory
    pushed: dict[tuple[str, str], float | None] = {}
    for name in assigned:
        for tag in inventory.repositories[name].tags.values():
            info = store.stat(layout.tag_current_link(name, tag.name)) if tag.current is not None else None
            pushed[(name, tag.name)] = info.mtime if info is not None and info.kind is EntryKind.FILE else None
    created: dict[layout.Digest, float | None] = {}
    by_config: dict[layout.Digest, float | None] = {}
    for image, config in policy.created_sources(assigned, inventory, graph).items():
        if config not in by_config:
            size = inventory.blobs.get(config)
            try:
                raw = store.read(layout.blob_data(config), _CONFIG_LIMIT, size) if size is not None else b""
            except OSError:
                raw = b""
            by_config[config] = policy.parse_created(raw)
        created[image] = by_config[config]
    return policy.Facts(pushed, created)


def plan_retain(
    loaded: Loaded, checks_policy: checks.Policy, the_policy: policy.Policy, pulls: pulllog.Pulls | None,
    protection: plan.Protection,
) -> Retaining:
    """The policy's decisions on the tree as it is now, and the removal of what they let go."""
    from . import policy

    audit_now = judge(loaded, checks_policy)
    assigned = the_policy.assign(loaded.inventory.repositories)
    facts = retain_facts(loaded, assigned, audit_now.graph)
    decisions = policy.decide(
        the_policy, loaded.inventory, audit_now.graph, facts, checks_policy.now.timestamp(), pulls, protection
    )
    planned = removal.plan_removal(audit_now, loaded.inventory, decisions.removal(), protection)
    return Retaining(decisions, Removing(audit_now, planned, loaded), len(loaded.inventory.repositories) - len(assigned))
