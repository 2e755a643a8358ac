"""Findings to an ordered plan of actions. Pure: the plan is a value, dry-run prints it.

Order, so that every state in between is one the registry serves correctly, even if a
run is killed after any action (restic prune's rule: remove what nothing can reach
first, the things that reference before the things referenced):

  1. stale and dangling tag index entries      nothing resolves through them
  2. untagged manifests, dangling revisions    no tag names them any more
  3. unused and dangling _layers links,        after the manifests that used them
     empty repositories
  4. blobs                                     never one a remaining link or kept manifest names
  5. stale uploads, *.tmp leftovers
  6. empty directories, then those this run leaves empty (done while applying)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum

from . import layout
from .analyze import Audit, Policy, analyze, tags_using
from .findings import BY_ID, Finding, Severity
from .layout import Digest
from .manifests import InvalidManifest, Manifest
from .scan import Inventory, LinkKind

DEFAULT_IDS = frozenset({
    "tag-index-stale", "tag-index-dangling", "revision-dangling", "layer-link-unused", "layer-link-dangling",
    "blob-orphan", "repo-empty", "upload-stale", "dir-empty", "tmp-leftover",
})
UNTAGGED_IDS = frozenset({"manifest-untagged", "blob-unreachable"})
DAMAGE_IDS = frozenset({"link-invalid", "layer-link-missing", "tag-broken", "blob-digest-mismatch", "blob-empty",
                        "manifest-invalid"})
REPAIRABLE_IDS = DEFAULT_IDS | UNTAGGED_IDS | DAMAGE_IDS
CORRUPT_BLOB_IDS = frozenset({"blob-digest-mismatch", "blob-empty", "manifest-invalid"})
BLOB_IDS = frozenset({"blob-orphan", "blob-unreachable"}) | CORRUPT_BLOB_IDS
# What stays safe to do when part of the tree could not be read: it does not depend on what is elsewhere.
SAFE_WHEN_INCOMPLETE = frozenset({"tag-index-stale", "upload-stale", "tmp-leftover", "dir-empty", "link-invalid",
                                  "layer-link-missing", "tag-broken", "blob-digest-mismatch", "blob-empty"})

STEP = {
    "link-invalid": 0, "layer-link-missing": 0, "tag-broken": 0,
    "tag-index-stale": 1, "tag-index-dangling": 1,
    "manifest-untagged": 2, "revision-dangling": 2,
    "layer-link-unused": 3, "layer-link-dangling": 3, "repo-empty": 3,
    "blob-orphan": 4, "blob-unreachable": 4, "blob-digest-mismatch": 4, "blob-empty": 4, "manifest-invalid": 4,
    "upload-stale": 5, "tmp-leftover": 5,
    "dir-empty": 6,
}


class Kind(str, Enum):
    MOVE = "remove"  # into the quarantine (or deleted with --delete)
    WRITE_LINK = "write-link"  # create or rewrite a link file with `content`


@dataclass(frozen=True, slots=True)
class Action:
    kind: Kind
    path: str  # relative to the v2 directory
    finding: str
    bytes: int = 0
    repository: str | None = None
    tag: str | None = None
    digest: Digest | None = None
    content: Digest | None = None  # what a written link will hold
    resolves: str | None = None  # the path of the finding this action settles, where it differs from `path`

    @property
    def settles(self) -> str:
        return self.resolves or self.path

    @property
    def step(self) -> int:
        return STEP[self.finding]


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

    @property
    def bytes(self) -> int:
        return sum(a.bytes for a in self.actions)


@dataclass(frozen=True, slots=True)
class Protection:
    """References that are never removed: digests, repo@digest, repo:tag."""

    digests: frozenset[Digest] = frozenset()
    in_repository: frozenset[tuple[str, Digest]] = frozenset()
    tags: frozenset[tuple[str, str]] = frozenset()

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
    only: frozenset[str] | None = None
    skip: frozenset[str] = frozenset()
    force: bool = False  # act on blobs even when the audit could not read everything
    protect: Protection = field(default_factory=Protection)
    min_age: timedelta | None = None
    from_report: frozenset[tuple[str, str]] | None = None  # (id, path) a saved report lists

    def ids(self) -> frozenset[str]:
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


Modified = Callable[[str], datetime | None]  # a path's last modification, or None if it is gone


def prepare(
    inventory: Inventory,
    manifests: dict[Digest, Manifest | InvalidManifest],
    policy: Policy,
    selection: Selection,
    modified: Modified,
    corrupt_blobs: frozenset[Digest] = frozenset(),
) -> tuple[Audit, Plan]:
    """Judge the tree as this repair will leave it, and plan. Returns the plain audit too.

    What the plan keeps feeds back into the verdicts: without --untagged, or for a
    protected or too recent manifest, the blobs and links it uses are not garbage.
    """
    audit = analyze(inventory, manifests, policy, corrupt_blobs)
    ids = selection.ids()
    pinned_in: set[tuple[str, Digest]] = set()
    for tag_key in selection.protect.tags:
        repository = inventory.repositories.get(tag_key[0])
        tag = repository.tags.get(tag_key[1]) if repository else None
        if tag is not None:
            pinned_in.update((tag_key[0], d) for d in tag.index | ({tag.current} if tag.current else set()))
    pinned_in |= selection.protect.in_repository
    repair_policy = replace(
        policy,
        keep_untagged="manifest-untagged" not in ids,
        pinned=policy.pinned | selection.protect.digests,
        pinned_in=policy.pinned_in | frozenset(pinned_in),
    )
    judged = analyze(inventory, manifests, repair_policy, corrupt_blobs)
    too_recent = _too_recent(judged, selection, modified, policy.now)
    young_manifests = {
        (f.repository, f.digest) for f in judged.findings if f.id == "manifest-untagged" and f.path in too_recent
    }
    if young_manifests:
        repair_policy = replace(repair_policy, pinned_in=repair_policy.pinned_in | frozenset(young_manifests))
        judged = analyze(inventory, manifests, repair_policy, corrupt_blobs)
    the_plan = build_plan(audit, judged, inventory, selection, too_recent)
    corrupt = {a.digest for a in the_plan.actions if a.finding in CORRUPT_BLOB_IDS}
    if corrupt:
        the_plan = replace(the_plan, needs_repush=tuple(tags_using(inventory, manifests, corrupt)))
    return audit, the_plan


def _too_recent(audit: Audit, selection: Selection, modified: Modified, now: datetime) -> frozenset[str]:
    if selection.min_age is None:
        return frozenset()
    ids = selection.ids()
    young = set()
    for finding in audit.findings:
        if finding.id in ids:
            when = modified(finding.path)
            if when is not None and now - when < selection.min_age:
                young.add(finding.path)
    return frozenset(young)


def build_plan(
    audit: Audit, judged: Audit, inventory: Inventory, selection: Selection, too_recent: frozenset[str] = frozenset()
) -> Plan:
    ids = selection.ids()
    actions: list[Action] = []
    skipped: list[Skipped] = []
    not_followed = frozenset(oddity.path for oddity in inventory.unknown)
    for finding in judged.findings:
        if finding.id not in ids:
            continue
        reason = _reason_to_skip(finding, judged, selection, too_recent)
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
    if "repo-empty" in ids:
        actions.extend(_emptied_repositories(actions, inventory, selection))
    actions, guarded = _guard_blobs(actions, inventory)
    skipped.extend(guarded)
    actions = _drop_covered(actions)
    if selection.from_report is not None:
        holding = {(f.id, f.path) for f in judged.findings}
        in_tree = {(f.id, f.path) for f in audit.findings}
        for finding_id, path in sorted(selection.from_report - holding):
            if finding_id in ids:
                reason = (
                    "still used by what this repair keeps (untagged manifests stay without --untagged)"
                    if (finding_id, path) in in_tree else "no longer holds in the tree"
                )
                skipped.append(Skipped(Finding(finding_id, path, "listed in the report"), reason))
    actions.sort(key=lambda a: (a.step, a.path))
    acted = {a.settles for a in actions}
    acted |= {  # a current link rewritten settles its tag's tag-broken too
        layout.tag_dir(a.repository, a.tag) for a in actions
        if a.kind is Kind.WRITE_LINK and a.tag and a.path == layout.tag_current_link(a.repository, a.tag)
    }
    written = tuple(a.path for a in actions if a.kind is Kind.WRITE_LINK)
    acted |= {  # an empty directory a written link goes into is empty no more
        f.path for f in audit.findings if f.id == "dir-empty" and any(w.startswith(f.path + "/") for w in written)
    }
    covered = tuple(a.path + "/" for a in actions if a.kind is Kind.MOVE)
    leftover = tuple(
        f for f in audit.findings
        if f.severity is not Severity.NOTICE and f.path not in acted and not (f.path + "/").startswith(covered)
    )
    return Plan(tuple(actions), tuple(skipped), leftover)


def _reason_to_skip(finding: Finding, judged: Audit, selection: Selection, too_recent: frozenset[str]) -> str | None:
    if selection.from_report is not None and (finding.id, finding.path) not in selection.from_report:
        return "not in the report"
    if selection.protect.covers(finding):
        return "protected"
    if finding.path in too_recent:
        return "younger than --min-age"
    if selection.force:
        return None
    if not judged.complete and finding.id not in SAFE_WHEN_INCOMPLETE:
        return "the audit could not read everything: what refers to it is unknown (use --force)"
    if judged.uncertain and finding.id in ("blob-orphan", "blob-unreachable"):
        return "some manifests could not be parsed: what they reference is unknown (use --force)"
    if finding.id == "manifest-invalid" and finding.digest in judged.referenced:
        return "other manifests use this blob as content: the link naming it as a manifest is wrong, not the blob"
    return None


def _actions_for(finding: Finding, inventory: Inventory) -> list[Action]:
    common = dict(finding=finding.id, repository=finding.repository, tag=finding.tag, digest=finding.digest)
    if finding.id in DAMAGE_IDS - BLOB_IDS:
        mend = _mend(finding, inventory, common)
        return [mend] if mend is not None else []
    if finding.id == "repo-empty" and finding.repository is not None:
        return _remove_repository(finding.repository, inventory)
    return [Action(Kind.MOVE, finding.path, bytes=finding.bytes, **common)]


def _remove_repository(name: str, inventory: Inventory) -> list[Action]:
    """The whole directory; or, when other repositories nest inside it, only its own parts."""
    path = layout.repository_dir(name)
    nested = any(other.startswith(name + "/") for other in inventory.repositories)
    if not nested:
        return [Action(Kind.MOVE, path, "repo-empty", repository=name)]
    return [
        Action(Kind.MOVE, layout.join(path, part), "repo-empty", repository=name, resolves=path)
        for part in layout.REPOSITORY_MARKERS
        if part in inventory.repositories[name].parts
    ]


def _mend(finding: Finding, inventory: Inventory, common: dict) -> Action | None:
    repository = inventory.repositories.get(finding.repository or "")
    if repository is None:
        return None
    if finding.id == "layer-link-missing" and finding.digest is not None:
        return Action(Kind.WRITE_LINK, layout.layer_link(repository.name, finding.digest), content=finding.digest,
                      resolves=finding.path, **common)
    if finding.id == "link-invalid":
        bad = next((b for b in repository.bad_links if b.path == finding.path), None)
        if bad is None or bad.content.recoverable is None:
            return None
        if bad.path_digest is not None and bad.content.recoverable != bad.path_digest:
            return None
        if bad.path_digest is None and bad.content.recoverable not in repository.revisions:
            return None  # a current link may only name a manifest the repository holds
        return Action(Kind.WRITE_LINK, finding.path, content=bad.content.recoverable, **common)
    if finding.id == "tag-broken" and finding.tag is not None:
        tag = repository.tags.get(finding.tag)
        if tag is None or tag.current is not None or len(tag.index) != 1:
            return None
        (only,) = tag.index
        if only not in repository.revisions or only not in inventory.blobs:
            return None
        if any(b.kind == LinkKind.CURRENT and b.tag == tag.name and b.content.recoverable
               for b in repository.bad_links):
            return None  # the link-invalid rewrite restores it
        return Action(Kind.WRITE_LINK, layout.tag_current_link(repository.name, tag.name), content=only,
                      resolves=finding.path, **common)
    return None


def _emptied_repositories(actions: list[Action], inventory: Inventory, selection: Selection) -> list[Action]:
    """Repositories this plan leaves with no tag, manifest or upload: removed whole, so the catalog forgets them."""
    removed = {a.path for a in actions if a.kind is Kind.MOVE}
    emptied = []
    for repository in inventory.repositories.values():
        name = repository.name
        path = layout.repository_dir(name)
        if repository.tags or not repository.fully_read or not repository.revisions or path in removed:
            continue
        if repository.bad_links:
            continue  # damage stays where it can be seen and mended
        if any(layout.revision_dir(name, d) not in removed for d in repository.revisions):
            continue
        if any(layout.upload_dir(name, u.upload_id) not in removed for u in repository.uploads):
            continue
        if selection.protect.tags and any(r == name for r, _ in selection.protect.tags):
            continue
        emptied.extend(_remove_repository(name, inventory))
    return emptied


def _guard_blobs(actions: list[Action], inventory: Inventory) -> tuple[list[Action], list[Skipped]]:
    """Never remove a blob a link that stays still names: its repository would serve a missing blob."""
    moved_links = {a.path for a in actions if a.kind is Kind.MOVE and a.finding in ("layer-link-unused",
                                                                                     "layer-link-dangling")}
    moved_repositories = {a.repository for a in actions if a.finding == "repo-empty"}
    still_linked: set[Digest] = set()
    for repository in inventory.repositories.values():
        if repository.name in moved_repositories:
            continue
        still_linked |= repository.aliases
        for digest in repository.layer_links:
            if layout.layer_link_dir(repository.name, digest) not in moved_links:
                still_linked.add(digest)
    kept, skipped = [], []
    for action in actions:
        if action.finding in ("blob-orphan", "blob-unreachable") and action.digest in still_linked:
            finding = Finding(action.finding, action.path, "", digest=action.digest, bytes=action.bytes)
            skipped.append(Skipped(finding, "a _layers link that stays still names it"))
        else:
            kept.append(action)
    return kept, skipped


def _drop_covered(actions: list[Action]) -> list[Action]:
    """An action inside a directory another action removes is done by that one; an empty directory
    about to receive a written link is not removed."""
    written = tuple(a.path for a in actions if a.kind is Kind.WRITE_LINK)
    actions = [
        a for a in actions
        if not (a.finding == "dir-empty" and any(w.startswith(a.path + "/") for w in written))
    ]
    moved = sorted({a.path for a in actions if a.kind is Kind.MOVE})
    covering: list[str] = []
    for path in moved:
        if not covering or not path.startswith(covering[-1] + "/"):
            covering.append(path)
    prefixes = tuple(p + "/" for p in covering)
    return [a for a in actions if not a.path.startswith(prefixes)]

