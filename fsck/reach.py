"""Reachability: what a set of roots keeps alive. Pure: no storage.

The graph is built once per run from the inventory and the parsed manifests: per
repository its manifest revisions and who names each subject. `reach(graph, roots)` then
answers for any roots (restic's PlanPrune(getUsedBlobs), borg's used/wanted):

- per repository, the live manifests: the roots, the children of live lists/indexes
  (recursively, where the repository holds them) and the referrers whose `subject` is live;
- the blobs they keep: every live manifest and what it references as config, layer or child,
  across repositories, and the blobs the roots hold as they are.

Every command is a different set of roots: the audit's are the tags, `repair` without
--untagged adds every revision, --protect and --min-age add theirs; what removing
something frees is what the roots before reach and the roots after do not.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from .layout import Digest, Digests, StoredBlobs
from .manifests import InvalidManifest, Manifest
from .scan import Inventory, LinkKind, Repository

Referrers = Mapping[Digest, tuple[Digest, ...]]  # subject -> the repository's manifests that name it


@dataclass(frozen=True, slots=True)
class Graph:
    blobs: StoredBlobs  # digest -> stored size
    manifests: Mapping[Digest, Manifest | InvalidManifest]
    revisions: Mapping[str, AbstractSet[Digest]]  # per repository: its manifest revisions
    referrers: Mapping[str, Referrers]  # per repository

    def manifest(self, digest: Digest) -> Manifest | None:
        parsed = self.manifests.get(digest)
        return parsed if isinstance(parsed, Manifest) else None

    def references(self, digests: Iterable[Digest]) -> set[Digest]:
        """What these manifests reference as config, layer or child."""
        referenced: set[Digest] = set()
        manifests = self.manifests
        for digest in digests:
            manifest = manifests.get(digest)
            if isinstance(manifest, Manifest):
                referenced.update(manifest.digests)
        return referenced


@dataclass(frozen=True, slots=True)
class Marks:
    """What the registry's GC marks, as whole sets (the audit asks `marked_among` about its candidates
    instead: these sets are as large as the store)."""

    marked: AbstractSet[Digest]  # every stored revision and what it references
    referenced: AbstractSet[Digest]  # named as config, layer or child by some stored revision


def build_graph(inventory: Inventory, manifests: Mapping[Digest, Manifest | InvalidManifest]) -> Graph:
    blobs = inventory.blobs if isinstance(inventory.blobs, StoredBlobs) else StoredBlobs(inventory.blobs)
    referrers: dict[str, Referrers] = {}
    for repository in inventory.repositories.values():
        by_subject: dict[Digest, list[Digest]] = {}
        for digest in repository.revisions:
            if digest not in blobs:
                continue
            parsed = manifests.get(digest)
            if isinstance(parsed, Manifest) and parsed.subject is not None:
                by_subject.setdefault(parsed.subject, []).append(digest)
        if by_subject:  # most repositories have none: no empty table for each
            referrers[repository.name] = {subject: tuple(named) for subject, named in by_subject.items()}
    return Graph(blobs, manifests, {name: r.revisions for name, r in inventory.repositories.items()}, referrers)


def graph_and_marks(
    inventory: Inventory, manifests: Mapping[Digest, Manifest | InvalidManifest]
) -> tuple[Graph, Marks]:
    graph = build_graph(inventory, manifests)
    everything = set(graph.blobs)
    for manifest in manifests.values():
        if isinstance(manifest, Manifest):
            everything.update(manifest.digests)
    return graph, Marks(marked_among(graph, everything), referenced_among(graph, everything))


def marked_among(graph: Graph, candidates: AbstractSet[Digest]) -> set[Digest]:
    """Those of `candidates` the registry's GC marks: stored revisions, and what they reference as
    config, layer or child. One pass over the revisions; nothing as large as the store is built."""
    marks = dict.fromkeys(candidates, False)
    mark(graph, marks)
    return {digest for digest, marked in marks.items() if marked}


def mark(graph: Graph, marks: dict[Digest, bool]) -> None:
    """`marked_among` in place: each of `marks` the GC marks set to True (the rest left as they are),
    for candidates as many as a store's garbage, with no second table beside them."""
    blobs, manifests = graph.blobs, graph.manifests
    if not marks:
        return
    for revisions in graph.revisions.values():
        for digest in revisions:
            if digest not in blobs:
                continue
            if digest in marks:
                marks[digest] = True
            parsed = manifests.get(digest)
            if isinstance(parsed, Manifest):
                for referenced in parsed.digests:
                    if referenced in marks:
                        marks[referenced] = True


def referenced_among(graph: Graph, candidates: AbstractSet[Digest]) -> set[Digest]:
    """Those of `candidates` some stored revision names as config, layer or child."""
    blobs, manifests = graph.blobs, graph.manifests
    referenced: set[Digest] = set()
    if not candidates:
        return referenced
    for revisions in graph.revisions.values():
        for digest in revisions:
            parsed = manifests.get(digest) if digest in blobs else None
            if isinstance(parsed, Manifest):
                for named in parsed.digests:
                    if named in candidates:
                        referenced.add(named)
    return referenced


@dataclass(frozen=True, slots=True)
class Roots:
    """Per repository: manifests kept with everything they reach, and blobs kept as they are."""

    manifests: Mapping[str, AbstractSet[Digest]] = field(default_factory=dict)
    blobs: Mapping[str, AbstractSet[Digest]] = field(default_factory=dict)
    anywhere: AbstractSet[Digest] = frozenset()  # blobs kept whichever repository links them

    def plus(self, other: Roots) -> Roots:
        return Roots(
            _union(self.manifests, other.manifests), _union(self.blobs, other.blobs), self.anywhere | other.anywhere
        )


def _union(a: Mapping[str, AbstractSet[Digest]], b: Mapping[str, AbstractSet[Digest]]) -> dict[str, AbstractSet[Digest]]:
    merged = dict(a)
    for name, digests in b.items():
        merged[name] = merged[name] | digests if name in merged else digests
    return merged


@dataclass(frozen=True, slots=True)
class Reach:
    graph: Graph
    live: Mapping[str, AbstractSet[Digest]]  # per repository: the manifests the roots keep
    held: Mapping[str, AbstractSet[Digest]]  # per repository: blobs the roots keep as they are
    anywhere: AbstractSet[Digest] = frozenset()  # blobs kept whichever repository links them
    # Per repository, once asked: what its live manifests reference (the blobs its `_layers` must
    # link). Built on demand: held for every repository, these sets together are as large as the store.
    referenced_in: dict[str, AbstractSet[Digest]] = field(default_factory=dict, compare=False)
    kept: list[AbstractSet[Digest]] = field(default_factory=list, compare=False)  # `blobs`, once asked

    @property
    def blobs(self) -> AbstractSet[Digest]:
        """Every live manifest, what it references, and the held blobs: built at the first question, kept."""
        if not self.kept:
            self.kept.append(self.kept_blobs())
        return self.kept[0]

    def kept_marks(self) -> bytearray:
        """Which stored blobs the reach keeps (`kept_blobs`, those stored), a byte each by its place in
        the graph's blobs, 1 where kept: one byte a blob where the set spends 30 or more."""
        stored = self.graph.blobs
        marks = bytearray(len(stored))
        for live in self.live.values():
            stored.mark(live, marks)
            stored.mark(self.graph.references(live), marks)
        for held in self.held.values():
            stored.mark(held, marks)
        stored.mark(self.anywhere, marks)
        return marks

    def kept_blobs(self) -> set[Digest]:
        """The same, built afresh and not kept: for a caller that asks once (a set as large as the store's
        live part, let go as soon as it has answered)."""
        blobs: set[Digest] = set()
        for live in self.live.values():
            blobs.update(live)  # update, not |=: a set's |= takes only a set, and Digests' | would copy it all
            blobs |= self.graph.references(live)
        for held in self.held.values():
            blobs.update(held)
        blobs.update(self.anywhere)
        return blobs

    def referenced(self, repository: str) -> AbstractSet[Digest]:
        """What the repository's live manifests reference, kept for the next question."""
        found = self.referenced_in.get(repository)
        if found is None:
            found = self.referenced_in[repository] = self.references_of(repository)
        return found

    def references_of(self, repository: str) -> AbstractSet[Digest]:
        """The same, built afresh and not kept: for a caller that asks once per repository."""
        live = self.live.get(repository)
        return self.graph.references(live) if live is not None else frozenset()

    def keeps_manifest(self, repository: str, digest: Digest) -> bool:
        return digest in self.live.get(repository, ())

    def users(self) -> dict[Digest, tuple[str, ...]]:
        """For each kept blob, the repositories whose live manifests are or reference it."""
        using: dict[Digest, list[str]] = defaultdict(list)
        for name, live in self.live.items():
            for digest in {*live, *self.references_of(name)}:
                using[digest].append(name)
        return {digest: tuple(sorted(names)) for digest, names in using.items()}


def reach(graph: Graph, roots: Roots) -> Reach:
    # Held to the end of the run, for every repository: a tuple each, not a set.
    live = {name: Digests(closure(graph, name, manifests)) for name, manifests in roots.manifests.items()}
    return Reach(graph, live, roots.blobs, roots.anywhere)


def closure(graph: Graph, repository: str, roots: Iterable[Digest]) -> set[Digest]:
    """The roots and every manifest they keep: index children, recursively, and referrers of kept subjects."""
    revisions = graph.revisions.get(repository, frozenset())
    referrers = graph.referrers.get(repository, {})
    live: set[Digest] = set()
    pending = list(roots)
    while pending:
        digest = pending.pop()
        if digest in live:
            continue
        live.add(digest)
        pending.extend(referrers.get(digest, ()))
        manifest = graph.manifest(digest)
        if manifest is not None:
            pending.extend(child for child in manifest.child_digests() if child in revisions)
    return live


# The roots commands start from.


def tag_roots(inventory: Inventory) -> Roots:
    """The audit's: every tag's current target; a broken tag keeps what its index names (it may still
    need them); a repository that could not be read whole keeps all its revisions."""
    return Roots({name: _tag_roots(repository) for name, repository in inventory.repositories.items()})


def _tag_roots(repository: Repository) -> Digests:
    roots: set[Digest] = set()
    for tag in repository.tags.values():
        if tag.current is not None:
            roots.add(tag.current)
        else:
            roots.update(tag.index)
    if not repository.fully_read:
        roots.update(repository.revisions)
    return Digests(roots)  # one for every repository, held while the audit's sets are built: a tuple


def revision_roots(inventory: Inventory, repositories: Iterable[str] | None = None) -> Roots:
    """Every revision (of the repositories named, or of all): untagged manifests kept with what they use."""
    names = inventory.repositories if repositories is None else repositories
    return Roots({name: inventory.repositories[name].revisions for name in names})


def damaged_link_roots(inventory: Inventory) -> Roots:
    """What damaged links may have been meant to name, and legitimate aliases: never judged garbage."""
    manifests: dict[str, set[Digest]] = {}
    blobs: dict[str, set[Digest]] = {}
    for name, repository in inventory.repositories.items():
        named: set[Digest] = set()
        held = set(repository.aliases)
        for bad in repository.bad_links:
            held |= bad.may_name
            if bad.kind != LinkKind.LAYER:
                named |= bad.may_name
        if named:
            manifests[name] = named
        if held:
            blobs[name] = held
    return Roots(manifests, blobs)


def tags_using(graph: Graph, inventory: Inventory, digests: AbstractSet[Digest]) -> list[str]:
    """`repo:tag` of every tag whose image (index children included) is or references one of `digests`."""
    return sorted({tag for tags in tags_using_each(graph, inventory, digests).values() for tag in tags})


def tags_using_each(graph: Graph, inventory: Inventory, digests: AbstractSet[Digest]) -> dict[Digest, list[str]]:
    """For each of `digests` some tag's image is or references, those tags as `repo:tag`, sorted."""
    using: dict[Digest, set[str]] = defaultdict(set)
    if not digests:
        return {}
    for repository in inventory.repositories.values():
        for tag in repository.tags.values():
            if tag.current is None:
                continue
            for digest in closure(graph, repository.name, {tag.current}):
                manifest = graph.manifest(digest)
                used = {digest, *manifest.digests} if manifest is not None else {digest}
                for hit in used & digests:
                    using[hit].add(f"{repository.name}:{tag.name}")
    return {digest: sorted(tags) for digest, tags in using.items()}
