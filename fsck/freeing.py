"""What removing roots frees: the one computation `du`'s `frees_on_rm` and `rm` share. Pure: no storage.

A removal is a change of roots (issue 12's ruling): the roots before keep every tag, every manifest
already untagged (a pull by digest of an old manifest never breaks), `--protect` and what broken
tags and damaged links may need; the roots after are the same less what is removed. What it frees
is what the roots before reach and the roots after do not: `freed(graph, before, after)`.

Reach is per repository (a repository's roots keep only its own manifests; what they reference is
shared), so what removing whole repositories frees can be read off, for all of them at once, from
the repositories using each blob under the roots before: `freed_by_each`, `freed_by_all`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet

from .checks import Audit
from .layout import Digest
from .reach import Graph, Reach, Roots, damaged_link_roots, reach
from .scan import Inventory

Users = Mapping[Digest, tuple[str, ...]]  # stored blob -> the repositories whose roots keep it, sorted


def audit_roots(audit: Audit, inventory: Inventory) -> Roots:
    """What the audit keeps live: its roots (tags, what broken tags name, every revision of a repository
    not read whole) and what damaged links may name."""
    return audit.roots(inventory).plus(damaged_link_roots(inventory))


def untagged_roots(inventory: Inventory, live: Reach) -> Roots:
    """The manifests already untagged: every revision the live roots do not reach."""
    untagged = {
        name: frozenset(repository.revisions - live.live.get(name, frozenset()))
        for name, repository in inventory.repositories.items()
    }
    return Roots({name: digests for name, digests in untagged.items() if digests})


def keeping_roots(audit: Audit, inventory: Inventory, live: Reach | None = None) -> Roots:
    """The roots before any removal: the audit's, plus the manifests already untagged (a removal frees
    what it makes unreachable, never the garbage that was already there). `live`: the reach of
    `audit_roots`, when at hand. Add `--protect`'s roots to these, and to the roots after."""
    roots = audit_roots(audit, inventory)
    if live is None:
        assert audit.graph is not None, "a released audit has no graph"
        live = reach(audit.graph, roots)
    return roots.plus(untagged_roots(inventory, live))


def without(roots: Roots, repositories: AbstractSet[str]) -> Roots:
    """The roots less every root of these repositories (their manifests and the blobs they hold)."""
    return Roots(
        {name: digests for name, digests in roots.manifests.items() if name not in repositories},
        {name: digests for name, digests in roots.blobs.items() if name not in repositories},
        roots.anywhere,
    )


def freed(graph: Graph, before: Roots, after: Roots) -> frozenset[Digest]:
    """The stored blobs (manifest data, configs, layers) the roots before reach and the roots after do not:
    what a removal that changes `before` into `after` frees."""
    kept = reach(graph, after).blobs
    return frozenset(d for d in reach(graph, before).blobs if d not in kept and d in graph.blobs)


def users(reached: Reach) -> dict[Digest, tuple[str, ...]]:
    """For each stored blob the roots reach, the repositories that keep it: those whose kept manifests are
    or reference it (`Reach.users`), and those whose roots hold it as it is (damaged links)."""
    stored = reached.graph.blobs
    using = {d: names for d, names in reached.users().items() if d in stored}
    for name, held in reached.held.items():
        for digest in held:
            if digest in stored:
                names = using.get(digest, ())
                if name not in names:
                    using[digest] = tuple(sorted((*names, name)))
    return using


def freed_by_each(users_before: Users, anywhere: AbstractSet[Digest] = frozenset()) -> dict[str, set[Digest]]:
    """For each repository, what removing it alone frees: the blobs it is the only user of under the roots
    before (`users(reach(graph, before))`). One pass, whatever the number of repositories.
    `anywhere`: the roots' blobs kept wherever they are (`--protect` digests), never freed."""
    each: dict[str, set[Digest]] = {}
    for digest, names in users_before.items():
        if len(names) == 1 and digest not in anywhere:
            each.setdefault(names[0], set()).add(digest)
    return each


def freed_by_all(
    users_before: Users, removed: Callable[[str], bool], anywhere: AbstractSet[Digest] = frozenset()
) -> set[Digest]:
    """What removing every repository `removed` says yes to frees: the blobs all of whose users go."""
    return {d for d, names in users_before.items() if d not in anywhere and all(removed(n) for n in names)}


def bytes_of(graph: Graph, digests: Iterable[Digest]) -> int:
    blobs = graph.blobs
    return sum(blobs[d] for d in digests)
