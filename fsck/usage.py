"""Where the space goes (`du`): per repository, from the audit's own graph and findings. Pure: no storage.

Live bytes are what the audit's roots reach (tags, what broken tags and damaged links may need, every
revision of a repository not read whole). Each stored blob the live roots reach has its users: the
repositories whose live manifests are or reference it, or whose damaged links hold it. A blob with one
user is that repository's `exclusive` bytes (deleting the repository makes them garbage); one with
several is shared. So the exclusive bytes of every repository plus the shared bytes counted once are
the live bytes, and live + garbage blobs + blobs held by damage are the stored bytes.

`frees_on_rm` is what `rm REPO` would free (`freeing.freed_by_each`): the roots before also keep the
manifests already untagged, so a blob one repository's tags use and another's untagged manifest
references is exclusive but not freed by `rm`, and one only its own untagged manifests use is freed
by `rm` but is garbage already, not exclusive.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from . import freeing
from .catalogue import Id, Severity
from .checks import Audit
from .layout import Blob, Digest
from .reach import reach
from .scan import Inventory
from .spool import FindingLog

_GARBAGE_BLOB_IDS = frozenset({Id.BLOB_ORPHAN, Id.BLOB_UNREACHABLE})


@dataclass(frozen=True, slots=True)
class Row:
    """One repository, or with `namespace` one subtotal over the repositories under a prefix."""

    name: str  # the repository, or the prefix (`team/`)
    tags: int
    manifests_live: int
    manifests_untagged: int
    blobs: int  # stored blobs its live manifests are or reference (or its damaged links hold)
    referenced_bytes: int  # their bytes, each counted once
    exclusive_bytes: int  # of those, what no other repository's live manifests reach
    shared_bytes: int  # the rest: reached by another repository too
    reclaimable_bytes: int  # its garbage now (as the audit's `by_repository`)
    frees_on_rm_bytes: int  # what `registry-fsck rm` of it would free
    uploads_bytes: int  # what its `_uploads` holds (not blobs)
    namespace: bool = False
    repositories: int = 1  # how many repositories the row covers


@dataclass(frozen=True, slots=True)
class Totals:
    repositories: int
    stored_bytes: int  # every stored blob
    live_bytes: int  # the blobs the audit's roots reach
    exclusive_bytes: int  # the sum of every repository's exclusive bytes
    shared_bytes: int  # blobs several repositories reach, counted once
    garbage_bytes: int  # blob-orphan and blob-unreachable
    damage_held_bytes: int  # blobs neither live nor garbage: given a damage (or unreadable) finding instead
    reclaimable_bytes: int  # every garbage finding (uploads, leftovers and links included)
    shared_reclaimable_bytes: int  # garbage blobs no one repository alone uses

    @property
    def live_adds_up(self) -> bool:
        return self.exclusive_bytes + self.shared_bytes == self.live_bytes

    @property
    def stored_adds_up(self) -> bool:
        return self.live_bytes + self.garbage_bytes + self.damage_held_bytes == self.stored_bytes


@dataclass(frozen=True, slots=True)
class Usage:
    rows: tuple[Row, ...]  # every repository, by name
    namespaces: tuple[Row, ...]  # the subtotals asked for, in the order asked
    totals: Totals
    complete: bool  # False: part of the tree could not be read; figures may be wrong


def account(audit: Audit, inventory: Inventory, namespaces: Sequence[str] = ()) -> Usage:
    """The usage of every repository, and a subtotal for each prefix in `namespaces` (`team/`).
    Needs the audit before it is released (its graph) and its findings unignored."""
    graph = audit.graph
    if graph is None:
        raise ValueError("a released audit has no graph to account from")
    stored = graph.blobs
    live_roots = freeing.audit_roots(audit, inventory)
    live = reach(graph, live_roots)
    live_users = freeing.users(live)
    before = live_roots.plus(freeing.untagged_roots(inventory, live))
    before_users = freeing.users(reach(graph, before))
    frees = freeing.freed_by_each(before_users, before.anywhere)
    findings = audit.findings if isinstance(audit.findings, FindingLog) else FindingLog.of(audit.findings)
    seen = _read_findings(findings, live.blobs, stored)

    used: dict[str, set[Digest]] = {}
    exclusive: dict[str, int] = {}
    for digest, names in live_users.items():
        for name in names:
            used.setdefault(name, set()).add(digest)
        if len(names) == 1:
            exclusive[names[0]] = exclusive.get(names[0], 0) + stored[digest]
    counts = findings.counts
    rows = []
    for name in sorted(inventory.repositories):
        repository = inventory.repositories[name]
        mine = used.get(name, set())
        referenced = freeing.bytes_of(graph, mine)
        tally = counts.by_repository.get(name)
        rows.append(Row(
            name=name,
            tags=len(repository.tags),
            manifests_live=len(repository.revisions & live.live.get(name, frozenset()) & stored.keys()),
            manifests_untagged=seen.untagged.get(name, 0),
            blobs=len(mine),
            referenced_bytes=referenced,
            exclusive_bytes=exclusive.get(name, 0),
            shared_bytes=referenced - exclusive.get(name, 0),
            reclaimable_bytes=tally.reclaimable_bytes if tally is not None else 0,
            frees_on_rm_bytes=freeing.bytes_of(graph, frees.get(name, ())),
            uploads_bytes=sum(u.size for u in repository.uploads),
        ))
    live_bytes = freeing.bytes_of(graph, live_users)
    shared_once = sum(stored[d] for d, names in live_users.items() if len(names) > 1)
    totals = Totals(
        repositories=len(rows),
        stored_bytes=sum(stored.values()),
        live_bytes=live_bytes,
        exclusive_bytes=sum(exclusive.values()),
        shared_bytes=shared_once,
        garbage_bytes=seen.garbage_bytes,
        damage_held_bytes=seen.damage_held_bytes,
        reclaimable_bytes=counts.reclaimable_bytes,
        shared_reclaimable_bytes=counts.shared_reclaimable_bytes,
    )
    by_name = {row.name: row for row in rows}
    subtotals = tuple(
        _namespace(prefix, by_name, graph.blobs, live_users, before_users, before.anywhere) for prefix in namespaces
    )
    return Usage(tuple(rows), subtotals, totals, audit.complete)


@dataclass(frozen=True, slots=True)
class _Seen:
    untagged: Mapping[str, int]  # manifest-untagged findings per repository
    garbage_bytes: int
    damage_held_bytes: int


def _read_findings(findings: Iterable, live: Iterable[Digest], stored: Mapping[Digest, int]) -> _Seen:
    """One pass over the findings: untagged manifests per repository, the garbage blobs' bytes, and the
    stored blobs outside the live ones that another finding (damage, unreadable) holds."""
    live_blobs = live if isinstance(live, (set, frozenset)) else set(live)
    untagged: dict[str, int] = {}
    garbage = 0
    held: set[Digest] = set()
    for finding in findings:
        if finding.id is Id.MANIFEST_UNTAGGED and finding.repository is not None:
            untagged[finding.repository] = untagged.get(finding.repository, 0) + 1
        elif finding.id in _GARBAGE_BLOB_IDS:
            garbage += finding.bytes
        elif (
            isinstance(finding.location, Blob) and finding.severity is not Severity.GARBAGE
            and finding.digest in stored and finding.digest not in live_blobs
        ):
            held.add(finding.digest)
    return _Seen(untagged, garbage, sum(stored[d] for d in held))


def under(prefix: str, name: str) -> bool:
    """Whether repository `name` is in the namespace `prefix` (`team/`: `team/app`, `team/x/y`; not `team`)."""
    return name.startswith(prefix)


def _namespace(
    prefix: str, rows: Mapping[str, Row], stored: Mapping[Digest, int], live_users: freeing.Users,
    before_users: freeing.Users, anywhere: frozenset[Digest] | Iterable[Digest],
) -> Row:
    """One row for the repositories under `prefix`: exclusive is what no repository outside reaches."""
    members = [row for name, row in rows.items() if under(prefix, name)]
    referenced = exclusive = blobs = 0
    for digest, names in live_users.items():
        inside = [under(prefix, n) for n in names]
        if any(inside):
            blobs += 1
            referenced += stored[digest]
            if all(inside):
                exclusive += stored[digest]
    frees = freeing.freed_by_all(before_users, lambda n: under(prefix, n), frozenset(anywhere))
    return Row(
        name=prefix,
        tags=sum(r.tags for r in members),
        manifests_live=sum(r.manifests_live for r in members),
        manifests_untagged=sum(r.manifests_untagged for r in members),
        blobs=blobs,
        referenced_bytes=referenced,
        exclusive_bytes=exclusive,
        shared_bytes=referenced - exclusive,
        reclaimable_bytes=sum(r.reclaimable_bytes for r in members),
        frees_on_rm_bytes=sum(stored[d] for d in frees),
        uploads_bytes=sum(r.uploads_bytes for r in members),
        namespace=True,
        repositories=len(members),
    )


class SortKey(str, Enum):
    NAME = "name"
    EXCLUSIVE = "exclusive"
    REFERENCED = "referenced"
    SHARED = "shared"
    RECLAIMABLE = "reclaimable"
    FREES_ON_RM = "frees-on-rm"
    TAGS = "tags"
    MANIFESTS = "manifests"
    BLOBS = "blobs"
    UPLOADS = "uploads"


_FIELD = {
    SortKey.EXCLUSIVE: "exclusive_bytes",
    SortKey.REFERENCED: "referenced_bytes",
    SortKey.SHARED: "shared_bytes",
    SortKey.RECLAIMABLE: "reclaimable_bytes",
    SortKey.FREES_ON_RM: "frees_on_rm_bytes",
    SortKey.TAGS: "tags",
    SortKey.MANIFESTS: "manifests_live",
    SortKey.BLOBS: "blobs",
    SortKey.UPLOADS: "uploads_bytes",
}


def sort_rows(rows: Iterable[Row], key: SortKey = SortKey.EXCLUSIVE) -> list[Row]:
    """By name, or biggest first (ties by name)."""
    if key is SortKey.NAME:
        return sorted(rows, key=lambda r: r.name)
    field = _FIELD[key]
    return sorted(rows, key=lambda r: (-getattr(r, field), r.name))


@dataclass(frozen=True, slots=True)
class Selection:
    """What `du` shows: the rows chosen (sorted, cut to `top`), and how many were cut."""

    rows: tuple[Row, ...]
    namespaces: tuple[Row, ...]
    cut: tuple[Row, ...]  # chosen, but beyond --top


def select(usage: Usage, names: Sequence[str] = (), key: SortKey = SortKey.EXCLUSIVE, top: int = 0) -> Selection:
    """`names`: repositories and prefixes (ending with `/`); none: every repository. `top`: 0 for all."""
    prefixes = [n for n in names if n.endswith("/")]
    exact = {n for n in names if not n.endswith("/")}
    chosen = [
        row for row in usage.rows
        if not names or row.name in exact or any(under(p, row.name) for p in prefixes)
    ]
    ordered = sort_rows(chosen, key)
    kept, cut = (ordered[:top], ordered[top:]) if top > 0 else (ordered, [])
    return Selection(tuple(kept), usage.namespaces, tuple(cut))


def unknown_names(inventory_names: Iterable[str], names: Sequence[str]) -> list[str]:
    """The names that match no repository (a prefix: none under it)."""
    known = list(inventory_names)
    present = set(known)
    return [
        n for n in names
        if (n.endswith("/") and not any(under(n, k) for k in known)) or (not n.endswith("/") and n not in present)
    ]
