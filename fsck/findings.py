"""The catalogue of finding ids: one line each, with its severity and meaning.

The README's table is tested against this catalogue, so the two never drift.
Ids are stable: scripts match on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .layout import Digest


class Severity(str, Enum):
    DAMAGE = "damage"  # the registry will fail to serve something
    GARBAGE = "garbage"  # safe to reclaim
    NOTICE = "notice"  # worth knowing; not counted in the exit code

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Severity.DAMAGE: 0, Severity.GARBAGE: 1, Severity.NOTICE: 2}


@dataclass(frozen=True, slots=True)
class Check:
    id: str
    severity: Severity
    meaning: str


G, D, N = Severity.GARBAGE, Severity.DAMAGE, Severity.NOTICE

CATALOGUE: tuple[Check, ...] = (
    Check("tag-index-stale", G, "an entry in a tag's index/ other than its current digest: the tag was re-pushed"),
    Check("tag-index-dangling", G, "an entry in a tag's index/ whose manifest revision is gone"),
    Check("manifest-untagged", G, "a manifest revision no tag, live index or live subject reaches"),
    Check("blob-orphan", G, "a blob no manifest revision of any repository references (what garbage-collect deletes)"),
    Check("blob-unreachable", G, "a blob referenced only by manifests that are not live (freed by removing untagged manifests)"),
    Check("layer-link-unused", G, "a _layers link to a blob no live manifest of that repository references"),
    Check("layer-link-dangling", G, "a _layers link to a blob that is not stored"),
    Check("revision-dangling", G, "a revision link whose manifest data is missing and that no tag names"),
    Check("repo-empty", G, "a repository with no tags, no manifest revisions and no recent upload (still in /v2/_catalog)"),
    Check("upload-stale", G, "an unfinished upload older than --upload-age"),
    Check("dir-empty", G, "an empty directory left behind (API deletes leave empty revision directories)"),
    Check("tmp-leftover", G, "a *.tmp file left by an interrupted write"),
    Check("link-invalid", D, "a link file that is empty, not a valid digest, or not a regular file"),
    Check("link-mismatch", D, "a link whose digest differs from the digest in its path"),
    Check("tag-broken", D, "a tag whose current link is missing or invalid, or names a manifest that cannot be served"),
    Check("manifest-invalid", D, "manifest data that is empty, not JSON, oversized, or of no known schema"),
    Check("manifest-missing-ref", D, "a live manifest references a blob, config or child manifest that is not stored"),
    Check("layer-link-missing", D, "a blob a live manifest references is stored but not linked in _layers: pulls fail"),
    Check("blob-empty", D, "a 0-byte blob whose digest is not that of empty content (crash or full disk)"),
    Check("blob-size-mismatch", D, "a blob whose size differs from the size a live manifest's descriptor gives"),
    Check("blob-digest-mismatch", D, "with --verify: a blob whose content does not hash to its digest"),
    Check("repo-invisible", N, "a repository without _layers: registry 2.8 does not list it and its GC deletes its blobs"),
    Check("dir-unreadable", N, "a directory or file that could not be read: the audit is incomplete"),
    Check("unexpected", N, "a file or directory with no place in the layout, a symbolic link, or a name not in UTF-8"),
)

BY_ID: dict[str, Check] = {check.id: check for check in CATALOGUE}
_ORDER: dict[str, int] = {check.id: position for position, check in enumerate(CATALOGUE)}


@dataclass(frozen=True, slots=True)
class Finding:
    id: str
    path: str  # relative to the v2 directory
    message: str
    repository: str | None = None
    tag: str | None = None
    digest: Digest | None = None
    bytes: int = 0  # what removing it would free; counted once across findings

    @property
    def severity(self) -> Severity:
        return BY_ID[self.id].severity

    def sort_key(self) -> tuple:
        return (self.severity.rank, _ORDER[self.id], self.repository or "", self.path)
