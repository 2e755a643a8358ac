"""Reachability over an inventory, and the findings it leads to. Pure: no file system.

A manifest is live in its repository when a tag's current link names it, a live
list/index names it (recursively), or its `subject` names a live manifest. A tag whose
current link is broken keeps every manifest its index names: it may still need them.
A repository that could not be read whole keeps all its manifests.

Blob verdicts follow the registry's garbage collector where it is right:
`blob-orphan` is exactly what its mark phase leaves unmarked (every revision link whose
data exists marks the manifest and its config, layers and children), and
`blob-unreachable` is what only manifests that are not live still reference.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from . import layout
from .findings import Finding
from .layout import Digest
from .manifests import InvalidManifest, Manifest, Role
from .scan import Inventory, LinkKind, Repository

DEFAULT_UPLOAD_AGE = timedelta(hours=168)  # the registry's own upload purger
QUIET_PERIOD = timedelta(minutes=15)  # an upload younger than this suggests the registry is serving


@dataclass(frozen=True, slots=True)
class Totals:
    repositories: int
    tags: int
    manifests: int
    blobs: int
    blob_bytes: int


@dataclass(frozen=True, slots=True)
class Audit:
    findings: tuple[Finding, ...]
    totals: Totals
    complete: bool  # False: part of the tree was unreadable or not followed; verdicts may be wrong
    recent_uploads: int  # uploads started within the quiet period: the registry may be live
    # Why blob verdicts may be wrong although everything was read: manifests whose references are unknown.
    uncertain: tuple[str, ...] = ()
    referenced: frozenset[Digest] = frozenset()  # blobs some manifest names as config, layer or child

    @property
    def blob_verdicts_safe(self) -> bool:
        return self.complete and not self.uncertain


@dataclass(frozen=True, slots=True)
class Policy:
    """How to judge. The defaults are the audit's; repair narrows what counts as garbage."""

    now: datetime
    upload_age: timedelta = DEFAULT_UPLOAD_AGE
    quiet_period: timedelta = QUIET_PERIOD
    keep_untagged: bool = False  # untagged manifests stay, so what they reference is not garbage
    pinned: frozenset[Digest] = frozenset()  # manifests and blobs kept wherever they are
    pinned_in: frozenset[tuple[str, Digest]] = frozenset()  # (repository, manifest) kept


def analyze(
    inventory: Inventory,
    manifests: Mapping[Digest, Manifest | InvalidManifest],
    policy: Policy,
    corrupt_blobs: frozenset[Digest] = frozenset(),
) -> Audit:
    state = _State(
        inventory.blobs, manifests, protected=set(policy.pinned),
        not_seen=frozenset(o.path for o in (*inventory.unknown, *inventory.unreadable)),
    )
    _damaged_blobs(state, corrupt_blobs)
    recent_uploads = 0
    empty_repositories: list[str] = []
    for repository in inventory.repositories.values():
        recent_uploads += _repository(state, repository, policy, empty_repositories)
    _blob_verdicts(state)
    _leftovers(state, inventory, empty_repositories)
    totals = Totals(
        repositories=len(inventory.repositories),
        tags=sum(len(r.tags) for r in inventory.repositories.values()),
        manifests=sum(len(r.revisions) for r in inventory.repositories.values()),
        blobs=len(inventory.blobs),
        blob_bytes=sum(inventory.blobs.values()),
    )
    findings = sorted(state.findings, key=Finding.sort_key)
    unreadable = any(isinstance(m, InvalidManifest) and m.unreadable for m in manifests.values())
    unparsed = sum(isinstance(m, InvalidManifest) and not m.unreadable for m in manifests.values())
    uncertain = (f"{unparsed} manifest(s) could not be parsed: what they reference is unknown",) if unparsed else ()
    return Audit(
        tuple(findings), totals, inventory.complete and not unreadable, recent_uploads, uncertain,
        frozenset(state.referenced),
    )


@dataclass(slots=True)
class _State:
    blobs: Mapping[Digest, int]
    manifests: Mapping[Digest, Manifest | InvalidManifest]
    findings: list[Finding] = field(default_factory=list)
    marked: set[Digest] = field(default_factory=set)  # the registry GC's mark set
    referenced: set[Digest] = field(default_factory=set)  # named as config, layer or child by a manifest
    kept: set[Digest] = field(default_factory=set)  # referenced by live or protected manifests
    protected: set[Digest] = field(default_factory=set)  # named by damaged links: never judged garbage
    blob_damage: set[Digest] = field(default_factory=set)  # blobs already given a damage finding
    # Paths not read or not followed (symbolic links the registry would follow): what is there is unknown.
    not_seen: frozenset[str] = frozenset()

    def unseen(self, path: str) -> bool:
        """Whether `path`, or a directory above it, could not be read or was not followed."""
        return layout.at_or_under(path, self.not_seen)

    def manifest(self, digest: Digest) -> Manifest | None:
        parsed = self.manifests.get(digest)
        return parsed if isinstance(parsed, Manifest) else None

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)

    def damage_blob(self, finding: Finding) -> None:
        assert finding.digest is not None
        if finding.digest not in self.blob_damage:
            self.blob_damage.add(finding.digest)
            self.add(finding)


def _repository(state: _State, repo: Repository, policy: Policy, empty_repositories: list[str]) -> int:
    name = repo.name
    blobs = state.blobs
    named_by_current = {tag.current for tag in repo.tags.values() if tag.current is not None}

    for digest in repo.revisions:
        if digest in blobs:
            state.marked.add(digest)
            manifest = state.manifest(digest)
            if manifest is not None:
                state.marked.update(r.digest for r in manifest.references)
                state.referenced.update(r.digest for r in manifest.references)

    referrers = _referrers(state, repo)
    protected = _bad_links(state, repo, referrers) | repo.aliases
    state.protected |= repo.aliases
    unknown_references = {
        d for d in repo.named_manifests() if isinstance(state.manifests.get(d), InvalidManifest)
    }
    roots = _roots(repo)
    live = _closure(state, repo, roots, referrers)
    extra_roots = {d for d in repo.revisions if d in policy.pinned or (name, d) in policy.pinned_in}
    if policy.keep_untagged or any(state.manifests[d].unreadable for d in unknown_references):
        extra_roots |= repo.revisions
    kept = _closure(state, repo, roots | extra_roots, referrers) if extra_roots else live
    reported: set[tuple[str, Digest]] = set()
    for digest in live:
        manifest = state.manifest(digest) if digest in blobs else None
        if manifest is not None:
            _check_live_manifest(state, repo, digest, manifest, reported)
    kept_references: set[Digest] = set()
    for digest in kept:
        state.kept.add(digest)
        manifest = state.manifest(digest) if digest in blobs else None
        if manifest is not None:
            kept_references.update(r.digest for r in manifest.references)
    state.kept.update(kept_references)

    _tags(state, repo)
    for digest in repo.revisions:
        if digest not in blobs:
            # A live one is manifest-missing-ref; one a tag names, tag-broken.
            if digest not in named_by_current and digest not in live and not state.unseen(layout.blob_data(digest)):
                state.add(Finding(
                    "revision-dangling", layout.revision_dir(name, digest),
                    "revision link to manifest data that is not stored", name, digest=digest,
                ))
        elif digest in unknown_references:
            invalid = state.manifests[digest]
            finding_id = "dir-unreadable" if invalid.unreadable else "manifest-invalid"
            state.damage_blob(Finding(
                finding_id, layout.blob_dir(digest), f"manifest data is {invalid.reason}", name, digest=digest,
            ))
        if digest in blobs and digest not in kept:
            state.add(Finding(
                "manifest-untagged", layout.revision_dir(name, digest),
                "no tag, live index or live subject reaches this manifest", name, digest=digest,
            ))

    recent = 0
    fresh_uploads = 0
    for upload in repo.uploads:
        started = upload.started_at or upload.modified_at
        age = policy.now - started
        if age < policy.quiet_period:
            recent += 1
        if age >= policy.upload_age:
            since = "started" if upload.started_at else "no valid startedat; last modified"
            state.add(Finding(
                "upload-stale", layout.upload_dir(name, upload.upload_id),
                f"unfinished upload, {since} {started:%Y-%m-%d %H:%M} UTC", name, bytes=upload.size,
            ))
        else:
            fresh_uploads += 1

    is_empty = (
        repo.fully_read and not repo.tags and not repo.revisions and not fresh_uploads and not repo.bad_links
    )
    if is_empty:
        empty_repositories.append(layout.repository_dir(name))
        state.add(Finding(
            "repo-empty", layout.repository_dir(name),
            "no tags and no manifests; still listed by /v2/_catalog", name,
        ))
    else:
        if not repo.has_layers_dir and repo.has_manifests_dir:
            state.add(Finding(
                "repo-invisible", layout.repository_dir(name),
                "no _layers directory: registry 2.8 does not list this repository and its "
                "garbage-collect would delete all its blobs", name,
            ))
        for digest in repo.layer_links - kept_references - protected:
            if not repo.fully_read or unknown_references:
                break  # what the unread or unparsed manifests use is unknown
            if digest in blobs:
                state.add(Finding(
                    "layer-link-unused", layout.layer_link_dir(name, digest),
                    "no live manifest of this repository references this blob", name, digest=digest,
                ))
            else:
                state.add(Finding(
                    "layer-link-dangling", layout.layer_link_dir(name, digest),
                    "links a blob that is not stored", name, digest=digest,
                ))
    return recent


def tags_using(
    inventory: Inventory, manifests: Mapping[Digest, Manifest | InvalidManifest], digests: set[Digest]
) -> list[str]:
    """`repo:tag` of every tag whose image (index children included) is or references one of `digests`."""
    state = _State(inventory.blobs, manifests)
    using = []
    for repo in inventory.repositories.values():
        referrers = _referrers(state, repo)
        for tag in repo.tags.values():
            if tag.current is None:
                continue
            for digest in _closure(state, repo, {tag.current}, referrers):
                manifest = state.manifest(digest)
                referenced = {r.digest for r in manifest.references} if manifest is not None else set()
                if digest in digests or referenced & digests:
                    using.append(f"{repo.name}:{tag.name}")
                    break
    return sorted(using)


def _roots(repo: Repository) -> set[Digest]:
    roots: set[Digest] = set()
    for tag in repo.tags.values():
        if tag.current is not None:
            roots.add(tag.current)
        else:
            roots.update(tag.index)  # a broken tag keeps what it may still need
    if not repo.fully_read:
        roots.update(repo.revisions)
    return roots


Referrers = dict[Digest, list[Digest]]


def _referrers(state: _State, repo: Repository) -> Referrers:
    """subject -> the repository's manifests that name it."""
    referrers: Referrers = defaultdict(list)
    for digest in repo.revisions:
        manifest = state.manifest(digest) if digest in state.blobs else None
        if manifest is not None and manifest.subject is not None:
            referrers[manifest.subject].append(digest)
    return referrers


def _closure(state: _State, repo: Repository, roots: set[Digest], referrers: Referrers) -> set[Digest]:
    """The roots and every manifest they keep: index children, recursively, and referrers of kept subjects."""
    live: set[Digest] = set()
    pending = list(roots)
    while pending:
        digest = pending.pop()
        if digest in live:
            continue
        live.add(digest)
        pending.extend(referrers.get(digest, ()))
        manifest = state.manifest(digest) if digest in state.blobs else None
        if manifest is not None:
            pending.extend(c.digest for c in manifest.children() if c.digest in repo.revisions)
    return live


def _check_live_manifest(
    state: _State, repo: Repository, digest: Digest, manifest: Manifest, reported: set[tuple[str, Digest]]
) -> None:
    """Damage that breaks a pull of a live manifest; `reported` keeps one finding per repository and blob."""
    name = repo.name
    blobs = state.blobs
    shown = layout.format_digest(digest)

    def add_once(finding: Finding) -> None:
        key = (finding.id, finding.digest)
        if key not in reported:
            reported.add(key)
            state.add(finding)

    for reference in manifest.references:
        if reference.foreign:
            continue  # non-distributable layers are fetched from their urls, not stored
        if reference.role is Role.CHILD:
            is_manifest = reference.names_manifest or reference.digest in repo.revisions
            present = reference.digest in blobs and (reference.digest in repo.revisions or not reference.names_manifest)
            if not present and not (
                state.unseen(layout.revision_link(name, reference.digest))
                or state.unseen(layout.blob_data(reference.digest))
            ):
                path = layout.revision_dir(name, reference.digest) if is_manifest else layout.blob_dir(reference.digest)
                add_once(Finding(
                    "manifest-missing-ref", path,
                    f"child of live manifest {shown} is not stored in this repository", name,
                    digest=reference.digest,
                ))
            continue
        if reference.digest not in blobs:
            if state.unseen(layout.blob_data(reference.digest)):
                continue
            add_once(Finding(
                "manifest-missing-ref", layout.blob_dir(reference.digest),
                f"{reference.role.value} of live manifest {shown} is not stored", name, digest=reference.digest,
            ))
            continue
        if reference.digest not in repo.layer_links and not state.unseen(layout.layer_link(name, reference.digest)):
            add_once(Finding(
                "layer-link-missing", layout.layer_link_dir(name, reference.digest),
                f"{reference.role.value} of live manifest {shown} is stored but not linked: pulls fail",
                name, digest=reference.digest,
            ))
        if reference.size is not None and blobs[reference.digest] != reference.size:
            state.damage_blob(Finding(
                "blob-size-mismatch", layout.blob_dir(reference.digest),
                f"{blobs[reference.digest]} bytes stored, manifest {shown} says {reference.size}",
                name, digest=reference.digest,
            ))


def _bad_links(state: _State, repo: Repository, referrers: Referrers) -> set[Digest]:
    """Damaged links are reported; what they may name, and all it references, is never judged garbage."""
    protected: set[Digest] = set()
    for bad in repo.bad_links:
        where = f"{bad.kind} link" + (f" of tag {bad.tag}" if bad.tag else "")
        named = bad.may_name
        protected |= named
        if bad.kind != LinkKind.LAYER:
            for digest in _closure(state, repo, named, referrers):
                protected.add(digest)
                manifest = state.manifest(digest) if digest in state.blobs else None
                if manifest is not None:
                    protected.update(r.digest for r in manifest.references)
        if bad.content.digest is not None:
            state.add(Finding(
                "link-mismatch", bad.path,
                f"{where} holds {layout.format_digest(bad.content.digest)}, its path names another digest",
                repo.name, bad.tag, bad.path_digest,
            ))
        else:
            state.add(Finding(
                "link-invalid", bad.path, f"{where}: {bad.content.defect.value}", repo.name, bad.tag, bad.path_digest,
            ))
    state.protected |= protected
    return protected


def _tags(state: _State, repo: Repository) -> None:
    name = repo.name
    for tag in repo.tags.values():
        path = layout.tag_dir(name, tag.name)
        current = tag.current
        if current is None:
            if state.unseen(layout.tag_current_link(name, tag.name)):
                continue  # the registry follows what is there; reported as not followed
            why = "current link is invalid" if tag.has_current_file else "current link is missing"
            state.add(Finding("tag-broken", path, f"{why}: the tag cannot be pulled", name, tag.name))
            continue
        if current not in repo.revisions:
            unseen = state.unseen(layout.revision_link(name, current))
            problem = None if unseen else "has no revision link in this repository"
        elif current not in state.blobs:
            problem = None if state.unseen(layout.blob_data(current)) else "has no manifest data"
        elif isinstance(state.manifests.get(current), InvalidManifest):
            problem = "has invalid manifest data"
        else:
            problem = None
        if problem:
            state.add(Finding(
                "tag-broken", path, f"names {layout.format_digest(current)}, which {problem}", name, tag.name,
                current,
            ))
        for entry in tag.index - {current}:
            stale = entry in repo.revisions
            state.add(Finding(
                "tag-index-stale" if stale else "tag-index-dangling",
                layout.tag_index_dir(name, tag.name, entry),
                "an earlier target of the tag" if stale else "an earlier target whose revision is gone",
                name, tag.name, entry,
            ))


def _damaged_blobs(state: _State, corrupt_blobs: frozenset[Digest]) -> None:
    """Damage to the bytes themselves: found first, so it takes precedence over what follows from it."""
    for digest in corrupt_blobs:
        state.damage_blob(Finding(
            "blob-digest-mismatch", layout.blob_dir(digest), "content does not hash to its digest", digest=digest,
        ))
    for digest, size in state.blobs.items():
        if size == 0 and digest != layout.EMPTY_BLOB and digest not in state.manifests:  # manifests: manifest-invalid
            state.damage_blob(Finding(
                "blob-empty", layout.blob_dir(digest), "0 bytes stored for non-empty content", digest=digest,
            ))


def _blob_verdicts(state: _State) -> None:
    for digest, size in state.blobs.items():
        path = layout.blob_dir(digest)
        if digest in state.blob_damage or digest in state.kept or digest in state.protected:
            continue
        elif digest not in state.marked:
            state.add(Finding("blob-orphan", path, "no manifest references this blob", digest=digest, bytes=size))
        else:
            state.add(Finding(
                "blob-unreachable", path, "referenced only by manifests that are not live", digest=digest, bytes=size,
            ))


def _leftovers(state: _State, inventory: Inventory, empty_repositories: list[str]) -> None:
    covered = tuple(path + "/" for path in empty_repositories)
    for path in inventory.empty_dirs:
        if not (path + "/").startswith(covered):
            state.add(Finding("dir-empty", path, "empty directory"))
    for leftover in inventory.leftovers:
        state.add(Finding("tmp-leftover", leftover.path, "left by an interrupted write", bytes=leftover.size))
    for oddity in inventory.oddities:
        state.add(Finding("unexpected", oddity.path, oddity.reason))
    for unreadable in inventory.unreadable:
        state.add(Finding("dir-unreadable", unreadable.path, f"cannot read: {unreadable.reason}"))
    already = {oddity.path for oddity in inventory.oddities}
    for unknown in inventory.unknown:
        if unknown.path not in already:
            state.add(Finding("dir-unreadable", unknown.path, f"cannot judge: {unknown.reason}"))
