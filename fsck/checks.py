"""The checks: findings from the inventory and what the roots reach. Pure: no storage.

A manifest is live in its repository when the audit's roots reach it (see `reach`): tags,
what a broken tag may still need, every revision of a repository that could not be read
whole. Damage is looked for in what is live; garbage verdicts read what is kept: the live
manifests, plus every revision of a repository some of whose manifests could not be read,
plus what damaged links may name (never judged garbage).

Blob verdicts follow the registry's garbage collector where it is right:
`blob-orphan` is exactly what its mark phase leaves unmarked (every revision link whose
data exists marks the manifest and its config, layers and children), and
`blob-unreachable` is what only manifests that are not live still reference.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from itertools import chain, compress
from operator import attrgetter

from . import aside, layout
from .catalogue import Finding, Id
from .layout import Digest
from .manifests import MANIFEST_MEDIA_TYPES, InvalidManifest, Manifest, Role
from .reach import (
    Graph,
    Reach,
    Roots,
    build_graph,
    damaged_link_roots,
    reach,
    referenced_among,
    revision_roots,
    tag_roots,
    tags_using_each,
)
from .scan import Inventory, Oddity, Repository
from .spool import FindingLog

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
class RecentUpload:
    """An upload started within the quiet period: the registry may be serving."""

    repository: str
    upload_id: str
    started: datetime  # its startedat, or its directory's last change
    dated: bool  # False: startedat missing or not a time
    quiet_from: datetime  # when it stops counting as recent

    @property
    def path(self) -> str:
        return layout.upload_dir(self.repository, self.upload_id)


@dataclass(frozen=True, slots=True)
class UntaggedOnly:
    """The layer-link-unused paths that only --untagged frees, as a set of paths: held per repository
    as a list of digests (the inventory's own objects), not as one path string per link; a lookup
    table is built at the first question (the text report's, once the checks are done)."""

    by_repository: dict[str, list[Digest]]
    _lookup: dict[str, set[Digest]] = field(default_factory=dict, compare=False)

    def add(self, repository: str, digest: Digest) -> None:
        self.by_repository.setdefault(repository, []).append(digest)

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, str) or f"/{layout.LAYERS}/" not in path:
            return False
        location = layout.locate(path)
        if not isinstance(location, layout.LayerLink) or location.repository not in self.by_repository:
            return False
        found = self._lookup.get(location.repository)
        if found is None:
            found = self._lookup[location.repository] = set(self.by_repository[location.repository])
        return location.digest in found

    def __iter__(self) -> Iterator[str]:
        for name, digests in self.by_repository.items():
            for digest in digests:
                yield layout.layer_link_dir(name, digest)

    def __len__(self) -> int:
        return sum(len(digests) for digests in self.by_repository.values())

    def __bool__(self) -> bool:
        return bool(self.by_repository)


_NONE: frozenset[Digest] = frozenset()


@dataclass(frozen=True, slots=True)
class Audit:
    findings: FindingLog  # in report order; or any iterable of findings a caller builds
    totals: Totals
    complete: bool  # False: part of the tree was unreadable or not followed; verdicts may be wrong
    # Why blob verdicts may be wrong although everything was read: manifests whose references are unknown.
    uncertain: tuple[str, ...]
    graph: Graph | None  # None once released: a plan needs it, a report does not
    unread: tuple[str, ...]  # repositories some of whose manifests could not be read: they keep every revision
    protected: Reach | None  # what damaged links may name: kept whatever the roots
    not_seen: frozenset[str]  # paths not read or not followed: what is there is unknown
    # manifest-invalid blobs that other manifests use as content: the link naming them is wrong, not the blob
    used_as_content: frozenset[Digest] = frozenset()
    ignored: Mapping[Id, int] | None = None  # with --ignore: the findings left out, per id
    recent: tuple[RecentUpload, ...] = ()  # uploads started within the quiet period, newest first
    # Garbage blobs whose bytes belong to one repository: its manifests alone are or reference them.
    blob_owners: Mapping[Digest, str] = field(default_factory=dict)
    # layer-link-unused whose blob an untagged manifest of the repository references: only --untagged frees it
    untagged_only: AbstractSet[str] = frozenset()

    @property
    def recent_uploads(self) -> int:
        """How many uploads started within the quiet period: the registry may be live."""
        return len(self.recent)

    def released(self) -> Audit:
        """Without what only a plan reads (the graph holds every manifest and blob size): a command
        that only reports lets it go before the report is built."""
        return replace(self, graph=None, protected=None)

    def roots(self, inventory: Inventory) -> Roots:
        """The roots the verdicts kept: a plan adds its own to these."""
        roots = tag_roots(inventory)
        return roots.plus(revision_roots(inventory, self.unread)) if self.unread else roots

    @property
    def blob_verdicts_safe(self) -> bool:
        return self.complete and not self.uncertain

    def unseen(self, path: str) -> bool:
        """Whether `path`, or a directory above it, could not be read or was not followed."""
        return layout.at_or_under(path, self.not_seen)


def ignore(audit: Audit, ids: frozenset[Id]) -> Audit:
    """Leave these ids out of the findings (and so the exit code), counting what was left out
    (git fsck's message configuration)."""
    kept = FindingLog.of(audit.findings).without(ids)
    return replace(audit, findings=kept, ignored=kept.ignored)


@dataclass(frozen=True, slots=True)
class Policy:
    now: datetime
    upload_age: timedelta = DEFAULT_UPLOAD_AGE
    quiet_period: timedelta = QUIET_PERIOD


def audit(
    inventory: Inventory,
    manifests: Mapping[Digest, Manifest | InvalidManifest],
    policy: Policy,
    corrupt_blobs: frozenset[Digest] = frozenset(),
    unverified: tuple[Oddity, ...] = (),
    processes: int = 1,
) -> Audit:
    """`corrupt_blobs` and `unverified` (blobs that could not be read) come from --verify. With two
    `processes`, a forked child checks the repositories while this one judges the blobs."""
    graph = build_graph(inventory, manifests)
    unread_paths = (*inventory.unreadable, *unverified)
    roots = tag_roots(inventory)
    live = reach(graph, roots)
    # Per repository (only those with any): the manifests it names whose data is invalid or unreadable.
    unknown = {
        name: invalid
        for name, repository in inventory.repositories.items()
        if (invalid := {d for d in repository.named_manifests() if isinstance(manifests.get(d), InvalidManifest)})
    }
    # What unreadable manifest data references is unknown: their repositories keep every revision.
    unread = [name for name, digests in unknown.items() if any(manifests[d].unreadable for d in digests)]
    kept_roots = roots.plus(revision_roots(inventory, unread)) if unread else roots
    kept = reach(graph, kept_roots) if unread else live
    protected = reach(graph, damaged_link_roots(inventory))
    state = _State(
        graph, live, kept, protected,
        not_seen=frozenset(o.path for o in (*inventory.unknown, *unread_paths)),
    )
    _damaged_blobs(state, corrupt_blobs)
    del roots, kept_roots
    judged = None
    if processes > 1 and len(inventory.repositories) >= _ASIDE_FROM:
        judged = _repositories_aside(state, inventory, policy, unknown)
    if judged is None:
        recent, empty_repositories = _repositories(state, inventory, policy, unknown)
        verdicts = None
    else:
        recent, empty_repositories, verdicts = judged
    _leftovers(state, inventory, unread_paths, empty_repositories)
    if verdicts is not None:
        state.findings.absorb(*verdicts.export())
    else:
        _judge_blobs(state, inventory)
    _name_users(state, inventory)
    totals = Totals(
        repositories=len(inventory.repositories),
        tags=sum(len(r.tags) for r in inventory.repositories.values()),
        manifests=sum(len(r.revisions) for r in inventory.repositories.values()),
        blobs=len(inventory.blobs),
        blob_bytes=sum(inventory.blobs.values()),
    )
    invalid = {f.digest for f in state.damage if f.id is Id.MANIFEST_INVALID}
    used_as_content = referenced_among(graph, invalid)
    for finding in state.damage:
        state.findings.add(finding)
    findings, state.damage = state.findings, []
    unreadable = any(isinstance(m, InvalidManifest) and m.unreadable for m in manifests.values())
    unparsed = sum(isinstance(m, InvalidManifest) and not m.unreadable for m in manifests.values())
    uncertain = (f"{unparsed} manifest(s) could not be parsed: what they reference is unknown",) if unparsed else ()
    return Audit(
        findings, totals, inventory.complete and not unverified and not unreadable, uncertain,
        graph, tuple(unread), protected, state.not_seen, frozenset(used_as_content),
        recent=tuple(sorted(recent, key=lambda r: r.started, reverse=True)),
        untagged_only=state.untagged_only,
    )


@dataclass(slots=True)
class _State:
    graph: Graph
    live: Reach  # what damage is looked for in
    kept: Reach  # what garbage verdicts spare
    protected: Reach  # what damaged links may name
    # Findings go to the log as they are made (it spills past a bound); damage to blobs waits in `damage`
    # until the tags using each blob are known, which its message names.
    findings: FindingLog = field(default_factory=FindingLog)
    damage: list[Finding] = field(default_factory=list)
    blob_damage: set[Digest] = field(default_factory=set)  # blobs already given a damage finding
    # Paths not read or not followed (symbolic links the registry would follow): what is there is unknown.
    not_seen: frozenset[str] = frozenset()
    untagged_only: UntaggedOnly = field(default_factory=lambda: UntaggedOnly({}))  # layer-link-unused only --untagged frees

    @property
    def blobs(self) -> Mapping[Digest, int]:
        return self.graph.blobs

    def unseen(self, path: str) -> bool:
        return layout.at_or_under(path, self.not_seen)

    def add(self, finding: Finding) -> None:
        if finding.id in _BLOB_DAMAGE:
            self.damage.append(finding)
        else:
            self.findings.add(finding)

    def damage_blob(self, finding: Finding) -> None:
        assert finding.digest is not None
        if finding.digest not in self.blob_damage:
            self.blob_damage.add(finding.digest)
            self.add(finding)


# Repositories from which a child process checking them pays for its start (fork, copied pages, the
# findings handed back: some tens of ms; each repository takes about 0.4 ms).
_ASIDE_FROM = 256
_TAKEN_HELD = 1024  # findings of the repositories this process takes, held as objects before a spill


def _repositories(
    state: _State, inventory: Inventory, policy: Policy, unknown: Mapping[str, set[Digest]],
    names: Iterable[str] | None = None,
) -> tuple[list[RecentUpload], list[str]]:
    """Every repository's checks (or those `names`, in the order given): the uploads still in their
    quiet period, and the empty repositories."""
    recent: list[RecentUpload] = []
    empty_repositories: list[str] = []
    # Repositories, tags and digests are visited in the report's order: the log then reads each id's
    # findings back one run after the other, with no merge.
    for name in sorted(inventory.repositories) if names is None else names:
        repository = inventory.repositories[name]
        recent += _repository(state, repository, policy, unknown.get(name, _NONE), empty_repositories)
    return recent, empty_repositories


@dataclass(slots=True)
class _Taken:
    """What this process found in the shares of repositories it took from the child's back."""

    findings: FindingLog
    damage: list[Finding]
    blob_damage: set[Digest]
    untagged_only: UntaggedOnly
    shares: dict[int, tuple[list[RecentUpload], list[str]]] = field(default_factory=dict)


def _repositories_aside(
    state: _State, inventory: Inventory, policy: Policy, unknown: Mapping[str, set[Digest]]
) -> tuple[list[RecentUpload], list[str], FindingLog | None] | None:
    """`_repositories` in a forked child while this process judges the blobs, as it would after them
    (that judgement is `None`, to be made again, where the repositories found damage to blobs that it
    spares), then takes shares of the repositories from the back while the child goes on from the front;
    None, and nothing changed, when no child could do it."""
    spared = frozenset(state.blob_damage)
    names = sorted(inventory.repositories)
    size = -(-len(names) // aside.Shares.LIMIT)
    shares = [names[start : start + size] for start in range(0, len(names), size)]

    def checked() -> tuple[tuple, list]:
        state.findings = FindingLog()  # what this process held stays its own
        recent, empty_repositories = _repositories(
            state, inventory, policy, unknown, (name for index in claims.from_front() for name in shares[index])
        )
        exported, files = state.findings.export()
        tallies = _Tallies.of(exported.by_repository, names)
        untagged = _UntaggedSent.of(state.untagged_only, inventory.repositories, names)
        kept = (replace(exported, by_repository={}), tallies, state.damage, state.blob_damage, untagged, recent, empty_repositories)
        return kept, files

    before = (state.findings, state.damage, state.blob_damage, state.untagged_only)
    verdicts = FindingLog()
    # Held beside the blob verdicts' log while both fill: spilled sooner, so as not to hold two logs' worth.
    taken = _Taken(FindingLog(memory_bound=_TAKEN_HELD), [], set(spared), UntaggedOnly({}))
    try:
        with aside.Shares(len(shares)) as claims, aside.Aside(checked) as child:
            state.findings = verdicts
            _judge_blobs(state, inventory)
            state.findings, state.damage, state.blob_damage, state.untagged_only = (
                taken.findings, taken.damage, taken.blob_damage, taken.untagged_only
            )
            for index in claims.from_back():
                taken.shares[index] = _repositories(state, inventory, policy, unknown, shares[index])
            (exported, tallies, damage, blob_damage, sent, recent, empty_repositories), files = child.result()
    except aside.Failed:
        verdicts.close()
        taken.findings.close()
        return None
    finally:
        state.findings, state.damage, state.blob_damage, state.untagged_only = before
    findings = state.findings
    findings.absorb(replace(exported, by_repository=tallies.named(names)), files)
    del tallies
    untagged = sent.received(inventory.repositories, names)
    del sent
    state.damage, state.blob_damage, state.untagged_only = damage, blob_damage, UntaggedOnly(untagged)
    mine = sorted(taken.shares)
    if taken.blob_damage != spared:
        # Damage to a blob goes to the first repository that finds it: this process's shares come after
        # the child's, and are checked again after them, in order.
        taken.findings.close()
        recent_here, empty_here = _repositories(
            state, inventory, policy, unknown, (name for index in mine for name in shares[index])
        )
        recent += recent_here
        empty_repositories += empty_here
    else:
        findings.absorb(*taken.findings.export())
        state.damage += taken.damage
        for name, digests in taken.untagged_only.by_repository.items():
            untagged[name] = digests
        state.untagged_only = UntaggedOnly(dict(sorted(untagged.items())))
        for index in mine:
            recent += taken.shares[index][0]
            empty_repositories += taken.shares[index][1]
    if state.blob_damage != spared:
        verdicts.close()
        verdicts = None
    return recent, empty_repositories, verdicts


def _place(names: list[str], name: str) -> int:
    """Where `name` is among the sorted repository names; -1 when it is not one of them."""
    at = bisect_left(names, name)
    return at if at < len(names) and names[at] == name else -1


@dataclass(frozen=True, slots=True)
class _Tallies:
    """A log's findings and reclaimable bytes per repository, as the child sends them back: each
    repository by its place in the sorted names, its two numbers in an array, not a name, a list and
    two ints (on a 1M-file tree, 9,900 repositories: the parent would hold new copies of their names);
    a name not among the repositories (the log may tally any) goes as it is."""

    places: array  # 'I', ascending
    numbers: array  # 'q': findings, bytes, for each place
    others: dict[str, list[int]]

    @classmethod
    def of(cls, by_repository: Mapping[str, list[int]], names: list[str]) -> _Tallies:
        places, numbers, others = array("I"), array("q"), {}
        for name, tally in by_repository.items():
            at = _place(names, name)
            if at >= 0:
                places.append(at)
                numbers.extend(tally)
            else:
                others[name] = tally
        return cls(places, numbers, others)

    def named(self, names: list[str]) -> dict[str, tuple[int, int]]:
        """The tallies by the parent's own name objects."""
        numbers = self.numbers
        named = {names[place]: (numbers[2 * at], numbers[2 * at + 1]) for at, place in enumerate(self.places)}
        named.update((name, (tally[0], tally[1])) for name, tally in self.others.items())
        return named


@dataclass(frozen=True, slots=True)
class _UntaggedSent:
    """The child's untagged-only layer links, as it sends them back: each repository by its place in the
    sorted names, each link by its place in the order the repository's links iterate (the same order in
    the parent, whose own objects they then name), all in three arrays: 4 bytes a link, not a digest
    (pickled 35 bytes, unpickled 80), nor an array and a name a repository."""

    repositories: array  # "I": places in the sorted names
    counts: array  # "I": how many links each
    links: array  # "I": places among its layer links, one repository after the other

    @classmethod
    def of(cls, untagged: UntaggedOnly, repositories: Mapping[str, Repository], names: list[str]) -> _UntaggedSent:
        sent = cls(array("I"), array("I"), array("I"))
        for name, digests in untagged.by_repository.items():
            at = _place(names, name)
            assert at >= 0  # the child checks the inventory's repositories only
            where = {digest: place for place, digest in enumerate(repositories[name].layer_links)}
            sent.repositories.append(at)
            sent.counts.append(len(digests))
            sent.links.extend(where[digest] for digest in digests)
        return sent

    def received(self, repositories: Mapping[str, Repository], names: list[str]) -> dict[str, list[Digest]]:
        """By the parent's own names and digest objects, as in one process."""
        untagged: dict[str, list[Digest]] = {}
        start = 0
        for place, count in zip(self.repositories, self.counts, strict=True):
            name = names[place]
            in_order = tuple(repositories[name].layer_links)
            untagged[name] = [in_order[at] for at in self.links[start : start + count]]
            start += count
        return untagged


def _judge_blobs(state: _State, inventory: Inventory) -> None:
    """Blobs nothing keeps, each with the repositories using it."""
    _add_blob_verdicts(state, _garbage(state, inventory))


def _repository(
    state: _State, repo: Repository, policy: Policy, unknown_references: set[Digest], empty_repositories: list[str]
) -> list[RecentUpload]:
    name = repo.name
    blobs = state.blobs
    named_by_current = {tag.current for tag in repo.tags.values() if tag.current is not None}
    _bad_links(state, repo)
    protected = _protected_in(state.protected, name)
    live = state.live.live.get(name, set())
    kept = state.kept.live.get(name, set())
    reported: set[tuple[str, Digest]] = set()
    for digest in live:
        manifest = state.graph.manifest(digest)
        if manifest is not None:
            _check_live_manifest(state, repo, digest, manifest, reported)
    kept_references = state.kept.references_of(name)

    _tags(state, repo)
    for digest in repo.revisions:
        stored = digest in blobs
        if not stored:
            # A live one is manifest-missing-ref; one a tag names, tag-broken.
            if digest not in named_by_current and digest not in live and not state.unseen(layout.blob_data(digest)):
                state.add(Finding(
                    Id.REVISION_DANGLING, layout.Revision(name, digest),
                    "revision link to manifest data that is not stored", name, digest=digest,
                ))
        elif digest in unknown_references:
            invalid = state.graph.manifests[digest]
            finding_id = Id.DIR_UNREADABLE if invalid.unreadable else Id.MANIFEST_INVALID
            state.damage_blob(Finding(
                finding_id, layout.Blob(digest), f"manifest data is {invalid.reason}", name, digest=digest,
            ))
        if stored and digest not in kept and digest not in protected:  # a damaged link may name it
            state.add(Finding(
                Id.MANIFEST_UNTAGGED, layout.Revision(name, digest),
                "no tag, live index or live subject reaches this manifest", name, digest=digest,
            ))

    recent = []
    fresh_uploads = 0
    for upload in repo.uploads:
        started = upload.started_at or upload.modified_at
        age = policy.now - started
        where = layout.UploadDir(name, upload.upload_id)
        if age < policy.quiet_period:
            recent.append(RecentUpload(
                name, upload.upload_id, started, upload.started_at is not None, started + policy.quiet_period,
            ))
        if age >= policy.upload_age:
            since = "started" if upload.started_at else "no valid startedat; last modified"
            state.add(Finding(
                Id.UPLOAD_STALE, where, f"unfinished upload, {since} {started:%Y-%m-%d %H:%M} UTC", name,
                bytes=upload.size,
            ))
        else:
            fresh_uploads += 1
            if upload.started_at is None:
                state.add(Finding(
                    Id.UPLOAD_UNDATED, where,
                    f"no valid startedat; last modified {started:%Y-%m-%d %H:%M} UTC: upload-stale from "
                    f"{started + policy.upload_age:%Y-%m-%d %H:%M} UTC (--upload-age)", name,
                ))

    is_empty = (
        repo.fully_read and not repo.tags and not repo.revisions and not fresh_uploads and not repo.bad_links
    )
    if is_empty:
        empty_repositories.append(layout.repository_dir(name))
        state.add(Finding(
            Id.REPO_EMPTY, layout.RepositoryDir(name),
            "no tags and no manifests; still listed by /v2/_catalog", name,
        ))
    else:
        if not repo.has_layers_dir and repo.has_manifests_dir:
            state.add(Finding(
                Id.REPO_INVISIBLE, layout.RepositoryDir(name),
                "no _layers directory: registry 2.8 does not list this repository and its "
                "garbage-collect would delete all its blobs", name,
            ))
        unused = repo.layer_links - kept_references - protected
        # What its untagged manifests reference: the links a repair keeps unless --untagged.
        untagged_use = state.graph.references(repo.revisions - kept) if unused else set()
        for digest in sorted(unused):
            if not repo.fully_read or unknown_references:
                break  # what the unread or unparsed manifests use is unknown
            if digest in blobs:
                location = layout.LayerLink(name, digest)
                message = "no live manifest of this repository references this blob"
                if digest in untagged_use:
                    message += "; an untagged one does (freed with --untagged)"
                    state.untagged_only.add(name, digest)
                state.add(Finding(Id.LAYER_LINK_UNUSED, location, message, name, digest=digest))
            else:
                state.add(Finding(
                    Id.LAYER_LINK_DANGLING, layout.LayerLink(name, digest),
                    "links a blob that is not stored", name, digest=digest,
                ))
    return recent


def _protected_in(protected: Reach, name: str) -> set[Digest]:
    """What damaged links of the repository may name, with what that keeps."""
    if name not in protected.live and name not in protected.held:
        return set()
    return {*protected.live.get(name, ()), *protected.references_of(name), *protected.held.get(name, ())}


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

    for referenced, role, size, media_type, foreign in manifest.descriptors():
        if foreign:
            continue  # non-distributable layers are fetched from their urls, not stored
        if role is Role.CHILD:
            names_manifest = media_type in MANIFEST_MEDIA_TYPES
            is_manifest = names_manifest or referenced in repo.revisions
            present = referenced in blobs and (referenced in repo.revisions or not names_manifest)
            if not present and not (
                state.unseen(layout.revision_link(name, referenced)) or state.unseen(layout.blob_data(referenced))
            ):
                where = layout.Revision(name, referenced) if is_manifest else layout.Blob(referenced)
                add_once(Finding(
                    Id.MANIFEST_MISSING_REF, where,
                    f"child of live manifest {shown} is not stored in this repository", name, digest=referenced,
                ))
            continue
        stored = blobs.get(referenced)
        if stored is None:
            if state.unseen(layout.blob_data(referenced)):
                continue
            add_once(Finding(
                Id.MANIFEST_MISSING_REF, layout.Blob(referenced),
                f"{role.value} of live manifest {shown} is not stored", name, digest=referenced,
            ))
            continue
        if referenced not in repo.layer_links and not state.unseen(layout.layer_link(name, referenced)):
            add_once(Finding(
                Id.LAYER_LINK_MISSING, layout.LayerLink(name, referenced),
                f"{role.value} of live manifest {shown} is stored but not linked: pulls fail",
                name, digest=referenced,
            ))
        if size is not None and stored != size:
            state.damage_blob(Finding(
                Id.BLOB_SIZE_MISMATCH, layout.Blob(referenced),
                f"{stored} bytes stored, manifest {shown} says {size}", name, digest=referenced,
            ))


def _bad_links(state: _State, repo: Repository) -> None:
    """Damaged links are reported; what they may name is kept by `damaged_link_roots`."""
    for bad in repo.bad_links:
        where = f"{bad.kind} link" + (f" of tag {bad.tag}" if bad.tag else "")
        location = layout.locate(bad.path)
        if bad.content.digest is not None:
            state.add(Finding(
                Id.LINK_MISMATCH, location,
                f"{where} holds {layout.format_digest(bad.content.digest)}, its path names another digest",
                repo.name, bad.tag, bad.path_digest,
            ))
        else:
            state.add(Finding(
                Id.LINK_INVALID, location, f"{where}: {bad.content.defect.value}", repo.name, bad.tag, bad.path_digest,
            ))


def _tags(state: _State, repo: Repository) -> None:
    name = repo.name
    for tag in sorted(repo.tags.values(), key=attrgetter("name")):
        where = layout.TagDir(name, tag.name)
        current = tag.current
        if current is None:
            if state.unseen(layout.tag_current_link(name, tag.name)):
                continue  # the registry follows what is there; reported as not followed
            why = "current link is invalid" if tag.has_current_file else "current link is missing"
            state.add(Finding(Id.TAG_BROKEN, where, f"{why}: the tag cannot be pulled", name, tag.name))
            continue
        if current not in repo.revisions:
            unseen = state.unseen(layout.revision_link(name, current))
            problem = None if unseen else "has no revision link in this repository"
        elif current not in state.blobs:
            problem = None if state.unseen(layout.blob_data(current)) else "has no manifest data"
        elif isinstance(state.graph.manifests.get(current), InvalidManifest):
            problem = "has invalid manifest data"
        else:
            problem = None
        if problem:
            state.add(Finding(
                Id.TAG_BROKEN, where, f"names {layout.format_digest(current)}, which {problem}", name, tag.name,
                current,
            ))
        for entry in sorted(tag.index - {current}):
            stale = entry in repo.revisions
            state.add(Finding(
                Id.TAG_INDEX_STALE if stale else Id.TAG_INDEX_DANGLING,
                layout.TagIndexEntry(name, tag.name, entry),
                "an earlier target of the tag" if stale else "an earlier target whose revision is gone",
                name, tag.name, entry,
            ))


def _damaged_blobs(state: _State, corrupt_blobs: frozenset[Digest]) -> None:
    """Damage to the bytes themselves: found first, so it takes precedence over what follows from it."""
    for digest in corrupt_blobs:
        state.damage_blob(Finding(
            Id.BLOB_DIGEST_MISMATCH, layout.Blob(digest), "content does not hash to its digest", digest=digest,
        ))
    for digest, size in state.blobs.items():
        if size == 0 and digest != layout.EMPTY_BLOB and digest not in state.graph.manifests:  # manifests: manifest-invalid
            state.damage_blob(Finding(
                Id.BLOB_EMPTY, layout.Blob(digest), "0 bytes stored for non-empty content", digest=digest,
            ))


# A garbage blob's users: none (False), then one name (the repository's own str, as most have one user),
# then a set once a second comes.
GarbageUsers = bool | str | set[str]

_ORPHAN, _UNREACHABLE = 1, 2  # a garbage blob's verdict; 0: kept
_KEPT_TO_GARBAGE = bytes.maketrans(b"\x00\x01", b"\x01\x00")


@dataclass(frozen=True, slots=True)
class _Garbage:
    """The blobs nothing keeps, by their places among the stored blobs (ascending: in digest order), each
    with whether the registry's GC marks it (`_UNREACHABLE`) or not (`_ORPHAN`: no stored manifest
    references it), and the repositories using it: a byte per stored blob and an entry per garbage blob,
    not a dict keyed by digest (5 MiB for the 130k garbage blobs of a 1M-file tree)."""

    places: array  # "I": where each garbage blob is among the stored ones
    verdicts: bytearray  # per stored blob: 0 kept, else its verdict
    users: list[GarbageUsers]  # per garbage blob, as `places`

    def index(self, place: int) -> int:
        return bisect_left(self.places, place)


def _garbage(state: _State, inventory: Inventory) -> _Garbage:
    """The blobs nothing keeps, with whether the registry's GC marks each (every revision whose data is
    stored marks itself and what it references) and the repositories using each: for an unreachable blob,
    those whose stored manifests are or reference it; for an orphan, those whose _layers link it."""
    graph = state.graph
    stored = graph.blobs
    verdicts = state.kept.kept_marks().translate(_KEPT_TO_GARBAGE)  # 1 (an orphan, until marked) where not kept
    for at in stored.positions(chain(state.blob_damage, state.protected.blobs)):  # reported or protected, not garbage
        verdicts[at] = 0
    places = array("I", compress(range(len(verdicts)), verdicts))
    garbage = _Garbage(places, verdicts, [False] * len(places))
    if places:
        _mark_unreachable(graph, garbage)
        _link_orphans(graph, inventory, garbage)
    return garbage


def _mark_unreachable(graph: Graph, garbage: _Garbage) -> None:
    positions, digests, manifests = graph.blobs.positions, graph.blobs.digests, graph.manifests
    verdicts, users, index = garbage.verdicts, garbage.users, garbage.index
    for name, revisions in graph.revisions.items():
        for revision in positions(revisions):  # a revision whose data is stored: itself and what it references
            used = [revision]
            manifest = manifests.get(digests[revision])
            if isinstance(manifest, Manifest):
                used += positions(manifest.digests)
            for at in used:
                if not verdicts[at]:
                    continue
                verdicts[at] = _UNREACHABLE
                _use(users, index(at), name)


# Orphans up to this share of the stored blobs are found in a repository's links by a table of them;
# past it (a store that is mostly orphans), by each link's place, with no table as large as the garbage.
_ORPHAN_TABLE_SHARE = 16


def _link_orphans(graph: Graph, inventory: Inventory, garbage: _Garbage) -> None:
    verdicts, places = garbage.verdicts, garbage.places
    orphans = sum(1 for at in places if verdicts[at] == _ORPHAN)
    if not orphans:
        return
    users, index = garbage.users, garbage.index
    if orphans * _ORPHAN_TABLE_SHARE <= len(verdicts):
        digests = graph.blobs.digests
        table = {digests[at]: entry for entry, at in enumerate(places) if verdicts[at] == _ORPHAN}
        keys = table.keys()
        linked = ((name, [table[d] for d in repository.layer_links & keys]) for name, repository in inventory.repositories.items())
    else:
        positions = graph.blobs.positions
        linked = (
            (name, [index(at) for at in positions(repository.layer_links) if verdicts[at] == _ORPHAN])
            for name, repository in inventory.repositories.items()
        )
    for name, entries in linked:
        for entry in entries:
            _use(users, entry, name)


def _use(users: list[GarbageUsers], entry: int, name: str) -> None:
    named = users[entry]
    if named is False:
        users[entry] = name
    elif type(named) is str:
        if named != name:
            users[entry] = {named, name}
    else:
        named.add(name)  # type: ignore[union-attr]


def _add_blob_verdicts(state: _State, garbage: _Garbage) -> None:
    """Each with the repositories using it: named in an unreachable blob's message, and the owner of
    its bytes where there is one alone. Orphans first, then the unreachable, each in digest order."""
    stored = state.graph.blobs
    digests, sizes, verdicts = stored.digests, stored.sizes, garbage.verdicts
    for at, users in zip(garbage.places, garbage.users, strict=True):
        if verdicts[at] == _ORPHAN:
            digest = digests[at]
            state.add(Finding(
                Id.BLOB_ORPHAN, layout.Blob(digest), "no manifest references this blob", digest=digest,
                bytes=sizes[at], owner=_owner(users),
            ))
    for at, users in zip(garbage.places, garbage.users, strict=True):
        if verdicts[at] == _UNREACHABLE:
            digest = digests[at]
            message = "referenced only by manifests that are not live"
            if users is not False:
                message += f" (in {_some(sorted({users} if type(users) is str else users))})"  # type: ignore[arg-type]
            state.add(Finding(
                Id.BLOB_UNREACHABLE, layout.Blob(digest), message, digest=digest, bytes=sizes[at],
                owner=_owner(users),
            ))


def _owner(users: GarbageUsers) -> str | None:
    """The one repository using the blob; None when none does or several do (a set holds two or more)."""
    return users if type(users) is str else None  # type: ignore[return-value]


_BLOB_DAMAGE = frozenset({Id.BLOB_EMPTY, Id.BLOB_SIZE_MISMATCH, Id.BLOB_DIGEST_MISMATCH, Id.MANIFEST_INVALID})


def _some(names: list[str], shown: int = 3) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _name_users(state: _State, inventory: Inventory) -> None:
    """Say in each finding of damage to a blob the tags it breaks."""
    damaged = {f.digest for f in state.damage}
    tags = tags_using_each(state.graph, inventory, damaged) if damaged else {}
    state.damage = [
        replace(f, message=f"{f.message}; tags using it: {_some(tags[f.digest])}") if f.digest in tags else f
        for f in state.damage
    ]


def _repository_holding(path: str, repositories: Mapping[str, Repository]) -> str | None:
    """The repository whose directory holds `path` (the innermost, where repositories nest)."""
    parts = path.split("/")
    if parts[0] != layout.REPOSITORIES:
        return None
    for end in range(len(parts), 1, -1):
        name = "/".join(parts[1:end])
        if name in repositories:
            return name
    return None


def _leftovers(
    state: _State, inventory: Inventory, unread_paths: tuple[Oddity, ...], empty_repositories: list[str]
) -> None:
    covered = tuple(path + "/" for path in empty_repositories)

    def add(finding_id: Id, location: layout.Location, message: str, size: int = 0) -> None:
        holder = _repository_holding(location.path, inventory.repositories)
        state.add(Finding(finding_id, location, message, holder, bytes=size))

    for path in inventory.empty_dirs:
        if not (path + "/").startswith(covered):
            add(Id.DIR_EMPTY, layout.locate(path), "empty directory")
    for leftover in inventory.leftovers:
        add(Id.TMP_LEFTOVER, layout.Other(leftover.path), "left by an interrupted write", leftover.size)
    for oddity in inventory.oddities:
        add(Id.UNEXPECTED, layout.Other(oddity.path), oddity.reason)
    for unreadable in unread_paths:
        add(Id.DIR_UNREADABLE, layout.Other(unreadable.path), f"cannot read: {unreadable.reason}")
    already = {oddity.path for oddity in inventory.oddities}
    for unknown in inventory.unknown:
        if unknown.path not in already:
            add(Id.DIR_UNREADABLE, layout.Other(unknown.path), f"cannot judge: {unknown.reason}")
