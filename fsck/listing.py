"""What the registry holds, as `ls` shows it: each repository with its counts and how registry 2.8's
/v2/_catalog sees it; a repository's tags, each with its image. Judges nothing (that is the audit's).

Reads the inventory and the graph. For one repository's tags it also reads what parsing keeps no
record of (platforms, `artifactType`, a config's media type) from the manifests it shows, and a
stat of each tag's `current` link for when it was last pushed: a handful of reads, never per blob.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum

import orjson

from . import layout
from .layout import Digest
from .manifests import DOCKER_SCHEMA1, Kind, Manifest, Reference
from .reach import Graph, closure, tag_roots
from .scan import Inventory, LinkKind, Repository
from .store import Store


class Catalog(str, Enum):
    """How registry 2.8 lists a repository: its catalog walks `repositories/` and lists every directory
    that holds `_layers` (registry/storage/catalog.go, handleRepository), nothing else."""

    LISTED = "listed"
    EMPTY = "empty"  # listed, yet nothing in it to pull: no tags, no manifests
    HIDDEN = "hidden"  # not listed: no `_layers` (only uploads, or manifests pushed without it)


@dataclass(frozen=True, slots=True)
class RepositoryRow:
    name: str
    tags: int
    manifests: int  # revision links
    uploads: int
    catalog: Catalog
    note: str | None  # why the catalog shows it wrongly or hides it


def catalog_of(repository: Repository) -> tuple[Catalog, str | None]:
    if not repository.has_layers_dir:
        if not repository.tags and not repository.revisions and repository.uploads:
            return Catalog.HIDDEN, "only unfinished uploads: /v2/_catalog does not list it"
        return Catalog.HIDDEN, "no _layers directory: /v2/_catalog does not list it"
    if not repository.tags and not repository.revisions:
        return Catalog.EMPTY, "no tags and no manifests, yet /v2/_catalog lists it"
    return Catalog.LISTED, None


def repository_row(repository: Repository) -> RepositoryRow:
    catalog, note = catalog_of(repository)
    return RepositoryRow(
        repository.name, len(repository.tags), len(repository.revisions), len(repository.uploads), catalog, note
    )


def repositories(inventory: Inventory) -> tuple[RepositoryRow, ...]:
    return tuple(repository_row(inventory.repositories[name]) for name in sorted(inventory.repositories))


# One repository's tags.


class TagKind(str, Enum):
    IMAGE = "image"
    INDEX = "index"  # a multi-arch image: an OCI index or a Docker manifest list
    ARTIFACT = "artifact"  # an OCI manifest that is no runnable image (artifactType, or a config of another type)
    SIGNATURE = "signature"
    ATTESTATION = "attestation"
    SBOM = "sbom"
    BROKEN = "broken"  # no manifest to show: see `problem`


@dataclass(frozen=True, slots=True)
class Platform:
    os: str | None
    architecture: str | None
    variant: str | None
    digest: Digest
    size: int | None  # config + layers; None when the child manifest is not stored or unreadable

    @property
    def name(self) -> str:
        parts = (self.os or "unknown", self.architecture or "unknown", *((self.variant,) if self.variant else ()))
        return "/".join(parts)


@dataclass(frozen=True, slots=True)
class Referrer:
    """Something about a tag's image: an OCI referrer (its `subject` names the image) or a cosign tag."""

    digest: Digest
    kind: TagKind
    artifact_type: str | None
    tag: str | None  # the cosign `sha256-<hex>.sig` style tag, or a tag that names the referrer


@dataclass(frozen=True, slots=True)
class TagRow:
    name: str
    digest: Digest | None  # None: the current link is missing or invalid
    kind: TagKind
    media_type: str | None
    artifact_type: str | None
    size: int | None  # config + layers (for an index, every platform's, each blob once)
    pushed: datetime | None  # the mtime of its current link
    platforms: tuple[Platform, ...]
    subject: Digest | None  # a referrer's subject, or the image a cosign tag belongs to
    referrers: tuple[Referrer, ...]
    problem: str | None  # why a pull of it fails (None: nothing seen)


@dataclass(frozen=True, slots=True)
class RepositoryListing:
    repository: RepositoryRow
    tags: tuple[TagRow, ...]
    untagged: int  # revisions no tag keeps (as the audit's manifest-untagged: index children and live referrers are kept)


_COSIGN_TAG = re.compile(r"sha256-([0-9a-f]{64})\.(sig|att|sbom)")
_COSIGN_KIND = {"sig": TagKind.SIGNATURE, "att": TagKind.ATTESTATION, "sbom": TagKind.SBOM}
# Words in an artifact's type (or its config's or first layer's media type) that say what it is.
_TYPE_WORDS = (
    (TagKind.SIGNATURE, ("sigstore", "cosign", "signature", "notary")),
    (TagKind.ATTESTATION, ("in-toto", "intoto", "attestation", "provenance", "vuln")),
    (TagKind.SBOM, ("spdx", "cyclonedx", "sbom", "syft")),
)
_IMAGE_CONFIGS = frozenset({
    "application/vnd.docker.container.image.v1+json",
    "application/vnd.oci.image.config.v1+json",
})
# The config of an artifact with nothing to configure: it says nothing of the artifact's type.
_EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"


def cosign_target(tag: str) -> tuple[Digest, TagKind] | None:
    """For a cosign-style `sha256-<hex>.sig` / `.att` / `.sbom` tag, the image it belongs to and what it is."""
    match = _COSIGN_TAG.fullmatch(tag)
    if match is None:
        return None
    digest = layout.digest_key("sha256", match.group(1))
    return (digest, _COSIGN_KIND[match.group(2)]) if digest is not None else None


@dataclass(frozen=True, slots=True)
class _Details:
    """What the manifest's JSON says beyond its references."""

    artifact_type: str | None
    config_type: str | None
    first_layer_type: str | None
    platforms: Mapping[Digest, Mapping[str, object]]  # an index's children -> their `platform`


_NO_DETAILS = _Details(None, None, None, {})


def _details(store: Store, inventory: Inventory, digest: Digest) -> _Details:
    size = inventory.blobs.get(digest)
    if size is None or size > layout.MAX_MANIFEST_BYTES:
        return _NO_DETAILS
    try:
        document = orjson.loads(store.read(layout.blob_data(digest), layout.MAX_MANIFEST_BYTES + 1, size))
    except (OSError, orjson.JSONDecodeError):
        return _NO_DETAILS
    if not isinstance(document, dict):
        return _NO_DETAILS
    platforms: dict[Digest, Mapping[str, object]] = {}
    for entry in _list(document.get("manifests")):
        child = layout.parse_digest(entry["digest"]) if isinstance(entry.get("digest"), str) else None
        if child is not None and isinstance(entry.get("platform"), dict):
            platforms[child] = entry["platform"]
    layers = _list(document.get("layers"))
    config = document.get("config")
    return _Details(
        _text(document.get("artifactType")),
        _text(config.get("mediaType")) if isinstance(config, dict) else None,
        _text(layers[0].get("mediaType")) if layers else None,
        platforms,
    )


def _list(value: object) -> list[dict]:
    return [entry for entry in value if isinstance(entry, dict)] if isinstance(value, list) else []


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _kind_of_type(text: str | None) -> TagKind | None:
    lowered = (text or "").lower()
    return next((kind for kind, words in _TYPE_WORDS if any(word in lowered for word in words)), None)


def _artifact(manifest: Manifest, details: _Details) -> tuple[TagKind, str | None] | None:
    """An artifact's kind and type; None for a runnable image (or an index)."""
    if manifest.kind is Kind.ARTIFACT or details.artifact_type is not None or manifest.subject is not None or (
        manifest.kind is Kind.IMAGE and details.config_type is not None and details.config_type not in _IMAGE_CONFIGS
    ):
        artifact_type = details.artifact_type or (
            details.config_type if details.config_type not in (*_IMAGE_CONFIGS, _EMPTY_CONFIG) else None
        )
        kind = _kind_of_type(artifact_type) or _kind_of_type(details.first_layer_type) or TagKind.ARTIFACT
        return kind, artifact_type
    return None


def _size(graph: Graph, manifest: Manifest) -> tuple[int, int]:
    """Bytes of its config and layers (each blob once) and how many of them are not stored."""
    return _blob_bytes(graph, _blob_references(manifest))


def _blob_references(manifest: Manifest) -> dict[Digest, Reference]:
    return {r.digest: r for r in manifest.blob_references()}


def _blob_bytes(graph: Graph, references: Mapping[Digest, Reference]) -> tuple[int, int]:
    """The manifest's descriptor sizes (what a pull fetches; the stored size where a descriptor has
    none, as in schema1), and the count of blobs neither stored nor foreign."""
    total = missing = 0
    for digest, reference in references.items():
        stored = graph.blobs.get(digest)
        if stored is None and not reference.foreign:
            missing += 1
        size = reference.size if reference.size is not None else stored
        total += size or 0
    return total, missing


def _served(graph: Graph, repository: Repository, digest: Digest) -> tuple[Manifest | None, str | None]:
    """The manifest the registry would serve for `digest` in this repository, or why it cannot."""
    if digest not in graph.blobs:
        return None, "its manifest is not stored"
    if digest not in repository.revisions:
        return None, "its manifest has no revision link in the repository: the registry answers unknown manifest"
    parsed = graph.manifests.get(digest)
    if not isinstance(parsed, Manifest):
        reason = getattr(parsed, "reason", "not read")
        return None, f"its manifest is invalid ({reason})"
    return parsed, None


def tag_rows(
    store: Store, inventory: Inventory, graph: Graph, repository: Repository
) -> tuple[TagRow, ...]:
    tagged = {tag.current: name for name, tag in repository.tags.items() if tag.current is not None}
    cosign: dict[Digest, list[Referrer]] = {}
    for name, tag in repository.tags.items():
        target = cosign_target(name)
        if target is not None and tag.current is not None:
            cosign.setdefault(target[0], []).append(Referrer(tag.current, target[1], None, name))
    return tuple(
        _tag_row(store, inventory, graph, repository, repository.tags[name], tagged, cosign)
        for name in sorted(repository.tags)
    )


def _tag_row(
    store: Store, inventory: Inventory, graph: Graph, repository: Repository, tag, tagged: Mapping[Digest, str],
    cosign: Mapping[Digest, list[Referrer]],
) -> TagRow:
    stat = store.stat(layout.tag_current_link(repository.name, tag.name))
    pushed = datetime.fromtimestamp(stat.mtime, timezone.utc) if stat is not None else None
    digest = tag.current
    if digest is None:
        defect = next((b.content.defect for b in repository.bad_links if b.kind == LinkKind.CURRENT and b.tag == tag.name), None)
        problem = f"its current link is invalid ({defect.value})" if defect is not None else "it has no current link"
        return TagRow(tag.name, None, TagKind.BROKEN, None, None, None, pushed, (), None, (), problem)
    manifest, problem = _served(graph, repository, digest)
    if manifest is None:
        return TagRow(tag.name, digest, TagKind.BROKEN, None, None, None, pushed, (), None, (), problem)
    details = _details(store, inventory, digest)
    referrers = tuple(
        _referrer(store, inventory, graph, d, tagged.get(d)) for d in sorted(graph.referrers.get(repository.name, {}).get(digest, ()))
    ) + tuple(cosign.get(digest, ()))
    platforms: tuple[Platform, ...] = ()
    artifact_type = None
    subject = manifest.subject
    if manifest.kind is Kind.INDEX:
        kind = TagKind.INDEX
        platforms, size, missing = _platforms(graph, repository, manifest, details)
    else:
        size, missing = _size(graph, manifest)
        artifact = _artifact(manifest, details)
        kind, artifact_type = artifact if artifact is not None else (TagKind.IMAGE, None)
    target = cosign_target(tag.name)
    if target is not None:
        kind, subject = target[1], target[0]
    if missing:
        problem = f"{missing} of its blobs {'is' if missing == 1 else 'are'} not stored: pulls fail"
    media_type = manifest.media_type or (DOCKER_SCHEMA1 if manifest.kind is Kind.SCHEMA1 else None)
    return TagRow(
        tag.name, digest, kind, media_type, artifact_type, size, pushed, platforms, subject, referrers, problem
    )


def _platforms(
    graph: Graph, repository: Repository, index: Manifest, details: _Details
) -> tuple[tuple[Platform, ...], int, int]:
    platforms = []
    every: dict[Digest, Reference] = {}
    missing = 0
    for child in index.children():
        described = details.platforms.get(child.digest, {})
        manifest, _problem = _served(graph, repository, child.digest)
        size = None
        if manifest is not None:
            references = _blob_references(manifest)
            size, _ = _blob_bytes(graph, references)
            every.update(references)
        elif not child.foreign:
            missing += 1
        platforms.append(Platform(
            _text(described.get("os")), _text(described.get("architecture")), _text(described.get("variant")),
            child.digest, size,
        ))
    total, missing_blobs = _blob_bytes(graph, every)
    return tuple(platforms), total, missing + missing_blobs


def _referrer(store: Store, inventory: Inventory, graph: Graph, digest: Digest, tag: str | None) -> Referrer:
    manifest = graph.manifest(digest)
    artifact = _artifact(manifest, _details(store, inventory, digest)) if manifest is not None else None
    kind, artifact_type = artifact if artifact is not None else (TagKind.ARTIFACT, None)
    return Referrer(digest, kind, artifact_type, tag)


def listing_of(store: Store, inventory: Inventory, graph: Graph, name: str) -> RepositoryListing:
    repository = inventory.repositories[name]
    kept = closure(graph, name, tag_roots(inventory).manifests.get(name, ()))
    return RepositoryListing(
        repository_row(repository), tag_rows(store, inventory, graph, repository), len(repository.revisions - kept)
    )


def manifests_to_read(repository: Repository) -> Iterable[Digest]:
    """What `listing_of` needs parsed: every manifest the repository's links name (referrers are found
    through their `subject`, so every revision)."""
    return repository.named_manifests()

