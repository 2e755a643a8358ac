"""`ls` as text for people and as one JSON document (`registry-fsck/ls/1`) for machines."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import orjson

from . import layout
from .layout import Digest
from .listing import Catalog, Platform, Referrer, RepositoryListing, RepositoryRow, TagRow
from .report import display, size

FORMAT = "registry-fsck/ls/1"


def _digest(digest: Digest | None) -> str | None:
    return layout.format_digest(digest) if digest is not None else None


def _when(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment is not None else None


def _repository_record(row: RepositoryRow) -> dict:
    return {
        "name": display(row.name), "tags": row.tags, "manifests": row.manifests, "uploads": row.uploads,
        "catalog": row.catalog.value, "note": row.note,
    }


def _platform_record(platform: Platform) -> dict:
    return {
        "os": platform.os, "architecture": platform.architecture, "variant": platform.variant,
        "digest": _digest(platform.digest), "size": platform.size,
    }


def _referrer_record(referrer: Referrer) -> dict:
    return {
        "digest": _digest(referrer.digest), "kind": referrer.kind.value, "artifact_type": referrer.artifact_type,
        "tag": display(referrer.tag) if referrer.tag is not None else None,
    }


def _tag_record(tag: TagRow) -> dict:
    return {
        "tag": display(tag.name),
        "digest": _digest(tag.digest),
        "kind": tag.kind.value,
        "media_type": tag.media_type,
        "artifact_type": tag.artifact_type,
        "size": tag.size,
        "pushed": _when(tag.pushed),
        "platforms": [_platform_record(p) for p in tag.platforms],
        "subject": _digest(tag.subject),
        "referrers": [_referrer_record(r) for r in tag.referrers],
        "problem": tag.problem,
    }


def to_json(
    root: str, v2: str, complete: bool, exit_code: int,
    repositories: Sequence[RepositoryRow], repository: RepositoryListing | None,
) -> bytes:
    document: dict = {"format": FORMAT, "root": display(root), "v2": display(v2), "complete": complete,
                      "exit_code": exit_code}
    if repository is None:
        document["repositories"] = [_repository_record(r) for r in repositories]
    else:
        document["repository"] = {**_repository_record(repository.repository), "untagged": repository.untagged}
        document["tags"] = [_tag_record(t) for t in repository.tags]
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def _table(rows: Sequence[Sequence[str]], right: frozenset[int] = frozenset()) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
        for row in rows
    ]


_MARK = {Catalog.LISTED: "listed", Catalog.EMPTY: "EMPTY", Catalog.HIDDEN: "HIDDEN"}


def repositories_text(rows: Sequence[RepositoryRow], complete: bool) -> str:
    if not rows:
        return "no repositories\n" + _partial(complete)
    table = [("REPOSITORY", "TAGS", "MANIFESTS", "UPLOADS", "CATALOG")]
    for row in rows:
        mark = _MARK[row.catalog] + (f": {row.note}" if row.note else "")
        table.append((display(row.name), str(row.tags), str(row.manifests), str(row.uploads), mark))
    listed = sum(r.catalog is not Catalog.HIDDEN for r in rows)
    empty = sum(r.catalog is Catalog.EMPTY for r in rows)
    hidden = len(rows) - listed
    summary = (
        f"{len(rows)} {'repository' if len(rows) == 1 else 'repositories'}; /v2/_catalog lists {listed}"
        f"{f' ({empty} of them empty)' if empty else ''}{f' and hides {hidden}' if hidden else ''}"
    )
    return "\n".join([*_table(table, frozenset({1, 2, 3})), "", summary]) + "\n" + _partial(complete)


def _partial(complete: bool) -> str:
    return "" if complete else "warning: part of the tree could not be read: this view is partial\n"


def _kind(tag: TagRow) -> str:
    return tag.kind.value


def _pushed(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment is not None else "-"


def repository_text(listed: RepositoryListing, complete: bool) -> str:
    row = listed.repository
    catalog = {Catalog.LISTED: "listed by /v2/_catalog"}.get(row.catalog, f"{row.catalog.value}: {row.note}")
    head = (
        f"{display(row.name)}: {row.tags} {'tag' if row.tags == 1 else 'tags'}, {row.manifests} "
        f"{'manifest' if row.manifests == 1 else 'manifests'} ({listed.untagged} untagged), "
        f"{row.uploads} {'upload' if row.uploads == 1 else 'uploads'}; {catalog}"
    )
    if not listed.tags:
        return head + "\nno tags\n" + _partial(complete)
    table = [("TAG", "KIND", "SIZE", "PUSHED", "DIGEST")]
    details: dict[int, list[str]] = {}
    for number, tag in enumerate(listed.tags, start=1):
        table.append((
            display(tag.name), _kind(tag), size(tag.size) if tag.size is not None else "-", _pushed(tag.pushed),
            _digest(tag.digest) or "-",
        ))
        details[number] = _detail_lines(tag)
    lines = _table(table, frozenset({2}))
    out = [lines[0]]
    for number, line in enumerate(lines[1:], start=1):
        out.append(line)
        out.extend(f"    {detail}" for detail in details[number])
    return head + "\n" + "\n".join(out) + "\n" + _partial(complete)


def _detail_lines(tag: TagRow) -> list[str]:
    lines = []
    if tag.problem:
        lines.append(f"BROKEN: {tag.problem}")
    if tag.artifact_type:
        lines.append(f"artifact type {tag.artifact_type}")
    if tag.subject is not None:
        lines.append(f"for {_digest(tag.subject)}")
    for platform in tag.platforms:
        shown = size(platform.size) if platform.size is not None else "not stored"
        lines.append(f"{platform.name:<16} {shown:>10}  {_digest(platform.digest)}")
    for referrer in tag.referrers:
        what = referrer.kind.value + (f" ({referrer.artifact_type})" if referrer.artifact_type else "")
        via = f"tag {display(referrer.tag)}" if referrer.tag is not None else "referrer"
        lines.append(f"{what}: {via} {_digest(referrer.digest)}")
    return lines
