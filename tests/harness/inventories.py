"""Hand-built inventories for unit tests of the pure stages (reach, checks, plan): no file system.

A `Build` holds an `Inventory` and the parsed manifests beside it, as `scan` and
`read_manifests` would give them. Digests are made from names (`digest("base")`), and
every digest the build makes is remembered under its name, so a test states its
expectations as short strings (`describe`):

    b = Build()
    v1 = b.image("v1", layers=["base", "v1.app"])   # stores v1, v1.config, base, v1.app
    app = b.repo("app")
    app.push(v1)                                     # revision link and _layers links
    app.tag("latest", v1)
    audit = b.audit()
    assert b.findings(audit) == {...}                # e.g. "manifest-untagged app@old"

Places print as `app@old` (a revision), `app/_layers/base`, `app:latest` (a tag),
`app:latest/index/old`, `app:latest/current`, `app/` (a repository), `app/_manifests`
(a repository's own part), `app/_uploads/<id>`, a blob by its name; a link file adds `/link`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

from fsck import checks, layout, plan
from fsck.catalogue import Finding
from fsck.layout import Digest, LinkContent, LinkDefect
from fsck.manifests import (
    DOCKER_LIST,  # noqa: F401  (re-exported for tests: a Docker manifest list)
    DOCKER_SCHEMA1_SIGNED,
    OCI_INDEX,
    OCI_MANIFEST,
    InvalidManifest,
    Kind,
    Manifest,
    Role,
)
from fsck.scan import BadLink, Inventory, LeftoverFile, LinkKind, Oddity, Repository, Tag, Upload

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
OLD = NOW - timedelta(days=365)  # when everything was written, unless a test says otherwise

CONFIG_SIZE = 100
LAYER_SIZE = 1000
MANIFEST_SIZE = 500

BUILDKIT_CACHE = "application/vnd.buildkit.cacheconfig.v0"  # an index entry that is a plain blob
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def digest(name: str) -> Digest:
    """The sha256 key of a name: distinct names, distinct digests."""
    return hashlib.sha256(name.encode()).digest()


def text(name: str) -> str:
    """The digest of a name as `sha256:<hex>`, as links, reports and --protect files spell it."""
    return layout.format_digest(digest(name))


def upload_id(n: int) -> str:
    return f"{n:08x}-0000-4000-8000-000000000000"


class Build:
    def __init__(self) -> None:
        self.inventory = Inventory("/v2")
        self.manifests: dict[Digest, Manifest | InvalidManifest] = {}
        self.names: dict[Digest, str] = {}
        self.times: dict[str, datetime] = {}  # path -> last modification, for `modified`

    # Digests and blobs

    def digest(self, name: str) -> Digest:
        d = digest(name)
        self.names[d] = name
        return d

    def name(self, d: Digest) -> str:
        return self.names.get(d, layout.format_digest(d))

    def blob(self, name: str, size: int = LAYER_SIZE, stored: bool = True) -> Digest:
        """A blob named `name`; `stored=False`: known by digest only, its data is not in blobs/."""
        d = self.digest(name)
        if stored:
            self.inventory.blobs[d] = size
        return d

    def _manifest(self, name: str, manifest: Manifest | InvalidManifest, stored: bool, size: int) -> Digest:
        d = self.blob(name, size, stored)
        if stored:
            self.manifests[d] = manifest
        return d

    # Manifests

    def image(
        self,
        name: str,
        layers: Iterable[str] | None = None,
        config: str | None = None,
        subject: Digest | None = None,
        missing: Iterable[str] = (),
        foreign: Iterable[str] = (),
        media_type: str = OCI_MANIFEST,
        stored: bool = True,
    ) -> Digest:
        """An image manifest with a config and layers (default: `<name>.config`, `<name>.layer`),
        all stored but those named in `missing`; `foreign` layers carry `urls` and are not stored."""
        missing, foreign = set(missing), set(foreign)
        config = config or f"{name}.config"
        layers = [f"{name}.layer"] if layers is None else list(layers)
        references = [(self.blob(config, CONFIG_SIZE, config not in missing), Role.CONFIG, CONFIG_SIZE, OCI_CONFIG, False)]
        for layer in layers:
            stored_layer = layer not in missing and layer not in foreign
            references.append(
                (self.blob(layer, LAYER_SIZE, stored_layer), Role.LAYER, LAYER_SIZE, OCI_LAYER, layer in foreign)
            )
        return self._manifest(name, Manifest.of(Kind.IMAGE, media_type, references, subject), stored, MANIFEST_SIZE)

    def index(
        self,
        name: str,
        children: Iterable[Digest],
        subject: Digest | None = None,
        blobs: Iterable[str] = (),
        media_type: str = OCI_INDEX,
        stored: bool = True,
    ) -> Digest:
        """An index of manifests (`children`), plus `blobs`: buildkit-style entries that are plain
        blobs (not manifests; stored unless the name is not yet a blob of the build)."""
        references = [(c, Role.CHILD, MANIFEST_SIZE, self._media_type_of(c), False) for c in children]
        for entry in blobs:
            d = self.digest(entry)
            references.append((d, Role.CHILD, self.inventory.blobs.get(d), BUILDKIT_CACHE, False))
        return self._manifest(name, Manifest.of(Kind.INDEX, media_type, references, subject), stored, MANIFEST_SIZE)

    def _media_type_of(self, d: Digest) -> str:
        manifest = self.manifests.get(d)
        if isinstance(manifest, Manifest) and manifest.media_type:
            return manifest.media_type
        return OCI_MANIFEST

    def referrer(self, name: str, subject: Digest) -> Digest:
        """An OCI referrer (a signature, an SBOM): an image manifest whose `subject` names another."""
        return self.image(name, layers=[f"{name}.payload"], subject=subject)

    def schema1(self, name: str, layers: Iterable[str]) -> Digest:
        references = [(self.blob(layer), Role.LAYER, None, None, False) for layer in layers]
        return self._manifest(name, Manifest.of(Kind.SCHEMA1, DOCKER_SCHEMA1_SIGNED, references), True, MANIFEST_SIZE)

    def invalid(self, name: str, reason: str = "not JSON (truncated or corrupt)", size: int = MANIFEST_SIZE) -> Digest:
        """Manifest data that was read and could not be parsed."""
        return self._manifest(name, InvalidManifest(reason), True, size)

    def unreadable(self, name: str) -> Digest:
        """Manifest data that could not be read at all."""
        return self._manifest(name, InvalidManifest("unreadable: Permission denied", unreadable=True), True,
                              MANIFEST_SIZE)

    # Repositories

    def repo(self, name: str, layers_dir: bool = True, uploads_dir: bool = False) -> RepoBuild:
        repository = Repository(
            name, has_layers_dir=layers_dir, has_manifests_dir=True, has_tags_dir=True, has_uploads_dir=uploads_dir,
        )
        self.inventory.repositories[name] = repository
        return RepoBuild(self, repository)

    # The rest of the tree

    def empty_dir(self, path: str) -> str:
        self.inventory.empty_dirs.append(path)
        return path

    def leftover(self, path: str, size: int = 7) -> str:
        self.inventory.leftovers.append(LeftoverFile(path, size))
        return path

    def unknown(self, path: str, reason: str = "symbolic link (never followed)") -> str:
        """A place not followed (the registry may use it): what is there is unknown."""
        self.inventory.unknown.append(Oddity(path, reason))
        return path

    def unreadable_path(self, path: str, reason: str = "Permission denied") -> str:
        self.inventory.unreadable.append(Oddity(path, reason))
        return path

    def young(self, location: layout.Location, age: timedelta = timedelta(minutes=5)) -> None:
        """Mark a place as modified `age` before NOW (everything else is a year old)."""
        self.times[location.path] = NOW - age

    # Running the stages

    def audit(self, corrupt: Iterable[Digest] = ()) -> checks.Audit:
        return checks.audit(self.inventory, self.manifests, checks.Policy(NOW), frozenset(corrupt))

    def modified(self, location: layout.Location) -> datetime | None:
        return self.times.get(location.path, OLD)

    def plan(self, selection: plan.Selection | None = None, audit: checks.Audit | None = None) -> plan.Plan:
        audit = audit or self.audit()
        return plan.prepare(audit, self.inventory, selection or plan.Selection(), self.modified, NOW)

    # Describing results

    def where(self, location: layout.Location) -> str:
        n = self.name
        match location:
            case layout.Blob(d):
                return n(d)
            case layout.Revision(r, d):
                return f"{r}@{n(d)}"
            case layout.LayerLink(r, d):
                return f"{r}/_layers/{n(d)}"
            case layout.TagDir(r, t):
                return f"{r}:{t}"
            case layout.TagCurrent(r, t):
                return f"{r}:{t}/current"
            case layout.TagIndexEntry(r, t, d):
                return f"{r}:{t}/index/{n(d)}"
            case layout.RepositoryDir(r):
                return f"{r}/"
            case layout.RepositoryPart(r, part):
                return f"{r}/{part}"
            case layout.UploadDir(r, u):
                return f"{r}/_uploads/{u}"
            case layout.LinkFile(owner):
                return f"{self.where(owner)}/link"
            case _:
                return location.path

    def describe(self, finding: Finding) -> str:
        return f"{finding.id} {self.where(finding.location)}"

    def findings(self, audit: checks.Audit, *ids: str) -> set[str]:
        """The audit's findings (of these ids, or all) as `describe` strings."""
        return {self.describe(f) for f in audit.findings if not ids or f.id in ids}

    def actions(self, the_plan: plan.Plan) -> list[str]:
        """The plan's actions in order: `<finding> <kind> <place>`."""
        return [f"{a.finding} {a.kind.value} {self.where(a.location)}" for a in the_plan.actions]

    def skipped(self, the_plan: plan.Plan) -> set[tuple[str, str]]:
        return {(self.describe(s.finding), s.reason) for s in the_plan.skipped}

    def leftover_findings(self, the_plan: plan.Plan) -> set[str]:
        return {self.describe(f) for f in the_plan.leftover}


class RepoBuild:
    def __init__(self, build: Build, repository: Repository) -> None:
        self.build = build
        self.repository = repository
        self.name = repository.name

    def push(self, *digests: Digest, layers: bool = True, children: bool = True) -> RepoBuild:
        """What a push leaves: a revision link, `_layers` links to the config and layers, and the
        same for index children (where `children`, recursively) that the build holds as manifests."""
        for d in digests:
            self.repository.revisions.add(d)
            manifest = self.build.manifests.get(d)
            if not isinstance(manifest, Manifest):
                continue
            if layers:
                self.repository.layer_links.update(r.digest for r in manifest.blob_references())
            if children:
                for child in manifest.children():
                    if isinstance(self.build.manifests.get(child.digest), Manifest):
                        self.push(child.digest, layers=layers, children=children)
        return self

    def revision(self, *digests: Digest) -> RepoBuild:
        """Revision links only."""
        self.repository.revisions.update(digests)
        return self

    def link(self, *digests: Digest) -> RepoBuild:
        """`_layers` links only."""
        self.repository.layer_links.update(digests)
        return self

    def unlink(self, *digests: Digest) -> RepoBuild:
        self.repository.layer_links.difference_update(digests)
        return self

    def tag(self, name: str, current: Digest | None, history: Iterable[Digest] = (),
            has_current_file: bool | None = None) -> RepoBuild:
        """A tag naming `current` (None: its current link is missing), whose index holds `current`
        and `history`."""
        index = frozenset({*history, *([current] if current is not None else [])})
        if has_current_file is None:
            has_current_file = current is not None
        self.repository.tags[name] = Tag(name, current, has_current_file, index)
        return self

    def upload(self, n: int, age: timedelta, size: int = 4096) -> str:
        started = NOW - age
        self.repository.uploads.append(Upload(upload_id(n), started, started, size))
        self.repository.has_uploads_dir = True
        return upload_id(n)

    def bad_link(self, kind: str, path_digest: Digest | None, content: LinkContent, tag: str | None = None) -> BadLink:
        """A damaged link, as scan records it (it is then in no set of valid links)."""
        name = self.name
        if kind == LinkKind.LAYER:
            path = layout.layer_link(name, path_digest)
        elif kind == LinkKind.REVISION:
            path = layout.revision_link(name, path_digest)
        elif kind == LinkKind.INDEX:
            path = layout.tag_index_link(name, tag, path_digest)
        else:
            path = layout.tag_current_link(name, tag)
        bad = BadLink(kind, path, path_digest, content, tag)
        self.repository.bad_links.append(bad)
        return bad

    def bad_current(self, tag: str, meant: Digest, history: Iterable[Digest] = ()) -> BadLink:
        """A tag whose current link holds `meant` with a trailing newline: invalid, recoverable."""
        self.tag(tag, None, history, has_current_file=True)
        content = LinkContent(None, LinkDefect.TRAILING_WHITESPACE, meant)
        return self.bad_link(LinkKind.CURRENT, None, content, tag)

    def alias(self, *digests: Digest) -> RepoBuild:
        self.repository.aliases.update(digests)
        return self

    def partly_read(self) -> RepoBuild:
        self.repository.fully_read = False
        return self

