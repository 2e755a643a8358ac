"""The catalogue of finding ids: one row each (git's fsck.h table).

A row carries the id's severity and meaning and what repair does with it: whether it
acts by default, with --untagged, with --fix-damage or never; at which step of the plan's
order; whether acting stays safe when part of the tree could not be read. The README's
table is tested against this catalogue. Ids are stable: scripts match on them. No id is
spelled anywhere else in the package: code names `Id` members.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum, IntEnum

from .layout import Digest, Location


class Severity(str, Enum):
    DAMAGE = "damage"  # the registry will fail to serve something
    GARBAGE = "garbage"  # safe to reclaim
    NOTICE = "notice"  # worth knowing; not counted in the exit code

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Severity.DAMAGE: 0, Severity.GARBAGE: 1, Severity.NOTICE: 2}


class Repair(str, Enum):
    """When repair acts on a finding."""

    DEFAULT = "default"  # nothing a client can still ask for
    UNTAGGED = "untagged"  # with --untagged: clients may still pull it by digest
    DAMAGE = "damage"  # with --fix-damage
    NEVER = "never"


class Step(IntEnum):
    """The plan's order: every state in between is one the registry serves correctly."""

    MEND = 0  # links written first: they only add what a pull needs
    TAG_INDEX = 1  # nothing resolves through stale index entries
    MANIFESTS = 2  # no tag names them any more
    LINKS = 3  # after the manifests that used them; emptied repositories
    BLOBS = 4  # never one a remaining link or kept manifest names
    UPLOADS = 5  # stale uploads and *.tmp leftovers
    DIRECTORIES = 6  # empty directories, then those the run leaves empty


class Id(str, Enum):
    TAG_INDEX_STALE = "tag-index-stale"
    TAG_INDEX_DANGLING = "tag-index-dangling"
    MANIFEST_UNTAGGED = "manifest-untagged"
    BLOB_ORPHAN = "blob-orphan"
    BLOB_UNREACHABLE = "blob-unreachable"
    LAYER_LINK_UNUSED = "layer-link-unused"
    LAYER_LINK_DANGLING = "layer-link-dangling"
    REVISION_DANGLING = "revision-dangling"
    REPO_EMPTY = "repo-empty"
    UPLOAD_STALE = "upload-stale"
    DIR_EMPTY = "dir-empty"
    TMP_LEFTOVER = "tmp-leftover"
    LINK_INVALID = "link-invalid"
    LINK_MISMATCH = "link-mismatch"
    TAG_BROKEN = "tag-broken"
    MANIFEST_INVALID = "manifest-invalid"
    MANIFEST_MISSING_REF = "manifest-missing-ref"
    LAYER_LINK_MISSING = "layer-link-missing"
    BLOB_EMPTY = "blob-empty"
    BLOB_SIZE_MISMATCH = "blob-size-mismatch"
    BLOB_DIGEST_MISMATCH = "blob-digest-mismatch"
    REPO_INVISIBLE = "repo-invisible"
    UPLOAD_UNDATED = "upload-undated"
    DIR_UNREADABLE = "dir-unreadable"
    UNEXPECTED = "unexpected"
    TAG_REMOVED = "tag-removed"

    def __str__(self) -> str:
        return self.value

    @property
    def check(self) -> Check:
        return BY_ID[self]

    @property
    def severity(self) -> Severity:
        return BY_ID[self].severity


@dataclass(frozen=True, slots=True)
class Check:
    id: Id
    severity: Severity
    repair: Repair
    step: Step | None  # None: repair never acts on it
    safe_when_incomplete: bool  # acting does not depend on what could not be read
    meaning: str
    # Whether it can occur on a bucket: a bucket has no directories (a prefix ends with its last key).
    on_buckets: bool = True

    @property
    def stores(self) -> str:
        """Where it can occur, as the README's table of findings says it."""
        return "disk, S3" if self.on_buckets else "disk"


G, D, N = Severity.GARBAGE, Severity.DAMAGE, Severity.NOTICE
DEFAULT, UNTAGGED, DAMAGE, NEVER = Repair.DEFAULT, Repair.UNTAGGED, Repair.DAMAGE, Repair.NEVER
S = Step

CATALOGUE: tuple[Check, ...] = (
    Check(Id.TAG_INDEX_STALE, G, DEFAULT, S.TAG_INDEX, True,
          "an entry in a tag's index/ other than its current digest: the tag was re-pushed"),
    Check(Id.TAG_INDEX_DANGLING, G, DEFAULT, S.TAG_INDEX, False,
          "an entry in a tag's index/ whose manifest revision is gone"),
    Check(Id.MANIFEST_UNTAGGED, G, UNTAGGED, S.MANIFESTS, False,
          "a manifest revision no tag, live index or live subject reaches"),
    Check(Id.BLOB_ORPHAN, G, DEFAULT, S.BLOBS, False,
          "a blob no manifest revision of any repository references (what garbage-collect deletes)"),
    Check(Id.BLOB_UNREACHABLE, G, UNTAGGED, S.BLOBS, False,
          "a blob referenced only by manifests that are not live (freed by removing untagged manifests)"),
    Check(Id.LAYER_LINK_UNUSED, G, DEFAULT, S.LINKS, False,
          "a _layers link to a blob no live manifest of that repository references"),
    Check(Id.LAYER_LINK_DANGLING, G, DEFAULT, S.LINKS, False, "a _layers link to a blob that is not stored"),
    Check(Id.REVISION_DANGLING, G, DEFAULT, S.MANIFESTS, False,
          "a revision link whose manifest data is missing and that no tag names"),
    Check(Id.REPO_EMPTY, G, DEFAULT, S.LINKS, False,
          "a repository with no tags, no manifest revisions and no recent upload (still in /v2/_catalog)"),
    Check(Id.UPLOAD_STALE, G, DEFAULT, S.UPLOADS, True, "an unfinished upload older than --upload-age"),
    Check(Id.DIR_EMPTY, G, DEFAULT, S.DIRECTORIES, True,
          "an empty directory left behind (API deletes leave empty revision directories)", on_buckets=False),
    Check(Id.TMP_LEFTOVER, G, DEFAULT, S.UPLOADS, True, "a *.tmp file left by an interrupted write"),
    Check(Id.LINK_INVALID, D, DAMAGE, S.MEND, True,
          "a link file that is empty, not a valid digest, or not a regular file"),
    Check(Id.LINK_MISMATCH, D, NEVER, None, False, "a link whose digest differs from the digest in its path"),
    Check(Id.TAG_BROKEN, D, DAMAGE, S.MEND, True,
          "a tag whose current link is missing or invalid, or names a manifest that cannot be served"),
    Check(Id.MANIFEST_INVALID, D, DAMAGE, S.BLOBS, False,
          "manifest data that is empty, not JSON, oversized, or of no known schema"),
    Check(Id.MANIFEST_MISSING_REF, D, NEVER, None, False,
          "a live manifest references a blob, config or child manifest that is not stored"),
    Check(Id.LAYER_LINK_MISSING, D, DAMAGE, S.MEND, True,
          "a blob a live manifest references is stored but not linked in _layers: pulls fail"),
    Check(Id.BLOB_EMPTY, D, DAMAGE, S.BLOBS, True,
          "a 0-byte blob whose digest is not that of empty content (crash or full disk)"),
    Check(Id.BLOB_SIZE_MISMATCH, D, NEVER, None, False,
          "a blob whose size differs from the size a live manifest's descriptor gives"),
    Check(Id.BLOB_DIGEST_MISMATCH, D, DAMAGE, S.BLOBS, True,
          "with --verify: a blob whose content does not hash to its digest"),
    Check(Id.REPO_INVISIBLE, N, NEVER, None, False,
          "a repository without _layers: registry 2.8 does not list it and its GC deletes its blobs"),
    Check(Id.UPLOAD_UNDATED, N, NEVER, None, False,
          "an unfinished upload whose startedat is missing or not a time: aged by its directory's last change"),
    Check(Id.DIR_UNREADABLE, N, NEVER, None, False,
          "a directory or file that could not be read: the audit is incomplete"),
    Check(Id.UNEXPECTED, N, NEVER, None, False,
          "a file or directory with no place in the layout, a symbolic link, or a name not in UTF-8"),
    # Never found by the audit: what `rm` and `retain` remove as asked (its current link and index).
    Check(Id.TAG_REMOVED, G, NEVER, S.TAG_INDEX, True, "a tag rm or retain removes as asked; the audit never reports it"),
)

BY_ID: dict[Id, Check] = {check.id: check for check in CATALOGUE}
# A finding's sort key begins with its severity's rank and its id's place in the catalogue.
KEY_PREFIX: dict[Id, tuple[int, int]] = {
    check.id: (check.severity.rank, position) for position, check in enumerate(CATALOGUE)
}
NOT_ON_BUCKETS: frozenset[Id] = frozenset(check.id for check in CATALOGUE if not check.on_buckets)


def ids_repaired(repair: Repair) -> frozenset[Id]:
    return frozenset(check.id for check in CATALOGUE if check.repair is repair)


class UnknownId(ValueError):
    pass


def parse_ids(text: str) -> frozenset[Id]:
    """`a,b,c` as ids; an unknown one raises UnknownId naming every unknown id."""
    names = {part.strip() for part in text.split(",") if part.strip()}
    known = {check.id.value: check.id for check in CATALOGUE}
    unknown = sorted(names - set(known))
    if unknown:
        raise UnknownId(", ".join(unknown))
    return frozenset(known[name] for name in names)


@dataclass(frozen=True, slots=True, init=False)
class Finding:
    id: Id
    location: Location  # where it is; its path (relative to the v2 directory) is for output only
    message: str
    repository: str | None = None
    tag: str | None = None
    digest: Digest | None = None
    bytes: int = 0  # what removing it would free; counted once across findings
    # A garbage blob's only user: the one repository whose bytes these are (the report's by-repository
    # sums read it). Not part of the finding's record.
    owner: str | None = field(default=None, compare=False)

    def __init__(
        self, id: Id, location: Location, message: str, repository: str | None = None, tag: str | None = None,
        digest: Digest | None = None, bytes: int = 0, owner: str | None = None,
    ) -> None:
        # The generated __init__ of a frozen class sets each field through object.__setattr__; the slots
        # set directly cost half as much (an audit makes findings by the hundred thousand).
        set_id, set_location, set_message, set_repository, set_tag, set_digest, set_bytes, set_owner = _FINDING_SLOTS
        set_id(self, id)
        set_location(self, location)
        set_message(self, message)
        set_repository(self, repository)
        set_tag(self, tag)
        set_digest(self, digest)
        set_bytes(self, bytes)
        set_owner(self, owner)

    @property
    def path(self) -> str:
        return self.location.path

    @property
    def severity(self) -> Severity:
        return BY_ID[self.id].severity

    def sort_key(self) -> tuple:
        rank, order = KEY_PREFIX[self.id]
        return (rank, order, self.repository or "", self.path)


_FINDING_SLOTS = tuple(getattr(Finding, f.name).__set__ for f in fields(Finding))
