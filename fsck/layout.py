"""The one place that knows distribution's filesystem layout and digest syntax.

    <rootdirectory>/docker/registry/v2/                 (the "v2" directory; every path below is relative to it)
    ├── blobs/<alg>/<2 hex>/<hex>/data                     content: layers, configs, manifests
    └── repositories/<name>/                               <name> nests: a/b and a/b/c may both be repositories
        ├── _layers/<alg>/<hex>/link                       repository may serve this blob
        ├── _manifests/revisions/<alg>/<hex>/link          manifest belongs to the repository
        ├── _manifests/tags/<tag>/current/link             what the tag resolves to
        ├── _manifests/tags/<tag>/index/<alg>/<hex>/link   every manifest the tag ever named
        └── _uploads/<id>/{data,startedat,hashstates/<alg>/<offset>}

Digests are held as `Digest` keys: the raw hash bytes. The algorithm follows from the
length (sha256: 32, sha384: 48, sha512: 64 bytes), which keeps millions of them compact.
Nothing else in the package builds a storage path by hand.
"""

from __future__ import annotations

import heapq
import os
import re
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from enum import Enum
from itertools import accumulate, pairwise

Digest = bytes

V2_PARTS = ("docker", "registry", "v2")
DEFAULT_ROOTDIRECTORY = "/var/lib/registry"
BLOBS = "blobs"
REPOSITORIES = "repositories"
LAYERS = "_layers"
MANIFESTS = "_manifests"
UPLOADS = "_uploads"
REPOSITORY_MARKERS = (LAYERS, MANIFESTS, UPLOADS)
REVISIONS = "revisions"
TAGS = "tags"
CURRENT = "current"
INDEX = "index"
LINK = "link"
DATA = "data"
STARTEDAT = "startedat"
HASHSTATES = "hashstates"
SIGNATURES = "signatures"  # registries <= 2.4 kept manifest signatures beside revisions

HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}
ALGORITHM_BY_SIZE = {length // 2: alg for alg, length in HEX_LENGTH.items()}
BLOB_ALGORITHM = "sha256"
EMPTY_BLOB = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_LINK_BYTES = 256

_HEX = re.compile(r"[0-9a-f]+")
# distribution's reference grammar: path components of lowercase alphanumerics and separators.
_REPOSITORY_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_UPLOAD_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def digest_key(algorithm: str, hex_part: str) -> Digest | None:
    """The key for a digest given as algorithm and hex, or None when it is not canonical."""
    if HEX_LENGTH.get(algorithm) != len(hex_part):
        return None
    try:
        digest = bytes.fromhex(hex_part)
    except ValueError:
        return None
    # fromhex also takes upper case and spaces between pairs: only the exact round trip is canonical.
    # (Cheaper than a regular expression: this runs for every name in the tree and every descriptor.)
    return digest if digest.hex() == hex_part else None


def parse_digest(text: str) -> Digest | None:
    """Parse `sha256:<hex>` exactly as the registry accepts it: lowercase, full length, nothing around it."""
    algorithm, sep, hex_part = text.partition(":")
    return digest_key(algorithm, hex_part) if sep else None


def format_digest(digest: Digest) -> str:
    return f"{ALGORITHM_BY_SIZE[len(digest)]}:{digest.hex()}"


def algorithm_of(digest: Digest) -> str:
    return ALGORITHM_BY_SIZE[len(digest)]


class Digests(tuple, AbstractSet):
    """A frozen set of digests as one sorted tuple, itself: 8 bytes a digest, where a set's table spends
    30 to 60, and a set of one 216 bytes (a repository's links and a tag's index are held for the whole
    run). Membership by bisection; what an operation makes is a plain set. It compares, hashes and
    combines as a set does, never as a tuple."""

    __slots__ = ()

    def __new__(cls, digests: Iterable[Digest] = ()) -> Digests:
        return tuple.__new__(cls, sorted(set(digests)))

    def __contains__(self, digest: object) -> bool:
        at = bisect_left(self, digest) if isinstance(digest, bytes) else len(self)
        return at < len(self) and self[at] == digest

    @classmethod
    def in_order(cls, digests: Iterable[Digest]) -> Digests:
        """Digests already in order and each once, as another `Digests` gave them: not sorted again."""
        return tuple.__new__(cls, digests)

    # As a frozenset's, not a tuple's: equal to a set of the same digests (never to a tuple), ordered by
    # inclusion, and hashed so a frozen `Tag` holding one stays hashable.
    def __eq__(self, other: object) -> bool:
        if isinstance(other, AbstractSet):
            return AbstractSet.__eq__(self, other)
        return False if isinstance(other, tuple) else NotImplemented

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __lt__, __le__, __gt__, __ge__ = AbstractSet.__lt__, AbstractSet.__le__, AbstractSet.__gt__, AbstractSet.__ge__
    __hash__ = AbstractSet._hash

    def __repr__(self) -> str:
        return f"Digests({set(self)!r})"

    @classmethod
    def _from_iterable(cls, iterable: Iterable[Digest]) -> set[Digest]:
        return set(iterable)

    def __and__(self, other):
        if not isinstance(other, Iterable):
            return NotImplemented
        if not isinstance(other, AbstractSet):
            other = set(other)
        if len(other) < len(self):  # the smaller side walked, the other asked
            return {digest for digest in other if digest in self}
        return {digest for digest in self if digest in other}

    __rand__ = __and__

    def __sub__(self, other):
        if not isinstance(other, Iterable):
            return NotImplemented
        if isinstance(other, (set, frozenset)):  # in C: each of ours asked of the other
            return set(self).difference(other)
        if not isinstance(other, AbstractSet):
            other = set(other)
        return {digest for digest in self if digest not in other}

    def __rsub__(self, other):
        if not isinstance(other, Iterable):
            return NotImplemented
        return set(other).difference(self)

    def __or__(self, other):
        if not isinstance(other, Iterable):
            return NotImplemented
        return set(self).union(other)

    __ror__ = __or__


class StoredBlobs(Mapping[Digest, int]):
    """The stored blobs, digest to size, in digest order, each found by its position: what names a
    stored digest (a link, a descriptor) is given the stored object, so a digest is one object however
    many name it, and a table kept per stored blob is a list by position, not a dict. 12 bytes a blob
    (16 where one is 4 GiB or more) and a 256 KiB index by the first two bytes (a dict of the sizes
    spends 50-60 a blob more); a lookup is a bisection over a handful. Iterated in digest order; `items`
    and `values` are iterators."""

    __slots__ = ("digests", "sizes", "_starts")

    def __init__(self, sizes: Mapping[Digest, int]) -> None:
        self._fill(*in_digest_order(sizes))

    @classmethod
    def of_runs(cls, digests: list[Digest], sizes: array, starts: array) -> StoredBlobs:
        """From runs of digests end to end, each in digest order, with their sizes (`starts`: where each
        begins): a walk's units, one fan-out directory each. Taken as they are where they follow one
        another in order (the walk queues the fan-out directories in name order); else joined in order,
        or merged where runs of digests of two lengths (sha256, sha512) interleave. No digest is in two runs."""
        bounds = [(start, end) for start, end in pairwise((*starts, len(digests))) if start < end]

        def in_order(runs: list[tuple[int, int]]) -> bool:
            return all(digests[one[1] - 1] < digests[other[0]] for one, other in pairwise(runs))

        if not in_order(bounds):
            bounds.sort(key=lambda run: digests[run[0]])
            ordered: list[Digest] = []
            ordered_sizes = array("q")
            if in_order(bounds):
                for start, end in bounds:
                    ordered += digests[start:end]
                    ordered_sizes += sizes[start:end]
            else:
                runs = (zip(digests[start:end], sizes[start:end], strict=True) for start, end in bounds)
                for digest, size in heapq.merge(*runs):
                    ordered.append(digest)
                    ordered_sizes.append(size)
            digests, sizes = ordered, ordered_sizes
        table = cls.__new__(cls)
        table._fill(digests, sizes)
        return table

    def _fill(self, digests: list[Digest], sizes: array) -> None:
        self.digests = digests
        try:  # 4 bytes a blob, not an int object; 8 where one is 4 GiB or more
            self.sizes = array("I", sizes)
        except OverflowError:
            self.sizes = sizes
        counts = array("I", bytes(4 * _PREFIXES))
        for digest in self.digests:
            counts[digest[0] << 8 | digest[1]] += 1
        self._starts = array("I", accumulate(counts, initial=0))  # bucket b: digests[starts[b]:starts[b + 1]]

    def __len__(self) -> int:
        return len(self.digests)

    def __iter__(self) -> Iterator[Digest]:
        return iter(self.digests)

    def __contains__(self, digest: object) -> bool:
        return self.position(digest) >= 0

    def __getitem__(self, digest: Digest) -> int:
        at = self.position(digest)
        if at < 0:
            raise KeyError(digest)
        return self.sizes[at]

    def get(self, digest: Digest, default: int | None = None) -> int | None:
        at = self.position(digest)
        return self.sizes[at] if at >= 0 else default

    def items(self) -> Iterator[tuple[Digest, int]]:  # type: ignore[override]
        return zip(self.digests, self.sizes, strict=True)

    def values(self) -> Iterator[int]:  # type: ignore[override]
        return iter(self.sizes)

    def position(self, digest: object) -> int:
        """Where `digest` is among the stored ones; -1 when it is not stored."""
        try:
            bucket = digest[0] << 8 | digest[1]  # type: ignore[index]
        except (IndexError, TypeError):  # shorter than any digest, or no digest at all: not stored
            return -1
        starts, digests = self._starts, self.digests
        end = starts[bucket + 1]
        at = bisect_left(digests, digest, starts[bucket], end)
        return at if at < end and digests[at] == digest else -1

    def stored(self, digest: Digest) -> Digest | None:
        """The stored object equal to `digest`, or None."""
        at = self.position(digest)
        return self.digests[at] if at >= 0 else None

    def shared(self, digests: Iterable[Digest], others: dict[Digest, Digest]) -> list[Digest]:
        """Each digest as the stored object equal to it, else as the one `others` holds (kept there when
        new): the same lookup as `position`, written out for the hundreds of thousands of links."""
        starts, stored, keep = self._starts, self.digests, others.setdefault
        shared = []
        for digest in digests:
            try:
                bucket = digest[0] << 8 | digest[1]
            except IndexError:
                shared.append(keep(digest, digest))
                continue
            end = starts[bucket + 1]
            at = bisect_left(stored, digest, starts[bucket], end)
            shared.append(stored[at] if at < end and stored[at] == digest else keep(digest, digest))
        return shared

    def positions(self, digests: Iterable[Digest]) -> list[int]:
        """The position of each stored one of `digests`, in their order (the rest left out): the same
        lookup as `position`, written out, as in `shared`."""
        starts, stored = self._starts, self.digests
        found = []
        for digest in digests:
            try:
                bucket = digest[0] << 8 | digest[1]
            except IndexError:
                continue
            end = starts[bucket + 1]
            at = bisect_left(stored, digest, starts[bucket], end)
            if at < end and stored[at] == digest:
                found.append(at)
        return found

    def mark(self, digests: Iterable[Digest], marks: bytearray) -> None:
        """Each stored one of `digests` marked in `marks`, a byte per stored blob by position (set to 1)."""
        for at in self.positions(digests):
            marks[at] = 1


_PREFIXES = 1 << 16


def in_digest_order(sizes: Mapping[Digest, int]) -> tuple[list[Digest], array]:
    """The digests sorted, and their sizes in that order (8 bytes each, not an int object)."""
    digests = sorted(sizes)
    return digests, array("q", map(sizes.__getitem__, digests))


class LinkDefect(str, Enum):
    EMPTY = "empty"
    TRAILING_WHITESPACE = "trailing whitespace"
    UPPERCASE = "uppercase hex"
    BAD_LENGTH = "wrong digest length"
    BAD_FORMAT = "not a digest"
    UNREADABLE = "unreadable"
    NOT_A_FILE = "not a regular file"
    TOO_LARGE = "too large"


@dataclass(frozen=True, slots=True)
class LinkContent:
    """What a link file says: a digest, or why it says none. `recoverable` is the digest a
    lenient reader would see (e.g. before a stray newline), for repair to restore."""

    digest: Digest | None
    defect: LinkDefect | None = None
    recoverable: Digest | None = None


def parse_link(raw: bytes) -> LinkContent:
    if not raw:
        return LinkContent(None, LinkDefect.EMPTY)
    if len(raw) > MAX_LINK_BYTES:
        return LinkContent(None, LinkDefect.TOO_LARGE)
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return LinkContent(None, LinkDefect.BAD_FORMAT)
    digest = parse_digest(text)
    if digest is not None:
        return LinkContent(digest)
    stripped = text.strip()
    if not stripped:
        return LinkContent(None, LinkDefect.EMPTY)  # whitespace only
    recoverable = parse_digest(stripped.lower())
    # Whitespace or case is the defect only where fixing it leaves a digest: `garbage!!\n` is not a digest.
    if stripped != text and recoverable is not None:
        return LinkContent(None, LinkDefect.TRAILING_WHITESPACE, recoverable)
    if stripped.lower() != stripped and recoverable is not None:
        return LinkContent(None, LinkDefect.UPPERCASE, recoverable)
    algorithm, sep, hex_part = stripped.partition(":")
    if sep and algorithm in HEX_LENGTH and _HEX.fullmatch(hex_part):
        return LinkContent(None, LinkDefect.BAD_LENGTH)
    return LinkContent(None, LinkDefect.BAD_FORMAT)


def is_alias(path_digest: Digest, content: Digest) -> bool:
    """A link under a non-canonical algorithm may legitimately hold the canonical digest."""
    return len(path_digest) != len(content) and algorithm_of(content) == BLOB_ALGORITHM


def valid_repository_component(name: str) -> bool:
    return _REPOSITORY_COMPONENT.fullmatch(name) is not None


def valid_tag(name: str) -> bool:
    return _TAG.fullmatch(name) is not None


def valid_upload_id(name: str) -> bool:
    return _UPLOAD_ID.fullmatch(name) is not None


def join(*parts: str) -> str:
    return "/".join(parts)


# Path specs: every storage path is built here, relative to the v2 directory.


def blob_dir(digest: Digest) -> str:
    hex_part = digest.hex()  # one string, not four joins: asked for every manifest read and blob reported
    return f"{BLOBS}/{ALGORITHM_BY_SIZE[len(digest)]}/{hex_part[:2]}/{hex_part}"


def blob_data_in_algorithm_dir(digest: Digest) -> str:
    """A blob's data relative to `blobs/<algorithm>`."""
    return join(_fan_out(digest), DATA)


def _fan_out(digest: Digest) -> str:
    hex_part = digest.hex()
    return join(hex_part[:2], hex_part)


def blob_data(digest: Digest) -> str:
    return f"{blob_dir(digest)}/{DATA}"


def repository_dir(repository: str) -> str:
    return join(REPOSITORIES, repository)


def layer_link_dir(repository: str, digest: Digest) -> str:
    return join(REPOSITORIES, repository, LAYERS, algorithm_of(digest), digest.hex())


def layer_link(repository: str, digest: Digest) -> str:
    return join(layer_link_dir(repository, digest), LINK)


def revision_dir(repository: str, digest: Digest) -> str:
    return join(REPOSITORIES, repository, MANIFESTS, REVISIONS, algorithm_of(digest), digest.hex())


def revision_link(repository: str, digest: Digest) -> str:
    return join(revision_dir(repository, digest), LINK)


def tag_dir(repository: str, tag: str) -> str:
    return join(REPOSITORIES, repository, MANIFESTS, TAGS, tag)


def tag_current_link(repository: str, tag: str) -> str:
    return join(tag_dir(repository, tag), CURRENT, LINK)


def tag_index_dir(repository: str, tag: str, digest: Digest) -> str:
    return join(tag_dir(repository, tag), INDEX, algorithm_of(digest), digest.hex())


def tag_index_link(repository: str, tag: str, digest: Digest) -> str:
    return join(tag_index_dir(repository, tag, digest), LINK)


def upload_dir(repository: str, upload_id: str) -> str:
    return join(REPOSITORIES, repository, UPLOADS, upload_id)


# Typed locations (distribution's path specs): each kind of place with its path, and `locate`,
# the inverse. Findings and actions hold locations; their paths are for output and the journal.


@dataclass(frozen=True, slots=True)
class Blob:
    digest: Digest
    path: str = field(init=False, compare=False, repr=False)  # rendered once: sorting and output read it

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", blob_dir(self.digest))

    @property
    def data(self) -> str:
        return blob_data(self.digest)


@dataclass(frozen=True, slots=True)
class RepositoryDir:
    repository: str
    path: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", repository_dir(self.repository))


@dataclass(frozen=True, slots=True)
class RepositoryPart:
    """One of a repository's own directories (`_layers`, `_manifests`, `_uploads`)."""

    repository: str
    part: str
    path: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", join(repository_dir(self.repository), self.part))


@dataclass(frozen=True, slots=True)
class LayerLink:
    repository: str
    digest: Digest
    path: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", layer_link_dir(self.repository, self.digest))


@dataclass(frozen=True, slots=True)
class Revision:
    repository: str
    digest: Digest
    path: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", revision_dir(self.repository, self.digest))


@dataclass(frozen=True, slots=True)
class TagDir:
    repository: str
    tag: str
    path: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", tag_dir(self.repository, self.tag))


@dataclass(frozen=True, slots=True)
class TagCurrent:
    repository: str
    tag: str
    path: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", join(tag_dir(self.repository, self.tag), CURRENT))


@dataclass(frozen=True, slots=True)
class TagIndexEntry:
    repository: str
    tag: str
    digest: Digest
    path: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", tag_index_dir(self.repository, self.tag, self.digest))


@dataclass(frozen=True, slots=True)
class UploadDir:
    repository: str
    upload_id: str
    path: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", upload_dir(self.repository, self.upload_id))


@dataclass(frozen=True, slots=True)
class LinkFile:
    """The `link` file of a link directory."""

    owner: LayerLink | Revision | TagCurrent | TagIndexEntry
    path: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", join(self.owner.path, LINK))


@dataclass(frozen=True, slots=True)
class Other:
    """A place with no kind of its own in the layout (or one whose shape is not canonical)."""

    path: str


Location = (
    Blob | RepositoryDir | RepositoryPart | LayerLink | Revision | TagDir | TagCurrent | TagIndexEntry
    | UploadDir | LinkFile | Other
)


def dated_paths(location: Location) -> tuple[str, ...]:
    """The place and the file in it whose modification times say when it last changed."""
    path = location.path
    if isinstance(location, (LayerLink, Revision, TagIndexEntry)):
        return (path, join(path, LINK))
    if isinstance(location, Blob):
        return (path, join(path, DATA))
    if isinstance(location, UploadDir):
        return (path, join(path, STARTEDAT))
    return (path,)


def locate(path: str) -> Location:
    """The inverse of every location's `path`: the typed location a relative path names, else `Other`."""
    parts = path.split("/")
    if parts[0] == BLOBS:
        digest = blob_digest_from_path(path)
        return Blob(digest) if digest is not None and len(parts) == 4 else Other(path)
    if parts[0] != REPOSITORIES or len(parts) < 2:
        return Other(path)
    marker = next((i for i in range(2, len(parts)) if parts[i] in REPOSITORY_MARKERS), None)
    if marker is None:
        name = "/".join(parts[1:])
        return RepositoryDir(name) if _names_repository(parts[1:]) else Other(path)
    name = "/".join(parts[1:marker])
    if not _names_repository(parts[1:marker]):
        return Other(path)
    rest = parts[marker:]
    located = _locate_in_repository(name, rest)
    return located if located is not None and located.path == path else Other(path)


def _locate_in_repository(name: str, rest: list[str]) -> Location | None:
    is_link = rest[-1] == LINK
    body = rest[:-1] if is_link else rest
    owner: Location | None = None
    if len(body) == 1:
        return None if is_link else RepositoryPart(name, body[0])
    if body[0] == LAYERS and len(body) == 3:
        owner = _digest_location(LayerLink, name, body[1], body[2])
    elif body[0] == MANIFESTS and len(body) == 4 and body[1] == REVISIONS:
        owner = _digest_location(Revision, name, body[2], body[3])
    elif body[0] == MANIFESTS and len(body) >= 3 and body[1] == TAGS and body[2]:
        tag = body[2]
        if len(body) == 3 and not is_link:
            return TagDir(name, tag)
        if len(body) == 4 and body[3] == CURRENT:
            owner = TagCurrent(name, tag)
        elif len(body) == 6 and body[3] == INDEX:
            digest = digest_key(body[4], body[5])
            owner = TagIndexEntry(name, tag, digest) if digest is not None else None
    elif body[0] == UPLOADS and len(body) == 2 and not is_link and body[1]:
        return UploadDir(name, body[1])
    if owner is None:
        return None
    return LinkFile(owner) if is_link else owner


def _names_repository(components: list[str]) -> bool:
    """As scan finds repositories: any components but reserved (`_`) or empty ones."""
    return bool(components) and all(c and not c.startswith("_") for c in components)


def _digest_location(kind, name: str, algorithm: str, hex_part: str):
    digest = digest_key(algorithm, hex_part)
    return kind(name, digest) if digest is not None else None


def at_or_under(path: str, places: AbstractSet[str]) -> bool:
    """Whether `path` is one of `places` or lies below one of them."""
    if not places:
        return False
    end = len(path)
    while end > 0:
        if path[:end] in places:
            return True
        end = path.rfind("/", 0, end)
    return False


def is_structural(relative: str) -> bool:
    """Directories of the fixed layout that stay even when empty: 2.8 finds repositories by `_layers`,
    and its GC aborts on a repository without `_manifests/tags`."""
    parts = relative.split("/")
    if relative in ("", BLOBS, REPOSITORIES) or (parts[0] == BLOBS and len(parts) == 2):
        return True
    if parts[-1] in REPOSITORY_MARKERS:
        return True
    return len(parts) >= 2 and parts[-1] in (REVISIONS, TAGS) and parts[-2] == MANIFESTS


def blob_digest_from_path(relative: str) -> Digest | None:
    """Inverse of `blob_dir`/`blob_data`: the digest a blob path names, if it is well formed."""
    parts = relative.split("/")
    if len(parts) not in (4, 5) or parts[0] != BLOBS:
        return None
    if len(parts) == 5 and parts[4] != DATA:
        return None
    _, algorithm, fan_out, hex_part = parts[:4]
    digest = digest_key(algorithm, hex_part)
    return digest if digest is not None and hex_part[:2] == fan_out else None


# Locating the v2 directory.


class NotARegistry(Exception):
    """PATH holds no registry storage; the message is one line for the user."""


def find_v2(path: str) -> str:
    """Accept a rootdirectory (it holds docker/registry/v2) or that v2 directory itself (its path ends in
    docker/registry/v2, as given or with its symbolic links resolved); return the v2 directory."""
    if not os.path.lexists(path):
        raise NotARegistry(f"{path}: no such file or directory")
    if os.path.islink(path) and not os.path.isdir(path):
        raise NotARegistry(f"{path}: a dangling symbolic link")
    if not os.path.isdir(path):
        raise NotARegistry(f"{path}: not a directory")
    nested = os.path.join(path, *V2_PARTS)
    if os.path.isdir(nested):
        return nested
    if any(_ends_in_v2(candidate) for candidate in (os.path.abspath(path), os.path.realpath(path))):
        return path
    looks_like = " (it looks like an OCI image layout)" if os.path.isfile(os.path.join(path, "oci-layout")) else ""
    raise NotARegistry(
        f"{path}: not a registry storage root{looks_like}: expected a rootdirectory holding "
        f"{'/'.join(V2_PARTS)}, or that {V2_PARTS[-1]} directory itself"
    )


def _ends_in_v2(path: str) -> bool:
    return tuple(path.split(os.sep)[-len(V2_PARTS):]) == V2_PARTS


def rootdirectory_of(v2: str) -> str:
    """The registry rootdirectory above a v2 directory, or the v2 directory itself when it stands alone."""
    head = os.path.abspath(v2)
    for part in reversed(V2_PARTS):
        head, tail = os.path.split(head)
        if tail != part:
            return os.path.abspath(v2)
    return head
