"""Findings to an ordered plan of actions. Pure: the plan is a value, dry-run prints it.

What a repair keeps is a set of roots (see `reach`): the audit's, plus every revision
without --untagged, plus --protect, plus what is younger than --min-age. The plan asks
`reach` once with them; a garbage finding whose subject they still reach is not acted on,
so a partial selection never breaks a pull that worked.

Actions run in the catalogue's step order, so that every state in between is one the
registry serves correctly, even if a run is killed after any action (restic prune's rule:
remove what nothing can reach first, the things that reference before the things
referenced); empty directories come last, then those the run leaves empty (while applying).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum

from . import layout
from .catalogue import BY_ID, Finding, Id, Repair, Severity, Step, ids_repaired
from .checks import Audit
from .layout import Digest, Location
from .reach import Reach, Roots, reach, revision_roots, tags_using
from .scan import FollowedLink, Inventory, LinkKind

DEFAULT_IDS = ids_repaired(Repair.DEFAULT)
UNTAGGED_IDS = ids_repaired(Repair.UNTAGGED)
DAMAGE_IDS = ids_repaired(Repair.DAMAGE)
LAYER_LINK_IDS = frozenset({Id.LAYER_LINK_UNUSED, Id.LAYER_LINK_DANGLING})
GARBAGE_BLOB_IDS = frozenset({Id.BLOB_ORPHAN, Id.BLOB_UNREACHABLE})
# Damage mended by quarantining the blob itself.
CORRUPT_BLOB_IDS = frozenset(i for i in DAMAGE_IDS if BY_ID[i].step is Step.BLOBS)


class Kind(str, Enum):
    MOVE = "remove"  # into the quarantine (or deleted with --delete)
    WRITE_LINK = "write-link"  # create or rewrite a link file with `content`


@dataclass(frozen=True, slots=True)
class Action:
    kind: Kind
    location: Location
    finding: Id
    bytes: int = 0
    repository: str | None = None
    tag: str | None = None
    digest: Digest | None = None
    content: Digest | None = None  # what a written link will hold
    resolves: Location | None = None  # the finding this action settles, where it is elsewhere
    reason: str | None = None  # why an item that is no finding goes: `rm`, or `retain: <clause>` (None: repair)

    @property
    def path(self) -> str:
        return self.location.path

    @property
    def settles(self) -> str:
        return (self.resolves or self.location).path

    @property
    def step(self) -> Step:
        return BY_ID[self.finding].step


@dataclass(frozen=True, slots=True)
class Skipped:
    finding: Finding
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...]
    skipped: tuple[Skipped, ...]
    leftover: tuple[Finding, ...]  # garbage and damage the plan leaves as it is
    needs_repush: tuple[str, ...] = ()  # repo:tag whose content is quarantined as corrupt
    # The directory links the audit followed: actions below one go through it, and only through these.
    followed: tuple[FollowedLink, ...] = ()

    @property
    def bytes(self) -> int:
        return sum(a.bytes for a in self.actions)


@dataclass(frozen=True, slots=True)
class Protection:
    """References that are never removed: digests, repo@digest, repo:tag."""

    digests: frozenset[Digest] = frozenset()
    in_repository: frozenset[tuple[str, Digest]] = frozenset()
    tags: frozenset[tuple[str, str]] = frozenset()

    def roots(self, inventory: Inventory) -> Roots:
        """Protected manifests, with what they keep, where a repository holds them; protected digests
        are kept as blobs wherever they are."""
        manifests: dict[str, set[Digest]] = {}
        for name, repository in inventory.repositories.items():
            kept = {d for d in repository.revisions if d in self.digests or (name, d) in self.in_repository}
            for tag_name in (t for r, t in self.tags if r == name):
                tag = repository.tags.get(tag_name)
                if tag is not None:
                    kept |= {d for d in tag.index | ({tag.current} if tag.current else set()) if d in repository.revisions}
            if kept:
                manifests[name] = kept
        return Roots(manifests, anywhere=self.digests)

    def covers(self, finding: Finding) -> bool:
        if finding.digest is not None and (
            finding.digest in self.digests or (finding.repository, finding.digest) in self.in_repository
        ):
            return True
        return finding.tag is not None and (finding.repository, finding.tag) in self.tags


_HOST = re.compile(r"^(localhost|[^/]*[.:][^/]*)/")


class ProtectError(ValueError):
    pass


def parse_protection(lines: Iterable[str]) -> Protection:
    digests, in_repository, tags = set(), set(), set()
    for number, raw in enumerate(lines, 1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        reference = _HOST.sub("", text)  # registry.example.com:5000/app:v1 -> app:v1
        name, at, digest_text = reference.partition("@")
        if at or layout.parse_digest(reference):
            digest = layout.parse_digest(digest_text if at else reference)
            if digest is None:
                raise ProtectError(f"line {number}: {text!r} has no valid digest")
            if at:
                in_repository.add((name, digest))
            else:
                digests.add(digest)
            continue
        name, colon, tag = reference.rpartition(":")
        if not colon or not name or not layout.valid_tag(tag):
            raise ProtectError(f"line {number}: {text!r} is not a digest, repo@digest or repo:tag")
        tags.add((name, tag))
    return Protection(frozenset(digests), frozenset(in_repository), frozenset(tags))


@dataclass(frozen=True, slots=True)
class Selection:
    untagged: bool = False
    fix_damage: bool = False
    only: frozenset[Id] | None = None
    skip: frozenset[Id] = frozenset()
    force: bool = False  # act on blobs although some manifests could not be parsed (never on a partial view)
    protect: Protection = field(default_factory=Protection)
    min_age: timedelta | None = None
    from_report: frozenset[tuple[Id, str]] | None = None  # (id, path) a saved report lists

    def ids(self) -> frozenset[Id]:
        chosen = set(DEFAULT_IDS)
        if self.untagged:
            chosen |= UNTAGGED_IDS
        if self.fix_damage:
            chosen |= DAMAGE_IDS
        if self.from_report is not None:
            listed = {finding_id for finding_id, _ in self.from_report}
            chosen &= listed | (DAMAGE_IDS if self.fix_damage else set())
        if self.only is not None:
            chosen &= self.only
        return frozenset(chosen - self.skip)


Modified = Callable[[Location], datetime | None]  # a place's last modification, or None if it is gone


def prepare(
    audit: Audit, inventory: Inventory, selection: Selection, modified: Modified, now: datetime
) -> Plan:
    """Plan what `selection` asks of the audited tree, judged against what the repair keeps."""
    if audit.graph is None:
        raise ValueError("a released audit cannot be planned from")
    ids = selection.ids()
    too_recent = _too_recent(audit, ids, selection.min_age, modified, now)
    # What the repair keeps, in three layers, so that every finding kept only because of an option
    # is said to be kept by it: the audit's roots (and every revision without --untagged), then
    # --protect, then what --min-age finds young.
    base_roots = audit.roots(inventory)
    if Id.MANIFEST_UNTAGGED not in ids:
        base_roots = base_roots.plus(revision_roots(inventory))
    protected_roots = base_roots.plus(selection.protect.roots(inventory))
    young = _young_roots(audit, too_recent)
    base = reach(audit.graph, base_roots)
    with_protection = reach(audit.graph, protected_roots) if selection.protect.roots(inventory) != Roots() else base
    after = reach(audit.graph, protected_roots.plus(young)) if young.manifests else with_protection
    judged = []
    kept_by_option: list[Skipped] = []
    for finding in audit.findings:
        if not _still_kept(finding, after):
            judged.append(finding)
        elif finding.id not in ids or _still_kept(finding, base):
            continue  # kept whatever the options say: left as it is
        elif selection.protect.covers(finding) or _still_kept(finding, with_protection):
            kept_by_option.append(Skipped(finding, PROTECTED))
        else:
            kept_by_option.append(Skipped(finding, YOUNG))
    the_plan = build_plan(audit, tuple(judged), inventory, selection, too_recent)
    the_plan = replace(the_plan, skipped=(*kept_by_option, *the_plan.skipped), followed=tuple(inventory.followed))
    corrupt = {a.digest for a in the_plan.actions if a.finding in CORRUPT_BLOB_IDS}
    if corrupt:
        the_plan = replace(the_plan, needs_repush=tuple(tags_using(audit.graph, inventory, corrupt)))
    return the_plan


PROTECTED = "protected"
YOUNG = "younger than --min-age"


def _young_roots(audit: Audit, too_recent: frozenset[str]) -> Roots:
    """Untagged manifests younger than --min-age: kept, with what they use."""
    young: dict[str, set[Digest]] = {}
    for finding in audit.findings:
        if finding.id is Id.MANIFEST_UNTAGGED and finding.path in too_recent:
            young.setdefault(finding.repository, set()).add(finding.digest)
    return Roots(young)


def _still_kept(finding: Finding, after: Reach) -> bool:
    """Whether what the repair keeps still uses the subject of a garbage finding."""
    if finding.id is Id.MANIFEST_UNTAGGED:
        return after.keeps_manifest(finding.repository, finding.digest)
    if finding.id in GARBAGE_BLOB_IDS:
        return finding.digest in after.blobs
    if finding.id in LAYER_LINK_IDS:
        return finding.digest in after.referenced(finding.repository)
    return False


def _too_recent(
    audit: Audit, ids: frozenset[Id], min_age: timedelta | None, modified: Modified, now: datetime
) -> frozenset[str]:
    if min_age is None:
        return frozenset()
    young = set()
    for finding in audit.findings:
        if finding.id in ids:
            when = modified(finding.location)
            if when is not None and now - when < min_age:
                young.add(finding.path)
    return frozenset(young)


def build_plan(
    audit: Audit, judged: tuple[Finding, ...], inventory: Inventory, selection: Selection,
    too_recent: frozenset[str] = frozenset(),
) -> Plan:
    ids = selection.ids()
    actions: list[Action] = []
    skipped: list[Skipped] = []
    not_followed = frozenset(oddity.path for oddity in inventory.unknown)
    for finding in judged:
        if finding.id not in ids:
            continue
        reason = _reason_to_skip(finding, audit, selection, too_recent)
        if reason:
            skipped.append(Skipped(finding, reason))
            continue
        planned = _actions_for(finding, inventory)
        if not planned:
            skipped.append(Skipped(finding, "nothing this tool can do for it"))
        elif any(layout.at_or_under(a.path, not_followed) for a in planned):
            # What the registry serves there (it follows symbolic links) is unknown: never replace it.
            skipped.append(Skipped(finding, "a symbolic link or special file is in its place, not followed"))
        else:
            actions.extend(planned)
    if Id.REPO_EMPTY in ids:
        actions.extend(_emptied_repositories(actions, inventory, selection))
    actions, guarded = _guard_blobs(actions, inventory)
    skipped.extend(guarded)
    actions = drop_covered(actions)
    if selection.from_report is not None:
        holding = {(f.id, f.path) for f in judged}
        in_tree = {(f.id, f.path) for f in audit.findings}
        for finding_id, path in sorted(selection.from_report - holding):
            if finding_id in ids:
                reason = (
                    "still used by what this repair keeps (untagged manifests stay without --untagged)"
                    if (finding_id, path) in in_tree else "no longer holds in the tree"
                )
                skipped.append(Skipped(Finding(finding_id, layout.locate(path), "listed in the report"), reason))
    actions.sort(key=lambda a: (a.step, a.path))
    acted = {a.settles for a in actions}
    acted |= {  # a current link rewritten settles its tag's tag-broken too
        layout.tag_dir(a.repository, a.tag) for a in actions
        if a.kind is Kind.WRITE_LINK and a.tag
        and a.location == layout.LinkFile(layout.TagCurrent(a.repository, a.tag))
    }
    written = tuple(a.path for a in actions if a.kind is Kind.WRITE_LINK)
    acted |= {  # an empty directory a written link goes into is empty no more
        f.path for f in audit.findings if f.id is Id.DIR_EMPTY and any(w.startswith(f.path + "/") for w in written)
    }
    acted |= {a.path for a in actions}
    # One verdict per item: a finding another action settles (a rewritten link, a restored tag) is not skipped.
    skipped = [s for s in skipped if s.finding.path not in acted]
    covered = tuple(a.path + "/" for a in actions if a.kind is Kind.MOVE)
    leftover = tuple(
        f for f in audit.findings
        if f.severity is not Severity.NOTICE and f.path not in acted and not (f.path + "/").startswith(covered)
    )
    return Plan(tuple(actions), tuple(skipped), leftover)


def _reason_to_skip(finding: Finding, audit: Audit, selection: Selection, too_recent: frozenset[str]) -> str | None:
    if selection.from_report is not None and (finding.id, finding.path) not in selection.from_report:
        return "not in the report"
    if selection.protect.covers(finding):
        return PROTECTED
    if finding.path in too_recent:
        return YOUNG
    if finding.id is Id.MANIFEST_INVALID and finding.digest in audit.used_as_content:
        return "other manifests use this blob as content: the link naming it as a manifest is wrong, not the blob"
    if not audit.complete and not BY_ID[finding.id].safe_when_incomplete:
        # Never overridden: what the unseen part refers to is unknown, so removing this could break a pull.
        return "part of the tree could not be read or followed (see dir-unreadable and unexpected): what refers to it is unknown"
    if audit.uncertain and finding.id in GARBAGE_BLOB_IDS and not selection.force:
        return ("some manifests could not be parsed: what they reference is unknown "
                "(--force removes it anyway, trusting the other manifests)")
    return None


def _actions_for(finding: Finding, inventory: Inventory) -> list[Action]:
    common = dict(finding=finding.id, repository=finding.repository, tag=finding.tag, digest=finding.digest)
    if finding.id in DAMAGE_IDS - CORRUPT_BLOB_IDS:
        mend = _mend(finding, inventory, common)
        return [mend] if mend is not None else []
    if finding.id is Id.REPO_EMPTY and finding.repository is not None:
        return _remove_repository(finding.repository, inventory)
    if isinstance(finding.location, layout.Blob):  # a damage finding counts no bytes; the move frees them
        return [Action(Kind.MOVE, finding.location, bytes=inventory.blobs.get(finding.location.digest, 0), **common)]
    return [Action(Kind.MOVE, finding.location, bytes=finding.bytes, **common)]


def _remove_repository(name: str, inventory: Inventory) -> list[Action]:
    """The whole directory; or, when other repositories nest inside it, only its own parts."""
    whole = layout.RepositoryDir(name)
    nested = any(other.startswith(name + "/") for other in inventory.repositories)
    if not nested:
        return [Action(Kind.MOVE, whole, Id.REPO_EMPTY, repository=name)]
    return [
        Action(Kind.MOVE, layout.RepositoryPart(name, part), Id.REPO_EMPTY, repository=name, resolves=whole)
        for part in inventory.repositories[name].parts
    ]


def _mend(finding: Finding, inventory: Inventory, common: dict) -> Action | None:
    repository = inventory.repositories.get(finding.repository or "")
    if repository is None:
        return None
    if finding.id is Id.LAYER_LINK_MISSING and finding.digest is not None:
        link = layout.LinkFile(layout.LayerLink(repository.name, finding.digest))
        return Action(Kind.WRITE_LINK, link, content=finding.digest, resolves=finding.location, **common)
    if finding.id is Id.LINK_INVALID:
        bad = next((b for b in repository.bad_links if b.path == finding.path), None)
        if bad is None or bad.content.recoverable is None:
            return None
        if bad.path_digest is not None and bad.content.recoverable != bad.path_digest:
            return None
        if bad.path_digest is None and bad.content.recoverable not in repository.revisions:
            return None  # a current link may only name a manifest the repository holds
        return Action(Kind.WRITE_LINK, finding.location, content=bad.content.recoverable, **common)
    if finding.id is Id.TAG_BROKEN and finding.tag is not None:
        tag = repository.tags.get(finding.tag)
        if tag is None or tag.current is not None or len(tag.index) != 1:
            return None
        (only,) = tag.index
        if only not in repository.revisions or only not in inventory.blobs:
            return None
        if any(b.kind == LinkKind.CURRENT and b.tag == tag.name and b.content.recoverable
               for b in repository.bad_links):
            return None  # the link-invalid rewrite restores it
        current = layout.LinkFile(layout.TagCurrent(repository.name, tag.name))
        return Action(Kind.WRITE_LINK, current, content=only, resolves=finding.location, **common)
    return None


def _emptied_repositories(actions: list[Action], inventory: Inventory, selection: Selection) -> list[Action]:
    """Repositories this plan leaves with no tag, manifest or upload: removed whole, so the catalog forgets them."""
    removed = {a.location for a in actions if a.kind is Kind.MOVE}
    emptied = []
    for repository in inventory.repositories.values():
        name = repository.name
        if repository.tags or not repository.fully_read or not repository.revisions:
            continue
        if layout.RepositoryDir(name) in removed or repository.bad_links:
            continue  # damage stays where it can be seen and mended
        if any(layout.Revision(name, d) not in removed for d in repository.revisions):
            continue
        if any(layout.UploadDir(name, u.upload_id) not in removed for u in repository.uploads):
            continue
        if selection.protect.tags and any(r == name for r, _ in selection.protect.tags):
            continue
        emptied.extend(_remove_repository(name, inventory))
    return emptied


def _guard_blobs(actions: list[Action], inventory: Inventory) -> tuple[list[Action], list[Skipped]]:
    """Never remove a blob a link that stays still names: its repository would serve a missing blob."""
    moved_links = {a.location for a in actions if a.kind is Kind.MOVE and a.finding in LAYER_LINK_IDS}
    moved_repositories = {a.repository for a in actions if a.finding is Id.REPO_EMPTY}
    still_linked: set[Digest] = set()
    for repository in inventory.repositories.values():
        if repository.name in moved_repositories:
            continue
        still_linked.update(repository.aliases)
        for digest in repository.layer_links:
            if layout.LayerLink(repository.name, digest) not in moved_links:
                still_linked.add(digest)
    kept, skipped = [], []
    for action in actions:
        if action.finding in GARBAGE_BLOB_IDS and action.digest in still_linked:
            finding = Finding(action.finding, action.location, "", digest=action.digest, bytes=action.bytes)
            skipped.append(Skipped(finding, "a _layers link that stays still names it"))
        else:
            kept.append(action)
    return kept, skipped


def drop_covered(actions: list[Action]) -> list[Action]:
    """An action inside a directory another action removes is done by that one; an empty directory
    about to receive a written link is not removed."""
    written = tuple(a.path for a in actions if a.kind is Kind.WRITE_LINK)
    actions = [
        a for a in actions
        if not (a.finding is Id.DIR_EMPTY and any(w.startswith(a.path + "/") for w in written))
    ]
    moved = {a.path for a in actions if a.kind is Kind.MOVE}

    def covering(path: str) -> str | None:
        """The top-most directory above `path` that an action moves (one lookup per level: plans are large)."""
        top = None
        end = path.rfind("/")
        while end > 0:
            if path[:end] in moved:
                top = path[:end]
            end = path.rfind("/", 0, end)
        return top

    # What a covered action would have freed, its covering move frees: the plan's bytes stay true.
    inside: dict[str, int] = {}
    kept = []
    for action in actions:
        holder = covering(action.path)
        if holder is None:
            kept.append(action)
        else:
            inside[holder] = inside.get(holder, 0) + action.bytes
    return [
        replace(a, bytes=a.bytes + inside.pop(a.path)) if a.kind is Kind.MOVE and a.path in inside else a
        for a in kept
    ]
