"""An audit as text for people and as one JSON document for machines."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import humanize
import orjson

from . import layout
from .analyze import Audit
from .findings import BY_ID, CATALOGUE, Finding, Severity

FORMAT = "registry-fsck/report/1"


def display(text: str) -> str:
    """Names that are not valid UTF-8 arrive with surrogate escapes: show their bytes escaped, never crash."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def size(count: int) -> str:
    return humanize.naturalsize(count, binary=True)


@dataclass(frozen=True, slots=True)
class Context:
    root: str  # the registry rootdirectory
    v2: str
    generated_at: datetime
    verified: bool


def reclaimable_bytes(findings: Iterable[Finding]) -> int:
    return sum(f.bytes for f in findings if f.severity is Severity.GARBAGE)


def finding_record(finding: Finding) -> dict:
    return {
        "id": finding.id,
        "severity": finding.severity.value,
        "repository": display(finding.repository) if finding.repository is not None else None,
        "tag": display(finding.tag) if finding.tag is not None else None,
        "digest": layout.format_digest(finding.digest) if finding.digest is not None else None,
        "path": display(finding.path),
        "bytes": finding.bytes,
        "message": display(finding.message),
    }


def summary(audit: Audit) -> dict:
    by_id: dict[str, dict] = {}
    for finding in audit.findings:
        entry = by_id.setdefault(finding.id, {"severity": finding.severity.value, "count": 0, "bytes": 0})
        entry["count"] += 1
        entry["bytes"] += finding.bytes
    by_severity = Counter(f.severity.value for f in audit.findings)
    by_repository: dict[str, dict] = defaultdict(lambda: {"findings": 0, "reclaimable_bytes": 0})
    for finding in audit.findings:
        if finding.repository is not None:
            entry = by_repository[display(finding.repository)]
            entry["findings"] += 1
            if finding.severity is Severity.GARBAGE:
                entry["reclaimable_bytes"] += finding.bytes
    totals = audit.totals
    return {
        "repositories": totals.repositories,
        "tags": totals.tags,
        "manifests": totals.manifests,
        "blobs": totals.blobs,
        "blob_bytes": totals.blob_bytes,
        "reclaimable_bytes": reclaimable_bytes(audit.findings),
        "by_severity": {s.value: by_severity.get(s.value, 0) for s in Severity},
        "by_id": {check.id: by_id[check.id] for check in CATALOGUE if check.id in by_id},
        "by_repository": dict(sorted(by_repository.items())),
    }


def to_json(audit: Audit, context: Context, exit_code: int) -> bytes:
    document = {
        "format": FORMAT,
        "root": display(context.root),
        "v2": display(context.v2),
        "generated_at": context.generated_at.isoformat(timespec="seconds"),
        "verified": context.verified,
        "complete": audit.complete,
        "recent_uploads": audit.recent_uploads,
        "exit_code": exit_code,
        "summary": summary(audit),
        "findings": [finding_record(f) for f in audit.findings],
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def to_text(audit: Audit, context: Context, limit: int) -> str:
    lines: list[str] = [f"registry-fsck audit of {display(context.v2)}"]
    if audit.recent_uploads:
        lines.append(
            f"WARNING: {audit.recent_uploads} upload(s) started in the last minutes: the registry looks live. "
            "In-flight pushes show up as orphans; stop the registry before repairing."
        )
    if not audit.complete:
        lines.append(
            "WARNING: INCOMPLETE: part of the tree could not be read (see dir-unreadable); "
            "blob verdicts may be wrong."
        )
    totals = audit.totals
    lines.append(
        f"{totals.repositories} repositories, {totals.tags} tags, {totals.manifests} manifests, "
        f"{totals.blobs} blobs ({size(totals.blob_bytes)})"
        + ("; every blob re-hashed" if context.verified else "")
    )
    counts = summary(audit)
    if not audit.findings:
        lines.append("no problems found")
        return "\n".join(lines) + "\n"
    severities = counts["by_severity"]
    lines.append(
        f"{severities['damage']} damage, {severities['garbage']} garbage, {severities['notice']} notices; "
        f"reclaimable: {size(counts['reclaimable_bytes'])}"
    )
    lines.append("")
    for check_id, entry in counts["by_id"].items():
        amount = f"  {size(entry['bytes'])}" if entry["bytes"] else ""
        lines.append(f"  {entry['severity']:<8} {check_id:<22} {entry['count']:>7}{amount}")
    grouped: dict[str, list[Finding]] = defaultdict(list)
    for finding in audit.findings:
        grouped[finding.id].append(finding)
    for check_id, group in grouped.items():
        lines.append("")
        lines.append(f"{check_id} ({len(group)}): {BY_ID[check_id].meaning}")
        for finding in group[:limit] if limit > 0 else group:
            lines.append("  " + _finding_line(finding))
        if 0 < limit < len(group):
            lines.append(f"  ... and {len(group) - limit} more (--limit 0 shows all, --json lists all)")
    return "\n".join(lines) + "\n"


def _finding_line(finding: Finding) -> str:
    where = display(finding.repository) if finding.repository else ""
    if finding.tag:
        where += f":{display(finding.tag)}"
    what = layout.format_digest(finding.digest) if finding.digest else display(finding.path)
    parts = [p for p in (where, what) if p]
    amount = f" ({size(finding.bytes)})" if finding.bytes else ""
    return f"{' '.join(parts)}: {display(finding.message)}{amount}"
