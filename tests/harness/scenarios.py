"""Registry scenarios built through the real registry, with the facts a checker must find.

Each `build_*` function pushes into a running `Registry` and returns a frozen
`Scenario`. Every digest in it comes from what the registry answered
(`Docker-Content-Digest`, manifests as served), never from a table.
`build_all` builds every topic in one registry: the "demo" tree.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

from . import images
from .images import Blob, Image, Index, Platform, cosign_tag, make_artifact, make_image, make_index, make_layer
from .registry import Registry, age_uploads


@dataclass(frozen=True, slots=True)
class ManifestFacts:
    digest: str
    media_type: str
    config: str | None  # None for schema1 and indexes
    layers: tuple[str, ...]  # schema1: the distinct fsLayers blobSums
    children: tuple[str, ...]  # index / manifest list entries
    subject: str | None = None
    artifact_type: str | None = None

    @property
    def references(self) -> tuple[str, ...]:
        """What `garbage-collect` marks for this manifest (2.8 ignores `subject`)."""
        return (*((self.config,) if self.config else ()), *self.layers, *self.children)

    @property
    def blob_references(self) -> tuple[str, ...]:
        """Config and layers: what a push links under `_layers`."""
        return (*((self.config,) if self.config else ()), *self.layers)


Digests = frozenset[str]


@dataclass(frozen=True, slots=True)
class Scenario:
    """Expected facts about a tree. Mappings are keyed by repository name.

    - `repos`: directories that are repositories (hold `_layers` or `_manifests`).
    - `tags`: tag -> digest its `current/link` names.
    - `tag_history`: tag -> every digest in its `index/`, in push order.
    - `revisions`: manifests with a live revision link.
    - `deleted`: manifests deleted through the API (empty revision dir left behind).
    - `untagged`: live revisions that no tag names, that no live index in the repo
      lists and that are not referrers: what a correct "delete untagged" removes.
    - `index_children`: manifests listed by a live index / manifest list.
    - `referrers`: live manifests whose `subject` names a live manifest in the repo.
    - `empty_repos`: repositories with no live revision.
    - `layer_links`: blobs the repository's `_layers` links name.
    - `manifests`: digest -> what it references, for every manifest ever stored.
    - `blobs`: every blob under `blobs/`.
    - `orphan_blobs`: blobs uploaded that no manifest ever named.
    - `unreferenced_blobs`: blobs no live revision reaches: what garbage-collect sweeps.
    - `shared_layers`: layer -> repositories whose live manifests use it (two or more).
    - `uploads` / `stale_uploads`: number of unfinished (of them, aged) uploads per
      repository directory (which may hold nothing but `_uploads`).
    """

    name: str
    schema1: bool
    repos: Digests
    tags: Mapping[str, Mapping[str, str]]
    tag_history: Mapping[str, Mapping[str, tuple[str, ...]]]
    revisions: Mapping[str, Digests]
    deleted: Mapping[str, Digests]
    untagged: Mapping[str, Digests]
    index_children: Mapping[str, Digests]
    referrers: Mapping[str, Digests]
    empty_repos: Digests
    layer_links: Mapping[str, Digests]
    manifests: Mapping[str, ManifestFacts]
    blobs: Digests
    orphan_blobs: Digests
    unreferenced_blobs: Digests
    shared_layers: Mapping[str, Digests]
    uploads: Mapping[str, int]
    stale_uploads: Mapping[str, int]

    def tagged(self) -> Iterable[tuple[str, str, str]]:
        """(repo, tag, digest) for every tag, sorted."""
        for repo in sorted(self.tags):
            for tag, digest in sorted(self.tags[repo].items()):
                yield repo, tag, digest

    def all_uploads_stale(self) -> Scenario:
        return replace(self, stale_uploads=self.uploads)

    def to_json(self) -> dict:
        def plain(value: object) -> object:
            if isinstance(value, Mapping):
                return {k: plain(v) for k, v in sorted(value.items())}
            if isinstance(value, (frozenset, set)):
                return sorted(value)
            if isinstance(value, ManifestFacts):
                return {k: plain(getattr(value, k)) for k in value.__slots__}
            if isinstance(value, tuple):
                return list(value)
            return value

        return {k: plain(getattr(self, k)) for k in self.__slots__}


def _frozen_map(d: Mapping, convert: Callable = lambda v: v) -> Mapping:
    return MappingProxyType({k: convert(v) for k, v in sorted(d.items())})


@dataclass(slots=True)
class Recorder:
    """Pushes through a registry and keeps track of what the tree must then hold."""

    registry: Registry
    layouts: Path
    tags: dict[str, dict[str, str]] = field(default_factory=dict)
    history: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    revisions: dict[str, set[str]] = field(default_factory=dict)
    deleted: dict[str, set[str]] = field(default_factory=dict)
    links: dict[str, set[str]] = field(default_factory=dict)
    manifests: dict[str, ManifestFacts] = field(default_factory=dict)
    uploaded: set[str] = field(default_factory=set)
    uploads: dict[str, list[str]] = field(default_factory=dict)
    stale: dict[str, list[str]] = field(default_factory=dict)

    # -- actions -----------------------------------------------------------

    def push(self, item: Image | Index, repo: str, tag: str, fmt: str | None = None) -> str:
        """skopeo copy of `item` (all platforms of an index) to `repo:tag`; returns its digest."""
        layout = images.write_layout(self.layouts / item.digest.split(":")[1], {"img": item})
        self.registry.push(layout, "img", repo, tag, fmt=fmt, all=isinstance(item, Index))
        digest = self._observe(repo, tag)
        self._link(repo, digest)
        return digest

    def upload_blob(self, repo: str, data: bytes) -> str:
        digest = self.registry.upload_blob(repo, data)
        self.uploaded.add(digest)
        self.links.setdefault(repo, set()).add(digest)
        return digest

    def upload_blobs(self, repo: str, blobs: Iterable[Blob]) -> None:
        for blob in blobs:
            self.upload_blob(repo, blob.data)

    def put_manifest(self, repo: str, ref: str, manifest: Blob) -> str:
        self.registry.put_manifest(repo, ref, manifest.data, manifest.media_type)
        return self._observe(repo, ref)

    def delete(self, repo: str, digest: str) -> None:
        self.registry.delete_manifest(repo, digest)
        self.revisions[repo].discard(digest)
        self.deleted.setdefault(repo, set()).add(digest)
        # The registry drops every tag whose `current` names it, index and all.
        for tag in [t for t, d in self.tags.get(repo, {}).items() if d == digest]:
            del self.tags[repo][tag]
            del self.history[repo][tag]

    def start_upload(self, repo: str, stale: bool = False) -> str:
        upload_id = self.registry.start_upload(repo)
        self.uploads.setdefault(repo, []).append(upload_id)
        if stale:
            age_uploads(self.registry.root, only=[upload_id])
            self.stale.setdefault(repo, []).append(upload_id)
        return upload_id

    # -- bookkeeping -------------------------------------------------------

    def _observe(self, repo: str, ref: str) -> str:
        """Record the manifest `ref` names (and index children) as the registry serves it."""
        served = self.registry.get_manifest(repo, ref)
        facts = _facts(served.digest, served.media_type, served.json())
        self.manifests[facts.digest] = facts
        self.revisions.setdefault(repo, set()).add(facts.digest)
        for child in facts.children:
            self._observe(repo, child)
        if not ref.startswith("sha256:"):
            self.tags.setdefault(repo, {})[ref] = facts.digest
            entries = self.history.setdefault(repo, {}).setdefault(ref, [])
            if facts.digest not in entries:
                entries.append(facts.digest)
        return facts.digest

    def _link(self, repo: str, digest: str) -> None:
        facts = self.manifests[digest]
        self.links.setdefault(repo, set()).update(facts.blob_references)
        for child in facts.children:
            self._link(repo, child)

    def freeze(self, name: str) -> Scenario:
        repos = set(self.links) | set(self.revisions)
        live = {repo: frozenset(self.revisions.get(repo, ())) for repo in sorted(repos)}
        children = {repo: _children(self.manifests, digests) for repo, digests in live.items()}
        referrers = {
            repo: frozenset(d for d in digests if self.manifests[d].subject in digests) for repo, digests in live.items()
        }
        tagged = {repo: frozenset(self.tags.get(repo, {}).values()) for repo in repos}
        untagged = {repo: digests - tagged[repo] - children[repo] - referrers[repo] for repo, digests in live.items()}
        named = {ref for facts in self.manifests.values() for ref in facts.references}
        blobs = self.uploaded | set(self.manifests) | named
        marked = {m for digests in live.values() for m in digests} | {
            ref for digests in live.values() for m in digests for ref in self.manifests[m].references
        }
        return Scenario(
            name=name,
            schema1=self.registry.schema1,
            repos=frozenset(repos),
            tags=_frozen_map(self.tags, _frozen_map),
            tag_history=_frozen_map(self.history, lambda tags: _frozen_map(tags, tuple)),
            revisions=_frozen_map(live),
            deleted=_frozen_map(self.deleted, frozenset),
            untagged=_frozen_map(untagged),
            index_children=_frozen_map(children),
            referrers=_frozen_map(referrers),
            empty_repos=frozenset(repo for repo, digests in live.items() if not digests),
            layer_links=_frozen_map(self.links, frozenset),
            manifests=_frozen_map(self.manifests),
            blobs=frozenset(blobs),
            orphan_blobs=frozenset(self.uploaded - named - set(self.manifests)),
            unreferenced_blobs=frozenset(blobs - marked),
            shared_layers=_shared_layers(self.manifests, live),
            uploads=_frozen_map(self.uploads, len),
            stale_uploads=_frozen_map(self.stale, len),
        )


def _facts(digest: str, media_type: str, body: dict) -> ManifestFacts:
    if "manifests" in body:
        return ManifestFacts(digest, media_type, None, (), tuple(m["digest"] for m in body["manifests"]))
    if "fsLayers" in body:
        layers = tuple(dict.fromkeys(layer["blobSum"] for layer in body["fsLayers"]))
        return ManifestFacts(digest, media_type, None, layers, ())
    return ManifestFacts(
        digest,
        media_type,
        body["config"]["digest"],
        tuple(layer["digest"] for layer in body.get("layers", ())),
        (),
        (body.get("subject") or {}).get("digest"),
        body.get("artifactType"),
    )


def _children(manifests: Mapping[str, ManifestFacts], live: frozenset[str]) -> frozenset[str]:
    return frozenset(child for digest in live for child in manifests[digest].children)


def _shared_layers(manifests: Mapping[str, ManifestFacts], live: Mapping[str, frozenset[str]]) -> Mapping:
    users: dict[str, set[str]] = {}
    for repo, digests in live.items():
        for digest in digests:
            for layer in manifests[digest].layers:
                users.setdefault(layer, set()).add(repo)
    return _frozen_map({layer: frozenset(repos) for layer, repos in users.items() if len(repos) > 1})


# -- topics --------------------------------------------------------------------
# Each topic works in its own repositories, so build_all can run them all in one tree.


def plain_tags(rec: Recorder, seed: int) -> None:
    v1 = make_image(f"{seed}/plain/app/v1")
    v2 = make_image(f"{seed}/plain/app/v2", layers=3)
    rec.push(v1, "plain/app", "v1")
    rec.push(v2, "plain/app", "v2")
    rec.push(v2, "plain/app", "latest")
    rec.push(make_image(f"{seed}/org/team/app"), "org/team/app", "latest")
    # `a/b` is a repository and holds the repository `a/b/c` among its directories.
    rec.push(make_image(f"{seed}/a/b", layers=1), "a/b", "1.0")
    rec.push(make_image(f"{seed}/a/b/c", layers=1), "a/b/c", "1.0")


def repushed_tag(rec: Recorder, seed: int) -> None:
    """`latest` pushed three times; the first image keeps another tag, the second none."""
    pushes = [make_image(f"{seed}/repush/{i}", layers=1) for i in range(3)]
    rec.push(pushes[0], "repush/app", "stable")
    for image in pushes:
        rec.push(image, "repush/app", "latest")


def multiarch(rec: Recorder, seed: int) -> None:
    index = make_index(
        f"{seed}/multi", (Platform("linux", "amd64"), Platform("linux", "arm64", "v8"), Platform("linux", "s390x"))
    )
    rec.push(index, "multi/oci", "latest", fmt="oci")
    rec.push(index, "multi/docker", "latest", fmt="v2s2")


def deleted_manifests(rec: Recorder, seed: int) -> None:
    first, second, old = (make_image(f"{seed}/deleted/app/{i}", layers=1) for i in range(3))
    first_digest = rec.push(first, "deleted/app", "v1")
    rec.push(second, "deleted/app", "v1")
    old_digest = rec.push(old, "deleted/app", "old")
    rec.delete("deleted/app", first_digest)  # untagged, yet still listed in v1's tag index
    rec.delete("deleted/app", old_digest)  # tagged: the registry drops the tag `old`
    emptied = [rec.push(make_image(f"{seed}/deleted/empty/{tag}", layers=1), "deleted/empty", tag) for tag in ("v1", "v2")]
    for digest in emptied:
        rec.delete("deleted/empty", digest)


def shared_layers(rec: Recorder, seed: int) -> None:
    base = make_layer(f"{seed}/shared/base", size=3072)
    for name in ("one", "two", "three"):
        rec.push(make_image(f"{seed}/shared/{name}", layers=1, shared=(base,)), f"shared/{name}", "latest")


def by_digest(rec: Recorder, seed: int) -> None:
    """A manifest PUT by digest into a new repository: revisions, no `_manifests/tags`."""
    image = make_image(f"{seed}/bydigest", layers=2)
    rec.upload_blobs("bydigest/app", (image.config, *(layer.blob for layer in image.layers)))
    rec.put_manifest("bydigest/app", image.digest, image.manifest)


def signatures(rec: Recorder, seed: int) -> None:
    """A cosign-style signature tag and an OCI referrer (by digest, untagged) of one image."""
    repo = "signed/app"
    signed = rec.push(make_image(f"{seed}/signed/app", layers=1), repo, "v1")
    served = rec.registry.get_manifest(repo, signed)
    subject = Blob(served.media_type, served.body)

    config, layer, signature = make_artifact(f"{seed}/signed/sig")
    rec.upload_blobs(repo, (config, layer))
    rec.put_manifest(repo, cosign_tag(signed), signature)

    config, layer, sbom = make_artifact(
        f"{seed}/signed/sbom", artifact_type="application/spdx+json", subject=subject, layer_media_type="application/spdx+json"
    )
    rec.upload_blobs(repo, (config, layer))
    rec.put_manifest(repo, sbom.digest, sbom)


def orphans(rec: Recorder, seed: int) -> None:
    """Blobs uploaded and never referenced; one in a repository with no manifests at all."""
    rec.push(make_image(f"{seed}/orphan/app", layers=1), "orphan/app", "v1")
    rec.upload_blob("orphan/app", make_layer(f"{seed}/orphan/app/lost").blob.data)
    rec.upload_blob("orphan/blobonly", make_layer(f"{seed}/orphan/blobonly/lost").blob.data)


def uploads(rec: Recorder, seed: int) -> None:
    """Unfinished uploads: a fresh one, a stale one, and one in a directory with nothing else."""
    rec.push(make_image(f"{seed}/uploads/app", layers=1), "uploads/app", "v1")
    rec.start_upload("uploads/app")
    rec.start_upload("uploads/app", stale=True)
    rec.start_upload("uploads/pending")


def schema1(rec: Recorder, seed: int) -> None:
    """Docker schema1 (signed on GET by the registry); needs `Registry(schema1=True)`."""
    if not rec.registry.schema1:
        raise ValueError("schema1 pushes need a registry with compatibility.schema1.enabled")
    rec.push(make_image(f"{seed}/schema1/app", layers=2), "schema1/app", "v1", fmt="v2s1")


TOPICS: dict[str, Callable[[Recorder, int], None]] = {
    "plain_tags": plain_tags,
    "repushed_tag": repushed_tag,
    "multiarch": multiarch,
    "deleted_manifests": deleted_manifests,
    "shared_layers": shared_layers,
    "by_digest": by_digest,
    "signatures": signatures,
    "orphans": orphans,
    "uploads": uploads,
    "schema1": schema1,
}


def build(registry: Registry, *topics: str, seed: int = 0, name: str | None = None) -> Scenario:
    """Run the named topics, in order, against `registry`."""
    with tempfile.TemporaryDirectory(dir=registry.workdir, prefix="layouts-") as layouts:
        rec = Recorder(registry, Path(layouts))
        for topic in topics:
            TOPICS[topic](rec, seed)
        return rec.freeze(name or "+".join(topics))


def build_all(registry: Registry, seed: int = 0) -> Scenario:
    """Every topic in one tree (schema1 too when the registry accepts it): the demo."""
    topics = [t for t in TOPICS if t != "schema1" or registry.schema1]
    return build(registry, *topics, seed=seed, name="demo")


def build_plain_tags(registry: Registry, seed: int = 0) -> Scenario:
    return build(registry, "plain_tags", seed=seed)


def build_repushed_tag(registry: Registry, seed: int = 0) -> Scenario:
    return build(registry, "repushed_tag", seed=seed)


def build_multiarch(registry: Registry, seed: int = 0) -> Scenario:
    return build(registry, "multiarch", seed=seed)


def build_deleted(registry: Registry, seed: int = 0) -> Scenario:
    return build(registry, "deleted_manifests", seed=seed)


def build_shared_layers(registry: Registry, seed: int = 0) -> Scenario:
    return build(registry, "shared_layers", seed=seed)


def build_by_digest(registry: Registry, seed: int = 0) -> Scenario:
    return build(registry, "by_digest", seed=seed)


def build_signatures(registry: Registry, seed: int = 0) -> Scenario:
    return build(registry, "signatures", seed=seed)


def build_orphans(registry: Registry, seed: int = 0) -> Scenario:
    return build(registry, "orphans", seed=seed)


def build_uploads(registry: Registry, seed: int = 0) -> Scenario:
    return build(registry, "uploads", seed=seed)


def build_schema1(registry: Registry, seed: int = 0) -> Scenario:
    return build(registry, "schema1", seed=seed)


def dump(scenario: Scenario, path: Path) -> None:
    path.write_text(json.dumps(scenario.to_json(), indent=1, sort_keys=True) + "\n")
