"""Removing what is named (`rm`) or what a policy lets go (`retain`): the cascade, as a plan. Pure.

Removal is a change of roots (see `reach`). Before: everything the audit keeps (the tags,
what broken tags and damaged links may need, the revisions of repositories read only in
part) and every untagged manifest. After: the tags that remain, the manifests that were
untagged already (a pull by digest of an old manifest never breaks), `--protect`, and what
broken tags and damaged links keep. What the removal frees is exactly what the roots before
reach and the roots after do not; garbage that was already there is not touched (it is
`repair`'s), only counted.

The plan is an ordinary `plan.Plan`, carried out, journaled and undone as a repair's is, in
the catalogue's step order: tags, then the index entries of other tags that name removed
manifests, then the manifests, then `_layers` links and whole repositories, then blobs, then
the directories left empty. At every state in between each remaining tag is served whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from . import layout, match
from .catalogue import BY_ID, Finding, Id, Severity
from .checks import Audit
from .layout import Digest
from .match import Matcher
from .plan import Action, Kind, Plan, Protection, Skipped, drop_covered
from .reach import Graph, Reach, Roots, closure, damaged_link_roots, reach, revision_roots
from .scan import Inventory

RM = "rm"  # the reason of everything `rm` names
_COSIGN = re.compile(r"sha256-([0-9a-f]{64})\.(sig|att|sbom)")


def cosign_subject(tag: str) -> Digest | None:
    """The manifest a cosign-style tag (`sha256-<hex>.sig`, `.att`, `.sbom`) is about, or None."""
    found = _COSIGN.fullmatch(tag)
    return bytes.fromhex(found.group(1)) if found else None


@dataclass(frozen=True, slots=True)
class Removal:
    """What to remove, each item with the reason its actions will carry (`rm`, or `retain: <clause>`)."""

    tags: Mapping[tuple[str, str], str] = field(default_factory=dict)  # (repository, tag) -> reason
    manifests: Mapping[tuple[str, Digest], str] = field(default_factory=dict)  # (repository, digest) -> reason
    repositories: Mapping[str, str] = field(default_factory=dict)  # whole repositories (nested ones not included)
    untag_only: bool = False  # the manifests of removed tags stay, untagged (still pullable by digest)
    force: bool = False  # remove blobs although some manifests could not be parsed (never on a partial view)


@dataclass(frozen=True, slots=True)
class Item:
    """One tag, manifest or repository the removal takes or leaves."""

    repository: str
    tag: str | None = None
    digest: Digest | None = None
    reason: str = RM

    @property
    def kind(self) -> str:
        return "tag" if self.tag is not None else "manifest" if self.digest is not None else "repository"

    def __str__(self) -> str:
        if self.tag is not None:
            return f"{self.repository}:{self.tag}"
        if self.digest is not None:
            return f"{self.repository}@{layout.format_digest(self.digest)}"
        return self.repository


@dataclass(frozen=True, slots=True)
class Refusal:
    """A named manifest something that stays still keeps (an index naming it, its subject...)."""

    item: Item
    kept_by: str  # what keeps it, as `repo@digest`, `repo:tag` or a few words

    @property
    def message(self) -> str:
        return f"{self.item}: {self.kept_by}, which stays: remove that instead (or with it)"


@dataclass(frozen=True, slots=True)
class RemovalPlan:
    plan: Plan
    tags: tuple[Item, ...]  # every tag removed: named, naming a removed manifest, signing one, of a removed repository
    manifests: tuple[Item, ...]  # every manifest revision removed, per repository
    repositories: tuple[Item, ...]  # removed whole: named, or left with nothing in them
    protected: tuple[Item, ...]  # named, and left: --protect covers them
    refused: tuple[Refusal, ...]  # named, and left: what stays keeps them (the command refuses the whole removal)
    garbage_before: int  # garbage findings the audit made, left alone
    garbage_before_bytes: int

    @property
    def bytes(self) -> int:
        return self.plan.bytes

    @property
    def left(self) -> bool:
        """Whether items of this removal were left (protected or skipped): exit bit 4."""
        return bool(self.protected or self.plan.leftover)


def plan_removal(audit: Audit, inventory: Inventory, removal: Removal, protection: Protection = Protection()) -> RemovalPlan:
    """The cascade of `removal` on the audited tree, as a plan; `protection` is never removed."""
    if audit.graph is None:
        raise ValueError("a released audit cannot be planned from")
    removal, protected = _without_protected(removal, inventory, protection)
    cascade = _cascade(audit, inventory, removal, protection)
    refused = _refusals(cascade, removal)
    if refused:  # plan without them, so that the plan is always one that can be carried out
        named = {(r.item.repository, r.item.digest) for r in refused}
        removal = Removal(removal.tags, {k: v for k, v in removal.manifests.items() if k not in named},
                          removal.repositories, removal.untag_only, removal.force)
        cascade = _cascade(audit, inventory, removal, protection)
    garbage = [f for f in audit.findings if f.severity is Severity.GARBAGE]
    return RemovalPlan(
        _plan(audit, inventory, removal, cascade),
        tuple(Item(r, t, inventory.repositories[r].tags[t].current, why) for (r, t), why in sorted(cascade.tags.items())),
        tuple(Item(r, None, d, cascade.reasons.manifest(r, d))
              for r, digests in sorted(cascade.removed.items()) for d in sorted(digests)
              if d in inventory.repositories[r].revisions),
        tuple(Item(name, reason=why) for name, why in sorted(cascade.whole.items())),
        tuple(protected),
        tuple(refused),
        len(garbage),
        sum(f.bytes for f in garbage),
    )


# Which named items --protect covers.


def _without_protected(removal: Removal, inventory: Inventory, protection: Protection) -> tuple[Removal, list[Item]]:
    protected: list[Item] = []
    repositories = inventory.repositories

    def manifest_protected(name: str, digest: Digest) -> bool:
        if digest in protection.digests or (name, digest) in protection.in_repository:
            return True
        return any(t.current == digest and (name, t.name) in protection.tags for t in repositories[name].tags.values())

    tags = {}
    for (name, tag), why in removal.tags.items():
        if (name, tag) in protection.tags:
            protected.append(Item(name, tag, reason=why))
        else:
            tags[(name, tag)] = why
    manifests = {}
    for (name, digest), why in removal.manifests.items():
        if manifest_protected(name, digest):
            protected.append(Item(name, None, digest, why))
        else:
            manifests[(name, digest)] = why
    whole = {}
    for name, why in removal.repositories.items():
        repository = repositories[name]
        if any(r == name and t in repository.tags for r, t in protection.tags) or any(
            manifest_protected(name, d) for d in repository.revisions
        ):
            protected.append(Item(name, reason=why))
        else:
            whole[name] = why
    return Removal(tags, manifests, whole, removal.untag_only, removal.force), protected


# The cascade: roots before and after, and what is between.


class _Reasons:
    """Which named item's removal frees each manifest and blob (the first that does, in the order named)."""

    def __init__(self) -> None:
        self.manifests: dict[tuple[str, Digest], str] = {}
        self.blobs: dict[Digest, str] = {}
        self.default = RM

    def manifest(self, repository: str, digest: Digest) -> str:
        return self.manifests.get((repository, digest), self.default)

    def blob(self, digest: Digest) -> str:
        return self.blobs.get(digest, self.default)


@dataclass(slots=True)
class _Cascade:
    before: Reach
    after: Reach
    tags: dict[tuple[str, str], str]  # every tag removed -> reason
    whole: dict[str, str]  # repositories removed whole -> reason
    removed: dict[str, set[Digest]]  # per repository: manifests live before and not after
    reasons: _Reasons


def _cascade(audit: Audit, inventory: Inventory, removal: Removal, protection: Protection) -> _Cascade:
    graph = audit.graph
    assert graph is not None
    repositories = inventory.repositories
    audit_roots = audit.roots(inventory)
    damaged = damaged_link_roots(inventory)
    protected = protection.roots(inventory)
    before = reach(graph, audit_roots.plus(revision_roots(inventory)).plus(damaged).plus(protected))
    tagged = reach(graph, audit_roots)
    untagged_before = {
        name: repository.revisions - tagged.live.get(name, frozenset())
        for name, repository in repositories.items()
    }
    whole = dict(removal.repositories)
    tags: dict[tuple[str, str], str] = {}
    for (name, tag), why in removal.tags.items():
        if name not in whole:
            tags.setdefault((name, tag), why)
    for (name, digest), why in removal.manifests.items():
        for tag in repositories[name].tags.values():
            if tag.current == digest and name not in whole:
                tags.setdefault((name, tag.name), why)
    named = {(name, d) for name, d in removal.manifests}
    while True:
        after = reach(graph, _roots_after(inventory, audit, untagged_before, tags, named, whole, removal.untag_only)
                      .plus(_outside(damaged, whole)).plus(_outside(protected, whole)))
        removed = {
            name: set(live) - set(after.live.get(name, frozenset()))
            for name, live in before.live.items() if name not in whole
        }
        signatures = {
            (name, tag.name): None for name, digests in removed.items() if digests
            for tag in repositories[name].tags.values()
            if (name, tag.name) not in tags and cosign_subject(tag.name) in digests
        }
        if not signatures:
            break
        # Signature tags follow their subject: with them gone, what they kept may go too.
        subjects = {(name, t): cosign_subject(t) for name, t in signatures}
        reasons_now = _attribute(graph, inventory, removal, tags, whole, removed)
        for (name, t), subject in subjects.items():
            tags[(name, t)] = reasons_now.manifest(name, subject)
    for name, why in whole.items():
        removed[name] = set(before.live.get(name, frozenset())) | repositories[name].revisions
        for tag in repositories[name].tags:
            tags.setdefault((name, tag), why)
    whole = _with_emptied(whole, inventory, tags, removed, removal.manifests)
    return _Cascade(before, after, tags, whole, removed, _attribute(graph, inventory, removal, tags, whole, removed))


def _roots_after(
    inventory: Inventory, audit: Audit, untagged_before: Mapping[str, set[Digest]], tags: Mapping[tuple[str, str], str],
    named: set[tuple[str, Digest]], whole: Mapping[str, str], untag_only: bool,
) -> Roots:
    manifests: dict[str, set[Digest]] = {}
    unread = set(audit.unread)
    for name, repository in inventory.repositories.items():
        if name in whole:
            continue
        kept = {d for d in untagged_before[name] if (name, d) not in named}
        for tag in repository.tags.values():
            if (name, tag.name) in tags:
                if untag_only and tag.current is not None and (name, tag.current) not in named:
                    kept.add(tag.current)
            elif tag.current is not None:
                kept.add(tag.current)
            else:
                kept.update(tag.index)  # a broken tag may still need what its index names
        if name in unread or not repository.fully_read:
            kept.update(repository.revisions)
        manifests[name] = kept
    return Roots(manifests)


def _outside(roots: Roots, whole: Mapping[str, str]) -> Roots:
    """`roots` without those of repositories removed whole."""
    return Roots(
        {n: d for n, d in roots.manifests.items() if n not in whole},
        {n: d for n, d in roots.blobs.items() if n not in whole},
        roots.anywhere,
    )


def _with_emptied(
    whole: dict[str, str], inventory: Inventory, tags: Mapping[tuple[str, str], str], removed: Mapping[str, set[Digest]],
    named: Mapping[tuple[str, Digest], str],
) -> dict[str, str]:
    """The repositories removed whole, and those the removal leaves with no tag, revision or upload (so that
    /v2/_catalog forgets them, as it forgets a repository removed by name)."""
    emptied = dict(whole)
    tags_by_repository: dict[str, list[str]] = {}
    for name, tag in tags:
        tags_by_repository.setdefault(name, []).append(tag)
    for name, repository in inventory.repositories.items():
        if name in emptied or not repository.fully_read or repository.bad_links or repository.uploads:
            continue
        gone_tags = sorted(tags_by_repository.get(name, ()))
        gone = removed.get(name, set()) & repository.revisions
        if not (gone_tags or gone) or set(repository.tags) - set(gone_tags) or repository.revisions - gone:
            continue
        emptied[name] = (
            tags[(name, gone_tags[0])] if gone_tags else next((why for (r, _), why in named.items() if r == name), RM)
        )
    return emptied


def _attribute(
    graph: Graph, inventory: Inventory, removal: Removal, tags: Mapping[tuple[str, str], str],
    whole: Mapping[str, str], removed: Mapping[str, set[Digest]],
) -> _Reasons:
    reasons = _Reasons()
    reasons.default = next(iter([*removal.tags.values(), *removal.manifests.values(), *removal.repositories.values()]), RM)
    starts: list[tuple[str, Digest, str]] = [(n, d, why) for (n, d), why in removal.manifests.items()]
    for (name, tag), why in tags.items():
        current = inventory.repositories[name].tags[tag].current
        if current is not None:
            starts.append((name, current, why))
    for name, why in whole.items():
        starts.extend((name, d, why) for d in sorted(removed.get(name, ())))
    for name, digest, why in starts:
        gone = removed.get(name, set())
        for freed in closure(graph, name, {digest}) & gone:
            reasons.manifests.setdefault((name, freed), why)
    for (_name, digest), why in reasons.manifests.items():
        reasons.blobs.setdefault(digest, why)
        manifest = graph.manifest(digest)
        if manifest is not None:
            for referenced in manifest.digests:
                reasons.blobs.setdefault(referenced, why)
    return reasons


def _refusals(cascade: _Cascade, removal: Removal) -> list[Refusal]:
    refused = []
    graph = cascade.after.graph
    for (name, digest), why in removal.manifests.items():
        if name in cascade.whole or not cascade.after.keeps_manifest(name, digest):
            continue
        item = Item(name, None, digest, why)
        refused.append(Refusal(item, _keeper(graph, cascade.after, name, digest)))
    return refused


def _keeper(graph: Graph, after: Reach, name: str, digest: Digest) -> str:
    live = after.live.get(name, frozenset())
    for parent in sorted(live):
        manifest = graph.manifest(parent)
        if parent != digest and manifest is not None and digest in manifest.child_digests():
            return f"a child of {name}@{layout.format_digest(parent)}"
    manifest = graph.manifest(digest)
    if manifest is not None and manifest.subject is not None and manifest.subject in live:
        return f"a referrer of {name}@{layout.format_digest(manifest.subject)}"
    return "kept by a broken tag's index or a damaged link"


# The actions.


def _plan(audit: Audit, inventory: Inventory, removal: Removal, cascade: _Cascade) -> Plan:
    repositories = inventory.repositories
    reasons = cascade.reasons
    actions: list[Action] = []
    for name, why in cascade.whole.items():
        actions.extend(_repository_actions(name, inventory, cascade.whole, why))
    for (name, tag), why in cascade.tags.items():
        if name in cascade.whole:
            continue
        current = repositories[name].tags[tag].current
        actions.append(Action(Kind.MOVE, layout.TagDir(name, tag), Id.TAG_REMOVED, repository=name, tag=tag,
                              digest=current, reason=why))
    removed_links: set[tuple[str, Digest]] = set()
    for name, repository in repositories.items():
        if name in cascade.whole:
            continue
        gone = cascade.removed.get(name, set())
        for tag in repository.tags.values():
            if (name, tag.name) in cascade.tags:
                continue
            for digest in sorted(tag.index & gone):
                actions.append(Action(Kind.MOVE, layout.TagIndexEntry(name, tag.name, digest), Id.TAG_INDEX_STALE,
                                      repository=name, tag=tag.name, digest=digest, reason=reasons.manifest(name, digest)))
        for digest in sorted(gone & repository.revisions):
            actions.append(Action(Kind.MOVE, layout.Revision(name, digest), Id.MANIFEST_UNTAGGED, repository=name,
                                  digest=digest, reason=reasons.manifest(name, digest)))
        freed_links = (
            set(cascade.before.referenced(name)) - set(cascade.after.referenced(name))
            - set(cascade.after.held.get(name, frozenset())) - repository.aliases
        )
        for digest in sorted(freed_links & repository.layer_links):
            removed_links.add((name, digest))
            actions.append(Action(Kind.MOVE, layout.LayerLink(name, digest), Id.LAYER_LINK_UNUSED, repository=name,
                                  digest=digest, reason=reasons.blob(digest)))
    still_linked: set[Digest] = set()
    for name, repository in repositories.items():
        if name not in cascade.whole:
            still_linked.update(repository.aliases)
            still_linked |= {d for d in repository.layer_links if (name, d) not in removed_links}
    skipped: list[Skipped] = []
    for digest in sorted(set(cascade.before.blobs) - set(cascade.after.blobs)):
        if digest not in inventory.blobs:
            continue
        action = Action(Kind.MOVE, layout.Blob(digest), Id.BLOB_ORPHAN, bytes=inventory.blobs[digest], digest=digest,
                        reason=reasons.blob(digest))
        if digest in still_linked:
            skipped.append(Skipped(_finding(action), "a _layers link that stays still names it"))
        else:
            actions.append(action)
    actions, more = _safe(actions, audit, inventory, removal)
    skipped.extend(more)
    actions = drop_covered(actions)
    actions.sort(key=lambda a: (a.step, a.path))
    return Plan(tuple(actions), tuple(skipped), tuple(s.finding for s in skipped), followed=tuple(inventory.followed))


def _repository_actions(name: str, inventory: Inventory, whole: Mapping[str, str], why: str) -> list[Action]:
    """The whole directory; or, when a nested repository inside it stays, only its own parts."""
    stays_inside = any(other.startswith(name + "/") and other not in whole for other in inventory.repositories)
    directory = layout.RepositoryDir(name)
    if not stays_inside:
        return [Action(Kind.MOVE, directory, Id.REPO_EMPTY, repository=name, reason=why)]
    return [
        Action(Kind.MOVE, layout.RepositoryPart(name, part), Id.REPO_EMPTY, repository=name, resolves=directory,
               reason=why)
        for part in inventory.repositories[name].parts
    ]


def _safe(actions: Iterable[Action], audit: Audit, inventory: Inventory, removal: Removal) -> tuple[list[Action], list[Skipped]]:
    """What a partial view or unparsed manifests make unsafe stays, as repair leaves it."""
    not_followed = frozenset(oddity.path for oddity in inventory.unknown)
    kept, skipped = [], []
    for action in actions:
        if layout.at_or_under(action.path, not_followed):
            reason = "a symbolic link or special file is in its place, not followed"
        elif not audit.complete and not BY_ID[action.finding].safe_when_incomplete:
            reason = ("part of the tree could not be read or followed (see dir-unreadable and unexpected): "
                      "what refers to it is unknown")
        elif audit.uncertain and action.finding is Id.BLOB_ORPHAN and not removal.force:
            reason = ("some manifests could not be parsed: what they reference is unknown "
                      "(--force removes it anyway, trusting the other manifests)")
        else:
            kept.append(action)
            continue
        skipped.append(Skipped(_finding(action), reason))
    return kept, skipped


def _finding(action: Action) -> Finding:
    return Finding(action.finding, action.location, action.reason or RM, repository=action.repository,
                   tag=action.tag, digest=action.digest, bytes=action.bytes)


# What the command line names: `repo`, `repo:tag`, `repo@sha256:...`; exact names, or anchored globs.


class RefError(ValueError):
    """A malformed REF: one line saying what is wrong with it."""


@dataclass(frozen=True, slots=True)
class Ref:
    text: str
    repository: Matcher
    tag: Matcher | None = None
    digest: Digest | None = None




def parse_ref(text: str, glob: bool = False) -> Ref:
    name, at, digest_text = text.partition("@")
    tag = None
    if not at:
        colon = name.rfind(":")
        if colon >= 0:
            name, tag = name[:colon], name[colon + 1:]
    try:
        repository = match.repository_matcher(_checked_name(text, name, glob), glob)
        if at:
            digest = layout.parse_digest(digest_text)
            if digest is None:
                raise RefError(f"{text!r}: {digest_text!r} is not a digest (sha256:<64 hex>; digests are never patterns)")
            return Ref(text, repository, digest=digest)
        if tag is None:
            return Ref(text, repository)
        return Ref(text, repository, match.tag_matcher(_checked_tag(text, tag, glob), glob))
    except match.PatternError as error:
        raise RefError(f"{text!r}: {error}") from None


def _checked_name(text: str, name: str, glob: bool) -> str:
    components = name.split("/")
    if glob:
        valid = match.is_repository_pattern(name)
    else:
        valid = all(layout.valid_repository_component(c) for c in components)
    if not valid:
        hint = " (give --glob for patterns)" if not glob and match.is_glob(name) else ""
        raise RefError(f"{text!r}: {name!r} is not a repository name{hint}")
    return name


def _checked_tag(text: str, tag: str, glob: bool) -> str:
    if not (match.is_tag_pattern(tag) if glob else layout.valid_tag(tag)):
        hint = " (give --glob for patterns)" if not glob and match.is_glob(tag) else ""
        raise RefError(f"{text!r}: {tag!r} is not a tag{hint}")
    return tag


def resolve(
    refs: Iterable[Ref], inventory: Inventory, *, recursive: bool = False, untag_only: bool = False,
    force: bool = False, reason: str = RM,
) -> tuple[Removal, list[str]]:
    """What the REFs name in the tree: tags, manifests, whole repositories (with `recursive`, the repositories
    nested in them too); and for each REF that names nothing, one line saying so."""
    repositories = inventory.repositories
    names = sorted(repositories)
    tags: dict[tuple[str, str], str] = {}
    manifests: dict[tuple[str, Digest], str] = {}
    whole: dict[str, str] = {}
    unmatched: list[str] = []
    for ref in refs:
        matched = match.matching(ref.repository, names)
        if not matched:
            unmatched.append(f"{ref.text}: no repository {'matches' if ref.repository.glob else 'is named'} "
                             f"{ref.repository.text!r}")
            continue
        if ref.tag is not None:
            found = [(n, t) for n in matched for t in sorted(repositories[n].tags) if ref.tag.matches(t)]
            what = f"no tag {'matches' if ref.tag.glob else 'is named'} {ref.tag.text!r} in {', '.join(matched[:3])}"
            for key in found:
                tags.setdefault(key, reason)
        elif ref.digest is not None:
            found = [(n, ref.digest) for n in matched if ref.digest in repositories[n].named_manifests()]
            what = f"no manifest {layout.format_digest(ref.digest)} in {', '.join(matched[:3])}"
            for key in found:
                manifests.setdefault(key, reason)
        else:
            found = matched
            what = ""
            for name in matched:
                whole.setdefault(name, reason)
                if recursive:
                    for nested in names:
                        if nested.startswith(name + "/"):
                            whole.setdefault(nested, reason)
        if not found:
            unmatched.append(f"{ref.text}: {what}{' ...' if len(matched) > 3 else ''}")
    return Removal(tags, manifests, whole, untag_only, force), unmatched
