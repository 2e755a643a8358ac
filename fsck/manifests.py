"""Manifest bytes to references, for every media type the registry stores.

`parse_manifest` is pure; `read_manifests` is the one reader of manifest data. What counts as a reference follows the registry's garbage
collector: config, layers, index children and schema1 fsLayers reference blobs;
`subject` does not (it makes a manifest live, see analyze).
"""

from __future__ import annotations

import resource
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from enum import Enum

import orjson

from . import layout
from .layout import Digest, StoredBlobs
from .scan import Inventory, LinkKind, Repository
from .store import Store

DOCKER_SCHEMA2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_ARTIFACT = "application/vnd.oci.artifact.manifest.v1+json"  # withdrawn from the spec; 3.x may hold some

MANIFEST_MEDIA_TYPES = frozenset(
    {DOCKER_SCHEMA2, DOCKER_LIST, DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED, OCI_MANIFEST, OCI_INDEX, OCI_ARTIFACT}
)


class Kind(str, Enum):
    IMAGE = "image"
    INDEX = "index"
    SCHEMA1 = "schema1"
    ARTIFACT = "artifact"


class Role(str, Enum):
    CONFIG = "config"
    LAYER = "layer"
    CHILD = "child"  # an index entry: usually a manifest, sometimes a plain blob (buildkit cache)


@dataclass(frozen=True, slots=True, init=False)
class Reference:
    digest: Digest
    role: Role
    size: int | None = None
    media_type: str | None = None
    foreign: bool = False  # carries `urls`: non-distributable, normally not stored

    def __init__(
        self, digest: Digest, role: Role, size: int | None = None, media_type: str | None = None,
        foreign: bool = False,
    ) -> None:
        # As Finding's: the slots set directly, where the generated __init__ of a frozen class goes
        # through object.__setattr__ at twice the cost (`Manifest.references` makes them on each call).
        set_digest, set_role, set_size, set_media_type, set_foreign = _REFERENCE_SLOTS
        set_digest(self, digest)
        set_role(self, role)
        set_size(self, size)
        set_media_type(self, media_type)
        set_foreign(self, foreign)

    @property
    def names_manifest(self) -> bool:
        return self.media_type in MANIFEST_MEDIA_TYPES


_REFERENCE_SLOTS = tuple(getattr(Reference, f.name).__set__ for f in fields(Reference))


_ROLES = (Role.CONFIG, Role.LAYER, Role.CHILD)
_ROLE_CODES = {role: code for code, role in enumerate(_ROLES)}
_ROLE_BITS = 3  # the low bits of a packed reference's first byte: its role's code
_FOREIGN = 4
_NO_SIZE = 8
# A reference packed: role and flags, its media type's number (0: none), its size.
_PACKED = struct.Struct("<BHq")

Descriptor = tuple[Digest, Role, "int | None", "str | None", bool]  # a Reference's fields, in its order


class _Unpackable(Exception):
    """A reference the packed form cannot hold: a size beyond 64 bits, a media type past the table's bound."""


class _MediaTypes:
    """Every media type a reference names, numbered from 1: a reference keeps its number in 2 bytes.
    One table for the process, as the shared strings are, and bounded as they are: a damaged registry's
    65,535th new media type makes its manifest keep `Reference` objects instead."""

    __slots__ = ("names", "numbers", "lock")

    def __init__(self) -> None:
        self.names: list[str] = []
        self.numbers: dict[str, int] = {}
        self.lock = threading.Lock()  # manifests are parsed on threads where storage waits

    def number(self, name: str | None) -> int:
        if name is None:
            return 0
        number = self.numbers.get(name)
        if number is None:
            with self.lock:
                number = self.numbers.get(name)
                if number is None:
                    if len(self.names) >= 0xFFFF:
                        raise _Unpackable
                    self.names.append(name)
                    number = self.numbers[name] = len(self.names)
        return number


_MEDIA_TYPES = _MediaTypes()

# The heads of manifests without a subject: one per kind and media type (bounded, as the shared strings are).
_HEADS: dict[tuple[Kind, str | None], tuple] = {}
_HEADS_MAX = 4096


def _head(kind: Kind, media_type: str | None, subject: Digest | None) -> tuple:
    if subject is not None:
        return (kind, media_type, subject, None)
    head = _HEADS.get((kind, media_type))
    if head is None:
        head = (kind, media_type, None, None)
        if len(_HEADS) < _HEADS_MAX:
            head = _HEADS.setdefault((kind, media_type), head)
    return head


class Manifest(tuple):
    """A parsed manifest: one tuple, `(head, packed, *digests)`. The head is its kind, media type, subject
    and unpackable references, one tuple shared by every manifest of the same kind and media type that has
    neither; `digests` are what it references as config, layer or child, in document order (the shared
    digest objects); `packed` is 11 bytes for each one's role, flags, media type and size, not a `Reference`
    object each (80 bytes, and 32 for its size). One object a manifest, not a record and a tuple beside it:
    the manifests of a large store are held through every check. `references` makes the objects on each
    call; `descriptors` yields their fields as plain tuples, for the checks' loops. Equal as its fields are;
    never built from its fields but by `of`."""

    __slots__ = ()

    def __new__(cls, items: Iterable[object]) -> Manifest:  # as pickle and copy rebuild it
        return tuple.__new__(cls, items)

    @classmethod
    def of(
        cls, kind: Kind, media_type: str | None, descriptors: Iterable[Descriptor], subject: Digest | None = None,
    ) -> Manifest:
        listed = list(descriptors)
        digests = [descriptor[0] for descriptor in listed]
        pack, number = _PACKED.pack, _MEDIA_TYPES.number
        try:
            packed = b"".join(
                pack(
                    _ROLE_CODES[role] | (_FOREIGN if foreign else 0) | (_NO_SIZE if size is None else 0),
                    number(referenced_type), 0 if size is None else size,
                )
                for _digest, role, size, referenced_type, foreign in listed
            )
        except (_Unpackable, struct.error):
            unpackable = tuple(Reference(*descriptor) for descriptor in listed)
            return tuple.__new__(cls, ((kind, media_type, subject, unpackable), b"", *digests))
        return tuple.__new__(cls, (_head(kind, media_type, subject), packed, *digests))

    @property
    def kind(self) -> Kind:
        return self[0][0]

    @property
    def media_type(self) -> str | None:
        return self[0][1]

    @property
    def subject(self) -> Digest | None:
        return self[0][2]

    @property
    def unpackable(self) -> tuple[Reference, ...] | None:
        """The references, where `packed` cannot hold them."""
        return self[0][3]

    @property
    def packed(self) -> bytes:
        return self[1]

    @property
    def digests(self) -> tuple[Digest, ...]:
        return self[2:]  # a plain tuple

    def __repr__(self) -> str:
        return (
            f"Manifest(kind={self.kind!r}, media_type={self.media_type!r}, digests={self.digests!r}, "
            f"subject={self.subject!r}, unpackable={self.unpackable!r})"
        )

    def descriptors(self) -> Iterator[Descriptor]:
        """Each reference's digest, role, size, media type and foreign flag, in document order."""
        if self.unpackable is not None:
            for r in self.unpackable:
                yield r.digest, r.role, r.size, r.media_type, r.foreign
            return
        names = _MEDIA_TYPES.names
        for digest, (code, number, size) in zip(self.digests, _PACKED.iter_unpack(self.packed), strict=True):
            yield (
                digest, _ROLES[code & _ROLE_BITS], None if code & _NO_SIZE else size, names[number - 1] if number else None,
                bool(code & _FOREIGN),
            )

    @property
    def references(self) -> tuple[Reference, ...]:
        if self.unpackable is not None:
            return self.unpackable
        return tuple(Reference(*descriptor) for descriptor in self.descriptors())

    def blob_references(self) -> tuple[Reference, ...]:
        """Configs and layers, which a pull fetches as blobs through the repository's `_layers`."""
        return tuple(r for r in self.references if r.role is not Role.CHILD)

    def children(self) -> tuple[Reference, ...]:
        return tuple(r for r in self.references if r.role is Role.CHILD)

    def child_digests(self) -> list[Digest]:
        """The digests of `children`, read from the packed roles alone."""
        if self.unpackable is not None:
            return [r.digest for r in self.unpackable if r.role is Role.CHILD]
        packed, width, child = self.packed, _PACKED.size, _ROLE_CODES[Role.CHILD]
        return [digest for at, digest in enumerate(self.digests) if packed[at * width] & _ROLE_BITS == child]


@dataclass(frozen=True, slots=True)
class InvalidManifest:
    reason: str
    unreadable: bool = False  # the bytes could not be read: nothing is known, not even that they are bad


class _Malformed(Exception):
    pass


# Thousands of references name a handful of media types: one str object for each, not one per
# reference (bounded, whatever a damaged registry holds).
_SHARED_STRINGS: dict[str, str] = {}
_SHARED_STRINGS_MAX = 4096


def _shared(text: str) -> str:
    shared = _SHARED_STRINGS.get(text)
    if shared is None:
        if len(_SHARED_STRINGS) >= _SHARED_STRINGS_MAX:
            return text
        shared = _SHARED_STRINGS.setdefault(text, text)
    return shared


_Canonical = Callable[[Digest], Digest]


def _same(digest: Digest) -> Digest:
    return digest


def parse_manifest(raw: bytes, canonical: _Canonical = _same) -> Manifest | InvalidManifest:
    """`canonical` may return an equal digest object already held elsewhere, to share it."""
    if not raw:
        return InvalidManifest("empty")
    if len(raw) > layout.MAX_MANIFEST_BYTES:
        return InvalidManifest(f"larger than the registry's {layout.MAX_MANIFEST_BYTES} byte limit")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return InvalidManifest("not JSON (truncated or corrupt)")
    if not isinstance(document, dict):
        return InvalidManifest("not a JSON object")
    try:
        return _parse_document(document, canonical)
    except _Malformed as error:
        return InvalidManifest(str(error))


def _parse_document(document: dict, canonical: _Canonical) -> Manifest | InvalidManifest:
    media_type = document.get("mediaType")
    if media_type is not None and not isinstance(media_type, str):
        raise _Malformed("mediaType is not a string")
    if media_type is not None:
        media_type = _shared(media_type)
    schema_version = document.get("schemaVersion")
    if media_type in (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED) or (media_type is None and schema_version == 1):
        return _schema1(document, media_type, canonical)
    if media_type in (DOCKER_LIST, OCI_INDEX) or (media_type is None and "manifests" in document):
        children = _descriptors(document, "manifests", Role.CHILD, canonical)
        return Manifest.of(Kind.INDEX, media_type, children, _subject(document, canonical))
    if media_type in (DOCKER_SCHEMA2, OCI_MANIFEST) or (media_type is None and "config" in document):
        config = document.get("config")
        if not isinstance(config, dict):
            raise _Malformed("image manifest without a config descriptor")
        references = [_descriptor(config, Role.CONFIG, canonical), *_descriptors(document, "layers", Role.LAYER, canonical)]
        return Manifest.of(Kind.IMAGE, media_type, references, _subject(document, canonical))
    if media_type == OCI_ARTIFACT:
        blobs = _descriptors(document, "blobs", Role.LAYER, canonical)
        return Manifest.of(Kind.ARTIFACT, media_type, blobs, _subject(document, canonical))
    if media_type is None:
        return InvalidManifest("no mediaType and no known schema")
    return InvalidManifest(f"unknown media type {media_type!r}")


def _schema1(document: dict, media_type: str | None, canonical: _Canonical) -> Manifest:
    fs_layers = document.get("fsLayers")
    if not isinstance(fs_layers, list):
        raise _Malformed("schema1 manifest without fsLayers")
    references: list[Descriptor] = []
    for entry in fs_layers:
        if not isinstance(entry, dict) or not isinstance(entry.get("blobSum"), str):
            raise _Malformed("schema1 fsLayers entry without a blobSum")
        digest = layout.parse_digest(entry["blobSum"])
        if digest is None:
            raise _Malformed(f"invalid blobSum {entry['blobSum'][:80]!r}")
        references.append((canonical(digest), Role.LAYER, None, None, False))
    return Manifest.of(Kind.SCHEMA1, media_type, references)


def _descriptors(document: dict, field: str, role: Role, canonical: _Canonical) -> list[Descriptor]:
    entries = document.get(field, [])
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise _Malformed(f"{field} is not a list")
    return [_descriptor(entry, role, canonical) for entry in entries]


def _descriptor(entry: object, role: Role, canonical: _Canonical = _same) -> Descriptor:
    if not isinstance(entry, dict):
        raise _Malformed(f"{role.value} descriptor is not an object")
    text = entry.get("digest")
    digest = layout.parse_digest(text) if isinstance(text, str) else None
    if digest is None:
        raise _Malformed(f"{role.value} descriptor with invalid digest {str(text)[:80]!r}")
    size = entry.get("size")
    size = size if isinstance(size, int) and not isinstance(size, bool) else None
    media_type = entry.get("mediaType")
    media_type = _shared(media_type) if isinstance(media_type, str) else None
    urls = entry.get("urls")
    return canonical(digest), role, size, media_type, isinstance(urls, list) and bool(urls)


def _subject(document: dict, canonical: _Canonical) -> Digest | None:
    """Lenient, as the registry (2.8 ignores `subject`): a malformed one makes no manifest invalid."""
    subject = document.get("subject")
    try:
        return _descriptor(subject, Role.CHILD, canonical)[0] if subject is not None else None
    except _Malformed:
        return None


def named_by_links(inventory: Inventory) -> set[Digest]:
    """Every digest a manifest link names, valid or damaged: what may be a manifest to read."""
    named: set[Digest] = set()
    for repository in inventory.repositories.values():
        named |= named_in(repository)
    return named


def named_in(repository: Repository) -> set[Digest]:
    """What the repository's manifest links name, valid or damaged."""
    named = repository.named_manifests()
    for bad in repository.bad_links:
        if bad.kind != LinkKind.LAYER:
            named |= bad.may_name
    return named


# Manifests are read in batches, never one task per manifest: a task's hand-off (a future, a
# lock, a wake-up, under the GIL) costs more than reading and parsing a small cached file.
_BATCH_MAX = 256
_BATCH_MIN = 32
# Seconds per manifest above which a batch read in this thread counts as slow storage. A local
# disk here: about 40 us with the tree in the page cache, 130 us without; threads pay off only
# where each read waits longer (a network mount: from a few hundred us).
_SLOW_READ = 0.0002
# A read that waits on storage gives up the CPU: a voluntary context switch. Time lost to other
# processes on the same cores (the walkers, while the walk goes on) is taken by preemption and
# costs few of them: a slow batch counts as slow storage only when this share of its reads switched.
_SWITCHING_SHARE = 0.25
_RUSAGE_THREAD = getattr(resource, "RUSAGE_THREAD", None)  # Linux: this thread's counts alone


def _voluntary_switches() -> int:
    return resource.getrusage(_RUSAGE_THREAD).ru_nvcsw if _RUSAGE_THREAD is not None else 0


class _Parser:
    """Reads and parses stored manifests of one inventory's blobs, sharing its digest objects.

    References to stored blobs share the inventory's digest objects (one per blob, not one per
    reference), found in the stored digests in order (`StoredBlobs`: the walk's, where it made them);
    a digest named but not stored is one object too, kept in `others`.
    """

    __slots__ = ("store", "stored", "others")

    def __init__(self, store: Store, sizes: Mapping[Digest, int]) -> None:
        self.store = store
        self.stored = sizes if isinstance(sizes, StoredBlobs) else StoredBlobs(sizes)
        self.others: dict[Digest, Digest] = {}  # digests named but not stored: one object each too

    def canonical(self, digest: Digest) -> Digest:
        stored = self.stored.stored(digest)
        return self.others.setdefault(digest, digest) if stored is None else stored

    def load(self, digest: Digest) -> Manifest | InvalidManifest:
        size = self.stored[digest]
        if size > layout.MAX_MANIFEST_BYTES:
            return InvalidManifest(f"larger than the registry's {layout.MAX_MANIFEST_BYTES} byte limit")
        try:
            # Asked for at its scanned size: one read of the right size, not a buffer of the limit.
            raw = self.store.read(layout.blob_data(digest), layout.MAX_MANIFEST_BYTES + 1, size)
        except OSError as error:
            return InvalidManifest(f"unreadable: {error.strerror}", unreadable=True)
        return parse_manifest(raw, self.canonical)

    def load_batch(self, batch: list[Digest]) -> list[tuple[Digest, Manifest | InvalidManifest]]:
        load = self.load
        return [(digest, load(digest)) for digest in batch]


def _timed(parser: _Parser, batch: list[Digest], into: dict) -> bool:
    """Reads the batch into `into`; whether it was slow. Waiting, not computing: a pause of Python's
    cycle collector is this thread's CPU time, a read that waits on storage is not; and waiting on
    storage, not for a core: where switches are counted per thread, most reads must have blocked."""
    started, computing, switched = time.perf_counter(), time.thread_time(), _voluntary_switches()
    into.update(parser.load_batch(batch))
    waited = (time.perf_counter() - started) - (time.thread_time() - computing)
    if waited <= _SLOW_READ * len(batch):
        return False
    return _RUSAGE_THREAD is None or _voluntary_switches() - switched >= _SWITCHING_SHARE * len(batch)


class _SlowStreak:
    """Storage that makes reads wait: two slow batches in a row (one alone may be another process's turn)."""

    __slots__ = ("before",)

    def __init__(self) -> None:
        self.before = False

    def after(self, slow: bool) -> bool:
        """Whether the batch just read, slow or not, ends a streak of two."""
        streak, self.before = slow and self.before, slow
        return streak


def read_manifests(
    store: Store, digests: Iterable[Digest], sizes: Mapping[Digest, int], workers: int = 8,
) -> dict[Digest, Manifest | InvalidManifest]:
    """Read and parse the stored data of each digest that is stored as a blob (`sizes`: the stored
    blobs, shared as they are when `StoredBlobs`, as a scan leaves them).

    Batches are read in this thread while they read fast: parsing holds the GIL, so threads
    would only add hand-offs. Once two batches in a row show storage that makes each read wait
    (a network mount), the rest goes to `workers` threads, a batch at a time, to keep many
    reads in flight.
    """
    wanted = [digest for digest in set(digests) if digest in sizes]
    parsed: dict[Digest, Manifest | InvalidManifest] = {}
    if wanted:
        _read_into(_Parser(store, sizes), wanted, workers, parsed)
    return parsed


def _read_into(parser: _Parser, wanted: list[Digest], workers: int, parsed: dict) -> None:
    # Enough batches to keep every worker busy to the end, none so small that hand-offs dominate.
    size = max(_BATCH_MIN, min(_BATCH_MAX, -(-len(wanted) // (max(workers, 1) * 4))))
    batches = [wanted[start : start + size] for start in range(0, len(wanted), size)]
    done = 0
    streak = _SlowStreak()
    for batch in batches:
        slow = streak.after(_timed(parser, batch, parsed))
        done += 1
        if workers > 1 and slow:
            break
    rest = batches[done:]
    if rest:
        with ThreadPoolExecutor(max_workers=min(workers, len(rest))) as pool:
            for loaded in pool.map(parser.load_batch, rest):
                parsed.update(loaded)


class WhileWalking:
    """Manifests read while the walk goes on: each repository's, as the scan hands it over once every
    blob is known (`walked`), in this thread, while the walker processes go on with the rest of the
    tree; `finish` reads what is left and returns what `read_manifests` would have.

    Only for a store whose reads do not wait (a local disk): the first two slow batches in a row stop it,
    and the rest is read by `read_manifests`' threads after the walk."""

    __slots__ = ("store", "inventory", "parser", "parsed", "streak", "stopped")

    def __init__(self, store: Store) -> None:
        self.store = store
        self.inventory: Inventory | None = None
        self.parser: _Parser | None = None
        self.parsed: dict[Digest, Manifest | InvalidManifest] = {}
        self.streak = _SlowStreak()
        self.stopped = False

    def walked(self, inventory: Inventory, names: Iterable[str]) -> None:
        if self.stopped:
            return
        if inventory is not self.inventory:  # a walk begun again (in one thread) has an inventory of its own
            self.inventory, self.parser, self.parsed = inventory, _Parser(self.store, inventory.blobs), {}
        parsed, sizes = self.parsed, inventory.blobs
        wanted = [
            digest
            for digest in dict.fromkeys(d for name in names for d in named_in(inventory.repositories[name]))
            if digest in sizes and digest not in parsed
        ]
        if not wanted:
            return
        self.stopped = self.streak.after(_timed(self.parser, wanted, parsed))

    def finish(self, inventory: Inventory, workers: int = 8) -> dict[Digest, Manifest | InvalidManifest]:
        if inventory is not self.inventory:
            return read_manifests(self.store, named_by_links(inventory), inventory.blobs, workers)
        parsed, sizes = self.parsed, inventory.blobs
        # What no repository handed over named (most was read while walking): found repository by
        # repository, not from a set of every named digest beside the parsed ones.
        rest = list(dict.fromkeys(
            digest
            for repository in inventory.repositories.values()
            for digest in named_in(repository)
            if digest not in parsed and digest in sizes
        ))
        if rest:
            _read_into(self.parser, rest, workers, parsed)
        self.inventory = self.parser = None
        self.parsed = {}
        return parsed
