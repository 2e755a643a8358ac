"""An audit as text for people and as one JSON document for machines."""

from __future__ import annotations

import io
import os
import shlex
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from itertools import islice
from typing import BinaryIO

import humanize
import orjson

from . import aside, layout
from .apply import Outcome
from .catalogue import BY_ID, CATALOGUE, KEY_PREFIX, Finding, Id, Severity
from .checks import Audit
from .layout import Digest
from .plan import DAMAGE_IDS, DEFAULT_IDS, UNTAGGED_IDS, Action, Plan
from .removal import Item, RemovalPlan
from .spool import FindingLog, row_of
from .store import usable_cores

FORMAT = "registry-fsck/report/1"


_CONTROL = {code: f"\\x{code:02x}" for code in (*range(32), 127)}


def display(text: str) -> str:
    """Names that are not valid UTF-8 arrive with surrogate escapes: show their bytes escaped, never crash.
    Control characters are escaped too, so a name never breaks a line of the report."""
    if text.isprintable():  # no surrogate and no control character: nothing to escape (nearly every name)
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace").translate(_CONTROL)


def size(count: int) -> str:
    return humanize.naturalsize(count, binary=True)


@dataclass(frozen=True, slots=True)
class Context:
    root: str  # the registry rootdirectory
    v2: str
    generated_at: datetime
    verified: bool
    verified_subset: str | None = None  # "N/M" with --verify-subset: the slice of the blobs re-hashed
    store: dict | None = None  # on a bucket: {"kind": "s3", "requests": {kind: count}}; None on disk (no key)


def reclaimable_bytes(findings: Iterable[Finding]) -> int:
    return sum(f.bytes for f in findings if f.severity is Severity.GARBAGE)


def findings_of(audit: Audit) -> FindingLog:
    """The audit's findings as a log, whose counters the summary reads. Findings given as a sequence
    are put in a log (in report order), each garbage blob finding without an owner given its owner
    from `audit.blob_owners`."""
    if isinstance(audit.findings, FindingLog):
        return audit.findings
    return FindingLog.of(_with_owners(audit.findings, audit.blob_owners))


def _with_owners(findings: Iterable[Finding], owners: Mapping[Digest, str]) -> Iterator[Finding]:
    for finding in findings:
        if finding.owner is None and finding.repository is None and finding.digest in owners:
            finding = replace(finding, owner=owners[finding.digest])
        yield finding


# Each id's text and its severity's, looked up once per finding instead of read through two enums.
_ID_TEXTS = {check.id: (check.id.value, check.severity.value) for check in CATALOGUE}


def finding_record(finding: Finding) -> dict:
    return _row_record(row_of(finding))


def _row_record(row: tuple) -> dict:
    """The record of a finding given as a row (`spool.ROW_FIELDS`)."""
    finding_id, path, message, repository, tag, digest, size, _ = row
    id_text, severity = _ID_TEXTS[finding_id]
    # `display` called only where there is something to escape: a report holds a million of these.
    return {
        "id": id_text,
        "severity": severity,
        "repository": repository if repository is None or repository.isprintable() else display(repository),
        "tag": tag if tag is None or tag.isprintable() else display(tag),
        "digest": layout.format_digest(digest) if digest is not None else None,
        "path": path if path.isprintable() else display(path),
        "bytes": size,
        "message": message if message.isprintable() else display(message),
    }


def summary(audit: Audit, log: FindingLog | None = None) -> dict:
    """From the log's counters: no pass over the findings. `log`: `findings_of(audit)`, when at hand."""
    counts = (log if log is not None else findings_of(audit)).counts
    by_repository: dict[str, dict] = {}
    for name, tally in counts.by_repository.items():
        # Names that are not UTF-8 may display alike: their counts add up under the one name shown.
        entry = by_repository.setdefault(display(name), {"findings": 0, "reclaimable_bytes": 0})
        entry["findings"] += tally.findings
        entry["reclaimable_bytes"] += tally.reclaimable_bytes
    totals = audit.totals
    return {
        "repositories": totals.repositories,
        "tags": totals.tags,
        "manifests": totals.manifests,
        "blobs": totals.blobs,
        "blob_bytes": totals.blob_bytes,
        "reclaimable_bytes": counts.reclaimable_bytes,
        "by_severity": {severity.value: count for severity, count in counts.by_severity.items()},
        "by_id": {
            finding_id.value: {"severity": finding_id.severity.value, "count": tally.count, "bytes": tally.bytes}
            for finding_id, tally in counts.by_id.items()
        },
        "by_repository": dict(sorted(by_repository.items())),
        "shared_reclaimable_bytes": counts.shared_reclaimable_bytes,
        **_ignored(audit.ignored if audit.ignored is not None else counts.ignored),
    }


def _ignored(ignored: Mapping[Id, int] | None) -> dict:
    """With --ignore only: how many findings of each ignored id were left out."""
    if ignored is None:
        return {}
    return {"ignored": {check.id.value: ignored[check.id] for check in CATALOGUE if check.id in ignored}}


_RECORDS_PER_WRITE = 512
_NO_FINDINGS = b"[]\n}"
# A batch of records dumped as the findings of a document of their own comes out indented as they sit in
# the report: what lies between this head and tail is written as it is.
_BATCH_HEAD = b'{\n  "findings": [\n'
_BATCH_TAIL = b"\n  ]\n}"


def write_json(audit: Audit, context: Context, exit_code: int, out: BinaryIO) -> None:
    """The report as one JSON document (orjson's two-space indentation), written as it is made: the
    findings a few hundred at a time, in report order, so the document is never held whole."""
    log = findings_of(audit)
    head = orjson.dumps(_document(audit, context, exit_code, log), option=orjson.OPT_INDENT_2)
    assert head.endswith(b'"findings": ' + _NO_FINDINGS)  # the findings are the document's last key
    if not log:
        out.write(head + b"\n")
        return
    out.write(head[: -len(_NO_FINDINGS)] + b"[")
    ours, theirs = _halves(log, usable_cores())
    rows = log.rows(ours)  # the log sealed before a child is forked: one sort of what it holds, not two
    out.flush()  # nothing of this process's left in a buffer the child holds a copy of
    with _writing_aside(log, theirs) as child:
        separator = b",\n" if _write_records(rows, out, b"\n") else b"\n"
        if theirs and not (child is not None and _copied(child, out, separator)):
            _write_records(log.rows(theirs), out, separator)
    out.write(b"\n  ]\n}\n")


# Where several cores are there and each side has this many findings at least, a forked child writes the
# records of the later ids while this process writes the earlier ones (a second core for what takes a
# few seconds a million findings); fewer take less time than the fork and the copy.
_HALF_AT_LEAST = 10_000


def _halves(log: FindingLog, cores: int) -> tuple[frozenset[Id], frozenset[Id]]:
    """The ids with findings, in report order, cut where the findings on both sides come closest to half
    of them: this process's first, the child's after (none where not worth a fork)."""
    ids = sorted(log.ids(), key=KEY_PREFIX.__getitem__)
    total = len(log)
    cut, larger, before = len(ids), total, 0
    for at, finding_id in enumerate(ids):  # cut before `at`: `before` findings this side
        if max(before, total - before) < larger:
            cut, larger = at, max(before, total - before)
        before += log.count(finding_id)
    if cores < 2 or total - larger < _HALF_AT_LEAST:
        return frozenset(ids), frozenset()
    return frozenset(ids[:cut]), frozenset(ids[cut:])


@contextmanager
def _writing_aside(log: FindingLog, ids: frozenset[Id]) -> Iterator[aside.Aside | None]:
    """A child writing the records of `ids` (None where there are none, or no child could be forked),
    stopped on the way out."""
    if not ids:
        yield None
        return
    try:
        child = aside.Aside(lambda: _records_to_file(log.rows(ids)))
    except aside.Failed:
        yield None
        return
    with child:
        yield child


def _write_records(rows: Iterator[tuple], out: BinaryIO, separator: bytes) -> bool:
    """The records of `rows` as the report's findings, the first after `separator`; whether there was one."""
    wrote = False
    while records := [_row_record(row) for row in islice(rows, _RECORDS_PER_WRITE)]:
        batch = orjson.dumps({"findings": records}, option=orjson.OPT_INDENT_2)
        out.write(separator + batch[len(_BATCH_HEAD) : -len(_BATCH_TAIL)])
        separator = b",\n"
        wrote = True
    return wrote


def _records_to_file(rows: Iterator[tuple]) -> tuple[None, list[BinaryIO]]:
    """In the child: the records in an anonymous temporary file (the system's, as the finding log's
    runs), the first after no separator."""
    written = tempfile.TemporaryFile()
    _write_records(rows, written, b"")
    written.flush()
    return None, [written]


_COPY_BYTES = 1 << 20


def _copied(child: aside.Aside, out: BinaryIO, separator: bytes) -> bool:
    """What the child wrote, after `separator`; False, and nothing written, when it failed."""
    try:
        _, files = child.result()
    except aside.Failed:  # this process writes them itself
        return False
    with files[0] as written:
        written.seek(0)  # the descriptor came over from the child, its offset where the child left it
        if chunk := written.read(_COPY_BYTES):
            out.write(separator + chunk)
            shutil.copyfileobj(written, out, _COPY_BYTES)
    return True


def to_json(audit: Audit, context: Context, exit_code: int) -> bytes:
    buffer = io.BytesIO()
    write_json(audit, context, exit_code, buffer)
    return buffer.getvalue()


def _document(audit: Audit, context: Context, exit_code: int, log: FindingLog) -> dict:
    """The document with its findings left empty: `write_json` writes them."""
    return {
        "format": FORMAT,
        "root": display(context.root),
        "v2": display(context.v2),
        "generated_at": context.generated_at.isoformat(timespec="seconds"),
        "verified": context.verified,
        "verified_subset": context.verified_subset,
        "complete": audit.complete,
        "uncertain": list(audit.uncertain),
        "recent_uploads": audit.recent_uploads,
        "recent_upload_details": [
            {"path": display(u.path), "repository": display(u.repository), "started": u.started.isoformat(timespec="seconds"),
             "dated": u.dated, "quiet_from": u.quiet_from.isoformat(timespec="seconds")}
            for u in audit.recent
        ],
        "exit_code": exit_code,
        "summary": summary(audit, log),
        **({"store": context.store} if context.store is not None else {}),
        "findings": [],
    }


def to_text(audit: Audit, context: Context, limit: int, held: Held | None = None) -> str:
    lines: list[str] = [f"registry-fsck audit of {display(context.v2)}"]
    if audit.recent_uploads:
        lines.append(
            f"WARNING: {audit.recent_uploads} upload(s) started in the last minutes: the registry looks live. "
            "In-flight pushes show up as orphans; stop the registry before repairing."
        )
        lines.extend("  " + line for line in recent_upload_lines(audit, context.generated_at))
    if not audit.complete:
        lines.append(
            "WARNING: INCOMPLETE: part of the tree could not be read or was not followed (see dir-unreadable, "
            "and symbolic links under unexpected); verdicts that depend on it may be wrong."
        )
    for reason in audit.uncertain:
        lines.append(f"WARNING: {reason}; blob verdicts may be wrong (repair leaves blobs alone).")
    totals = audit.totals
    lines.append(
        f"{totals.repositories} repositories, {totals.tags} tags, {totals.manifests} manifests, "
        f"{totals.blobs} blobs ({size(totals.blob_bytes)})"
        + ("; every blob re-hashed" if context.verified
           else f"; verified: subset {context.verified_subset}" if context.verified_subset else "")
    )
    log = findings_of(audit)
    counts = summary(audit, log)
    if "ignored" in counts:
        left_out = ", ".join(f"{finding_id} {count}" for finding_id, count in counts["ignored"].items())
        lines.append(f"ignored (--ignore): {left_out}")
    if not log:
        lines.append("no problems found")
        return "\n".join(lines) + "\n"
    severities = counts["by_severity"]
    lines.append(
        f"{severities['damage']} damage, {severities['garbage']} garbage, "
        f"{severities['notice']} {'notice' if severities['notice'] == 1 else 'notices'}; "
        f"reclaimable: {size(counts['reclaimable_bytes'])}"
    )
    lines.append("")
    for check_id, entry in counts["by_id"].items():
        amount = f"  {size(entry['bytes'])}" if entry["bytes"] else ""
        lines.append(f"  {entry['severity']:<8} {check_id:<22} {entry['count']:>7}{amount}")
    # One pass in report order, where each id's findings follow each other; at most `limit` of each kept.
    found = set() if audit.untagged_only else set(log.ids())
    check_id: Id | None = None
    for finding in log:
        if audit.untagged_only and finding.path not in audit.untagged_only:
            found.add(finding.id)
        if finding.id is not check_id:
            lines.extend(_more_line(log, check_id, limit))
            check_id = finding.id
            shown = 0
            lines.append("")
            lines.append(f"{check_id.value} ({log.count(check_id)}): {BY_ID[check_id].meaning}")
        if limit <= 0 or shown < limit:
            lines.append("  " + _finding_line(finding))
            shown += 1
    lines.extend(_more_line(log, check_id, limit))
    lines.extend(_by_repository_lines(counts, limit))
    lines.extend(_next_lines(found, audit, context, held))
    return "\n".join(lines) + "\n"


def _more_line(log: FindingLog, check_id: Id | None, limit: int) -> list[str]:
    count = log.count(check_id) if check_id is not None else 0
    if 0 < limit < count:
        return [f"  ... and {count - limit} more (--limit 0 shows all, --json lists all)"]
    return []


def _by_repository_lines(counts: dict, limit: int) -> list[str]:
    """Where the reclaimable bytes are, largest first; what no one repository alone uses on its own line."""
    reclaimable = sorted(
        ((entry["reclaimable_bytes"], name) for name, entry in counts["by_repository"].items() if entry["reclaimable_bytes"]),
        key=lambda pair: (-pair[0], pair[1]),
    )
    if not reclaimable and not counts["shared_reclaimable_bytes"]:
        return []
    lines = ["", "reclaimable by repository:"]
    shown = reclaimable[:limit] if limit > 0 else reclaimable
    width = max((len(name) for _, name in shown), default=0)
    lines.extend(f"  {name:<{width}}  {size(amount)}" for amount, name in shown)
    if len(shown) < len(reclaimable):
        rest = sum(amount for amount, _ in reclaimable[len(shown):])
        lines.append(f"  ... and {len(reclaimable) - len(shown)} more repositories, {size(rest)}")
    if counts["shared_reclaimable_bytes"]:
        lines.append(f"  shared garbage (blobs no one repository alone uses): {size(counts['shared_reclaimable_bytes'])}")
    return lines


@dataclass(frozen=True, slots=True)
class Held:
    """What a quarantine still holds: the space a repair has not yet given back."""

    quarantine: str
    runs: int
    bytes: int
    oldest: str | None  # when the oldest run holding anything started


def _next_lines(found: set[Id], audit: Audit, context: Context, held: Held | None) -> list[str]:
    """The commands that act on what was found (`found`: the ids but for layer-link-unused that only
    --untagged frees), and what earlier repairs still hold."""
    found |= {Id.MANIFEST_UNTAGGED} if audit.untagged_only else set()
    target = shlex.quote(display(context.root))
    steps = []
    if found & DEFAULT_IDS:
        steps.append((f"registry-fsck repair --dry-run {target}", "what a repair removes by default"))
    if found & UNTAGGED_IDS:
        steps.append((f"registry-fsck repair --dry-run --untagged {target}", "also untagged manifests and what they free"))
    if found & DAMAGE_IDS:
        steps.append((f"registry-fsck repair --dry-run --fix-damage {target}", "also mend the damage it can"))
    width = max((len(command) for command, _ in steps), default=0)
    steps = [f"{command:<{width}}  # {why}" for command, why in steps]
    lines = []
    if steps:
        lines += ["", "next:", *("  " + step for step in steps)]
    if held is not None and held.runs:
        since = f", the oldest from {held.oldest}" if held.oldest else ""
        lines += [
            "",
            f"the quarantine {display(held.quarantine)} holds {size(held.bytes)} from {held.runs} "
            f"run{'' if held.runs == 1 else 's'}{since}: "
            "`registry-fsck runs` lists them, `registry-fsck purge` frees the space",
        ]
    return lines


def recent_upload_lines(audit: Audit, now: datetime, limit: int = 5) -> list[str]:
    """The recent uploads by name, with their age and when the quiet period ends (newest first)."""
    lines = []
    for upload in audit.recent[:limit]:
        since = "started" if upload.dated else "last modified (no valid startedat)"
        age = humanize.naturaldelta(max(now - upload.started, timedelta(0)))
        lines.append(
            f"{display(upload.path)}: {since} {age} ago, at {upload.started:%Y-%m-%d %H:%M:%S} UTC; "
            f"quiet from {upload.quiet_from:%Y-%m-%d %H:%M:%S} UTC"
        )
    if len(audit.recent) > limit:
        lines.append(f"... and {len(audit.recent) - limit} more")
    if audit.recent:
        lines.append(f"the quiet period ends {max(u.quiet_from for u in audit.recent):%Y-%m-%d %H:%M:%S} UTC "
                     "if no upload starts before")
    return lines


def _finding_line(finding: Finding) -> str:
    where = display(finding.repository) if finding.repository else ""
    if finding.tag:
        where += f":{display(finding.tag)}"
    what = layout.format_digest(finding.digest) if finding.digest else display(finding.path)
    parts = [p for p in (where, what) if p]
    amount = f" ({size(finding.bytes)})" if finding.bytes else ""
    return f"{' '.join(parts)}: {display(finding.message)}{amount}"


# Repair: the plan, and what a run did.

PLAN_FORMAT = "registry-fsck/plan/1"


def action_record(action: Action) -> dict:
    return {
        "action": action.kind.value,
        "path": display(action.path),
        "finding": action.finding.value,
        "bytes": action.bytes,
        "repository": display(action.repository) if action.repository is not None else None,
        "tag": display(action.tag) if action.tag is not None else None,
        "digest": layout.format_digest(action.digest) if action.digest is not None else None,
        "content": layout.format_digest(action.content) if action.content is not None else None,
        "reason": display(action.reason) if action.reason is not None else None,
    }


def _counts(items: Iterable[Id]) -> dict[str, int]:
    counted = Counter(items)
    return {check.id.value: counted[check.id] for check in CATALOGUE if counted[check.id]}


def plan_document(plan: Plan, context: Context, quarantine: str | None, outcome: Outcome | None,
                  exit_code: int, elsewhere: Sequence[tuple[str, str]] = ()) -> dict:
    document = {
        "format": PLAN_FORMAT,
        "root": display(context.root),
        "v2": display(context.v2),
        "generated_at": context.generated_at.isoformat(timespec="seconds"),
        "quarantine": display(quarantine) if quarantine else None,
        "quarantines_elsewhere": [{"link": display(link), "quarantine": display(other)}
                                  for link, other in elsewhere if other != quarantine],
        "exit_code": exit_code,
        "summary": {
            "actions": len(plan.actions),
            "bytes": plan.bytes,
            "by_finding": _counts(a.finding for a in plan.actions),
            "skipped": len(plan.skipped),
            "left": _counts(f.id for f in _left(plan)),
        },
        "actions": [action_record(a) for a in plan.actions],
        "skipped": [dict(finding_record(s.finding), reason=s.reason) for s in plan.skipped],
        "needs_repush": [display(t) for t in plan.needs_repush],
        "outcome": None,
    }
    if outcome is not None:
        document["outcome"] = {
            "run": outcome.run,
            "done": len(outcome.done),
            "vanished": len(outcome.vanished),
            "failed": [dict(action_record(a), error=e) for a, e in outcome.failed],
            "directories_removed": outcome.directories_removed,
            "bytes_freed": outcome.bytes if outcome.deleted else 0,
            "bytes_quarantined": 0 if outcome.deleted else outcome.bytes,
        }
    return document


def plan_to_text(
    plan: Plan, context: Context, limit: int, quarantine: str | None, delete: bool,
    elsewhere: Sequence[tuple[str, str]] = (), command: str = "repair", *, directories: bool = True,
) -> str:
    """`elsewhere`: (followed link, quarantine) for links on other file systems than v2's; `directories`:
    whether the store has any (a bucket has not: a prefix ends with its last key)."""
    lines = [f"registry-fsck {command} of {display(context.v2)}"]
    if not plan.actions:
        lines.append("nothing to do")
    else:
        where = "deleted" if delete else f"moved to the quarantine {display(quarantine or '')}"
        lines.append(f"plan: {len(plan.actions)} actions, {size(plan.bytes)} {where}")
        for link, other in elsewhere:
            if other != quarantine:
                lines.append(f"  what is below {display(link)}/ (another file system): {display(other)}")
        for finding_id, count in _counts(a.finding for a in plan.actions).items():
            lines.append(f"  {finding_id:<22} {count:>7}")
        shown = plan.actions[:limit] if limit > 0 else plan.actions
        lines.append("")
        lines.extend("  " + _action_line(a) for a in shown)
        if len(shown) < len(plan.actions):
            lines.append(f"  ... and {len(plan.actions) - len(shown)} more (--limit 0 shows all, --json lists all)")
        if directories:
            lines.append("  then: directories this leaves empty")
    if plan.skipped:
        lines.append("")
        lines.append(f"skipped ({len(plan.skipped)}):")
        for reason, count in Counter(s.reason for s in plan.skipped).items():
            lines.append(f"  {count:>7}  {reason}")
    left = _counts(f.id for f in _left(plan))
    if left:
        lines.append("")
        lines.append("left as they are: " + ", ".join(f"{k} {v}" for k, v in left.items()))
        if any(k.value in left for k in UNTAGGED_IDS):
            lines.append("  (untagged manifests stay unless --untagged: clients may pull them by digest)")
    if plan.needs_repush:
        lines.append("")
        lines.append("re-push these tags, whose content is quarantined as corrupt: " + ", ".join(plan.needs_repush))
    return "\n".join(lines) + "\n"


def _left(plan: Plan) -> list[Finding]:
    """What the plan leaves and has not listed as skipped (one verdict per item)."""
    skipped = {(s.finding.id, s.finding.path) for s in plan.skipped}
    return [f for f in plan.leftover if (f.id, f.path) not in skipped]


def _action_line(action: Action) -> str:
    amount = f" ({size(action.bytes)})" if action.bytes else ""
    content = f" <- {layout.format_digest(action.content)}" if action.content is not None else ""
    why = f", {display(action.reason)}" if action.reason is not None else ""
    return f"{action.kind.value:<10} {display(action.path)}{content}  [{action.finding.value}{why}]{amount}"


# Removal (rm, retain): what goes, what is left, then the plan.


def item_record(item: Item) -> dict:
    return {
        "repository": display(item.repository),
        "tag": display(item.tag) if item.tag is not None else None,
        "digest": layout.format_digest(item.digest) if item.digest is not None else None,
        "reason": display(item.reason),
    }


def removal_record(removal: RemovalPlan) -> dict:
    """The additions of `rm` and `retain` to the plan document."""
    return {
        "tags": [item_record(i) for i in removal.tags],
        "manifests": [item_record(i) for i in removal.manifests],
        "repositories": [item_record(i) for i in removal.repositories],
        "protected": [dict(item_record(i), kind=i.kind) for i in removal.protected],
        "refused": [dict(item_record(r.item), kind=r.item.kind, kept_by=display(r.kept_by)) for r in removal.refused],
        "bytes": removal.bytes,
        "garbage_before": {"findings": removal.garbage_before, "bytes": removal.garbage_before_bytes},
    }


def removal_to_text(
    removal: RemovalPlan, context: Context, limit: int, quarantine: str | None, delete: bool,
    elsewhere: Sequence[tuple[str, str]] = (), command: str = "rm", *, directories: bool = True,
) -> str:
    """What the removal takes (tags, manifests, repositories) and leaves, then its plan."""
    planned = plan_to_text(
        removal.plan, context, limit, quarantine, delete, elsewhere, command, directories=directories
    ).split("\n")
    lines = [planned[0]]
    counts = (f"{len(removal.tags)} {'tag' if len(removal.tags) == 1 else 'tags'}, "
              f"{len(removal.manifests)} {'manifest' if len(removal.manifests) == 1 else 'manifests'}, "
              f"{len(removal.repositories)} {'repository' if len(removal.repositories) == 1 else 'repositories'}")
    lines.append(f"removes {counts}; frees {size(removal.bytes)}")
    for kind, items in (("tag", removal.tags), ("manifest", removal.manifests), ("repository", removal.repositories)):
        shown = items[:limit] if limit > 0 else items
        for item in shown:
            target = f" -> {layout.format_digest(item.digest)}" if kind == "tag" and item.digest is not None else ""
            lines.append(f"  {kind:<10} {display(str(item))}{target}  ({display(item.reason)})")
        if len(shown) < len(items):
            lines.append(f"  ... and {len(items) - len(shown)} more {kind} items (--limit 0 shows all)")
    for item in removal.protected:
        lines.append(f"protected, left: {display(str(item))} ({item.kind})")
    for refusal in removal.refused:
        lines.append(f"refused: {display(refusal.message)}")
    if removal.garbage_before:
        lines.append(
            f"left alone: {removal.garbage_before} garbage {'finding' if removal.garbage_before == 1 else 'findings'} "
            f"({size(removal.garbage_before_bytes)}) that were there before: `registry-fsck repair` is for those"
        )
    return "\n".join([*lines, *planned[1:]])


def outcome_to_text(
    outcome: Outcome, quarantine: str, elsewhere: Sequence[tuple[str, str]] = (), *, directories: bool = True
) -> str:
    """`directories`: whether the store has any (a bucket has not)."""
    removed = f", {outcome.directories_removed} empty directories removed" if directories else ""
    lines = [f"run {outcome.run}: {len(outcome.done)} done{removed}"]
    if outcome.deleted:
        lines.append(f"freed {size(outcome.bytes)}")
    else:
        others = sorted({other for _, other in elsewhere} - {quarantine})
        also = "".join(f" and {display(os.path.join(other, outcome.run))}" for other in others)
        lines.append(
            f"moved {size(outcome.bytes)} to {display(os.path.join(quarantine, outcome.run))}{also}; freed 0 bytes "
            f"until `registry-fsck purge` (undo with `registry-fsck undo ... {outcome.run}`)"
        )
    if outcome.vanished:
        lines.append(f"{len(outcome.vanished)} already gone")
    for action, error in outcome.failed:
        lines.append(f"FAILED {display(action.path)}: {error}")
    return "\n".join(lines) + "\n"
