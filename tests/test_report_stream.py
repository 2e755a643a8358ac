"""The report written as a stream: byte for byte the document and text the whole-list report made,
from a finding log or a tuple, and memory that does not grow with the number of findings."""

from __future__ import annotations

import gc
import io
import os
import random
import shlex
import tracemalloc
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from clirun import DEMO
from hypothesis import given, settings
from hypothesis import strategies as st

from fsck import aside, checks, layout, report, service
from fsck.catalogue import BY_ID, CATALOGUE, KEY_PREFIX, Finding, Id, Severity
from fsck.plan import DAMAGE_IDS, DEFAULT_IDS, UNTAGGED_IDS
from fsck.report import display, finding_record, size
from fsck.spool import FindingLog

# The report as it was before streaming (findings a sorted tuple, owners in audit.blob_owners), with
# the one intended change to the document: "verified_subset" after "verified".


def reference_summary(audit: checks.Audit) -> dict:
    by_id: dict[str, dict] = {}
    for finding in audit.findings:
        entry = by_id.setdefault(finding.id, {"severity": finding.severity.value, "count": 0, "bytes": 0})
        entry["count"] += 1
        entry["bytes"] += finding.bytes
    by_severity = Counter(f.severity.value for f in audit.findings)
    by_repository: dict[str, dict] = defaultdict(lambda: {"findings": 0, "reclaimable_bytes": 0})
    shared = 0
    for finding in audit.findings:
        if finding.repository is not None:
            entry = by_repository[display(finding.repository)]
            entry["findings"] += 1
            if finding.severity is Severity.GARBAGE:
                entry["reclaimable_bytes"] += finding.bytes
        elif finding.severity is Severity.GARBAGE and finding.bytes:
            # The pipeline names the owner on the finding; a hand-made audit in blob_owners.
            owner = finding.owner or (audit.blob_owners.get(finding.digest) if finding.digest is not None else None)
            if owner is None:
                shared += finding.bytes
            else:
                by_repository[display(owner)]["reclaimable_bytes"] += finding.bytes
    totals = audit.totals
    ignored = {}
    if audit.ignored is not None:
        ignored = {"ignored": {c.id.value: audit.ignored[c.id] for c in CATALOGUE if c.id in audit.ignored}}
    return {
        "repositories": totals.repositories,
        "tags": totals.tags,
        "manifests": totals.manifests,
        "blobs": totals.blobs,
        "blob_bytes": totals.blob_bytes,
        "reclaimable_bytes": sum(f.bytes for f in audit.findings if f.severity is Severity.GARBAGE),
        "by_severity": {s.value: by_severity.get(s.value, 0) for s in Severity},
        "by_id": {check.id.value: by_id[check.id] for check in CATALOGUE if check.id in by_id},
        "by_repository": dict(sorted(by_repository.items())),
        "shared_reclaimable_bytes": shared,
        **ignored,
    }


def reference_json(audit: checks.Audit, context: report.Context, exit_code: int) -> bytes:
    document = {
        "format": report.FORMAT,
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
        "summary": reference_summary(audit),
        "findings": [finding_record(f) for f in audit.findings],
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def reference_text(audit: checks.Audit, context: report.Context, limit: int, held: report.Held | None = None) -> str:
    lines: list[str] = [f"registry-fsck audit of {display(context.v2)}"]
    if audit.recent_uploads:
        lines.append(
            f"WARNING: {audit.recent_uploads} upload(s) started in the last minutes: the registry looks live. "
            "In-flight pushes show up as orphans; stop the registry before repairing."
        )
        lines.extend("  " + line for line in report.recent_upload_lines(audit, context.generated_at))
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
    counts = reference_summary(audit)
    if "ignored" in counts:
        left_out = ", ".join(f"{finding_id} {count}" for finding_id, count in counts["ignored"].items())
        lines.append(f"ignored (--ignore): {left_out}")
    if not audit.findings:
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
    grouped: dict[Id, list[Finding]] = defaultdict(list)
    for finding in audit.findings:
        grouped[finding.id].append(finding)
    for check_id, group in grouped.items():
        lines.append("")
        lines.append(f"{check_id.value} ({len(group)}): {BY_ID[check_id].meaning}")
        for finding in group[:limit] if limit > 0 else group:
            lines.append("  " + report._finding_line(finding))
        if 0 < limit < len(group):
            lines.append(f"  ... and {len(group) - limit} more (--limit 0 shows all, --json lists all)")
    lines.extend(report._by_repository_lines(counts, limit))
    lines.extend(reference_next_lines(audit, context, held))
    return "\n".join(lines) + "\n"


def reference_next_lines(audit: checks.Audit, context: report.Context, held: report.Held | None) -> list[str]:
    found = {f.id for f in audit.findings if f.path not in audit.untagged_only}
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


# Generated audits: names that are not UTF-8 (surrogate escapes), control characters, names that
# display alike ("\udcff" and a literal backslash-x-f-f), every id and location kind.

NAMES = st.one_of(
    st.sampled_from(["library/busybox", "a/b", "\udcff", "\\xff", "tab\there", "new\nline", "ünï"]),
    st.binary(min_size=1, max_size=6).map(lambda raw: raw.decode("utf-8", "surrogateescape")),
    st.text(min_size=1, max_size=6),
)
DIGESTS = st.sampled_from([bytes([n]) * 32 for n in range(6)] + [b"\x09" * 48, b"\x0a" * 64])


@st.composite
def a_finding(draw: st.DrawFn) -> Finding:
    repository = draw(NAMES)
    digest = draw(DIGESTS)
    tag = draw(NAMES)
    location = draw(st.sampled_from([
        layout.Blob(digest), layout.LayerLink(repository, digest), layout.Revision(repository, digest),
        layout.TagDir(repository, tag), layout.TagIndexEntry(repository, tag, digest),
        layout.LinkFile(layout.TagCurrent(repository, tag)), layout.Other(draw(NAMES)),
    ]))
    return Finding(
        draw(st.sampled_from(list(Id))), location, draw(st.text(max_size=12) | NAMES),
        draw(st.none() | st.just(repository)), draw(st.none() | st.just(tag)), draw(st.none() | st.just(digest)),
        draw(st.integers(0, 2**50) | st.just(0)),
    )


@st.composite
def audits(draw: st.DrawFn) -> checks.Audit:
    findings = tuple(sorted(draw(st.lists(a_finding(), max_size=40)), key=Finding.sort_key))
    blobs = [f.digest for f in findings if f.repository is None and f.digest is not None]
    owners = {digest: draw(NAMES) for digest in blobs if draw(st.booleans())}
    links = [f.path for f in findings if f.id is Id.LAYER_LINK_UNUSED]
    now = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    recent = tuple(
        checks.RecentUpload(draw(NAMES), "0a1b2c3d-0000-4000-8000-00000000000" + str(n), now - timedelta(minutes=n),
                            draw(st.booleans()), now + timedelta(minutes=15 - n))
        for n in range(draw(st.integers(0, 7)))
    )
    ignored = draw(st.none() | st.dictionaries(st.sampled_from(list(Id)), st.integers(0, 9), max_size=3))
    return checks.Audit(
        findings,
        checks.Totals(*draw(st.tuples(*(st.integers(0, 10**12) for _ in range(5))))),
        draw(st.booleans()),
        tuple(draw(st.lists(st.text(max_size=10), max_size=2))),
        None, (), None, frozenset(),
        ignored=ignored, recent=recent, blob_owners=owners,
        untagged_only=frozenset(draw(st.lists(st.sampled_from(links), max_size=3))) if links else frozenset(),
    )


contexts = st.builds(
    report.Context, NAMES, NAMES, st.just(datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)),
    st.booleans(), st.none() | st.sampled_from(["1/7", "7/7"]),
)


def as_log(audit: checks.Audit, seed: int, **bounds: int) -> tuple[checks.Audit, checks.Audit]:
    """The audit as the checks make it: findings added in any order to a log, each garbage blob's
    owner on its finding; and beside it the audit as they made it before, the same findings sorted
    (ties in the order added) in a tuple."""
    findings = list(audit.findings)
    random.Random(seed).shuffle(findings)
    log = FindingLog(**bounds)
    for finding in findings:
        if finding.repository is None and finding.digest is not None:
            finding = replace(finding, owner=finding.owner or audit.blob_owners.get(finding.digest))
        log.add(finding)
    return replace(audit, findings=log, blob_owners={}), replace(audit, findings=tuple(sorted(findings, key=Finding.sort_key)))


def streamed(audit: checks.Audit, context: report.Context, exit_code: int) -> bytes:
    out = io.BytesIO()
    report.write_json(audit, context, exit_code, out)
    return out.getvalue()


@settings(max_examples=200, deadline=None)
@given(audits(), contexts, st.integers(0, 15), st.integers(0, 2**32), st.integers(1, 5))
def test_the_streamed_document_is_byte_for_byte_the_whole_one(audit, context, exit_code, seed, bound):
    expected = reference_json(audit, context, exit_code)
    assert report.to_json(audit, context, exit_code) == expected  # from a tuple, owners from blob_owners
    from_log, before = as_log(audit, seed, memory_bound=bound, batch=2, fan_in=2)
    expected_from_log = reference_json(before, context, exit_code)
    assert streamed(from_log, context, exit_code) == expected_from_log
    assert streamed(from_log, context, exit_code) == expected_from_log  # the log reads again
    assert orjson.loads(expected)["verified_subset"] == context.verified_subset


@settings(max_examples=40, deadline=None)
@given(audits(), contexts, st.integers(0, 15), st.integers(0, 2**32), st.integers(1, 5))
def test_a_document_written_in_halves_is_byte_for_byte_the_whole_one(audit, context, exit_code, seed, bound):
    """From a few findings on, here: the later ids' records from a forked child, copied in after."""
    from_log, before = as_log(audit, seed, memory_bound=bound, batch=2, fan_in=2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report, "_HALF_AT_LEAST", 1)
        patch.setattr(report, "usable_cores", lambda: 2)
        assert report.to_json(audit, context, exit_code) == reference_json(audit, context, exit_code)
        assert streamed(from_log, context, exit_code) == reference_json(before, context, exit_code)


def findings_of_ids(counts: dict[Id, int]) -> FindingLog:
    log = FindingLog(memory_bound=7, batch=3)
    for finding_id, count in counts.items():
        for n in range(count):
            digest = n.to_bytes(32, "big")
            log.add(Finding(finding_id, layout.Blob(digest), f"finding {n}", digest=digest, bytes=n))
    return log


def an_audit_of(log: FindingLog) -> checks.Audit:
    return checks.Audit(log, checks.Totals(1, 0, 0, len(log), 0), True, (), None, (), None, frozenset())


A_CONTEXT = report.Context("/srv/registry", "/srv/registry/docker/registry/v2", datetime(2024, 5, 6, tzinfo=timezone.utc), False)
THREE_IDS = {Id.MANIFEST_UNTAGGED: 40, Id.BLOB_ORPHAN: 30, Id.BLOB_UNREACHABLE: 50}


def writes_here(monkeypatch) -> list[int]:
    """The findings this process writes itself, one entry a call (a child's calls are its own)."""
    written: list[int] = []
    write_records = report._write_records

    def counting(rows, out, separator):
        rows = list(rows)
        written.append(len(rows))
        return write_records(iter(rows), out, separator)

    monkeypatch.setattr(report, "_write_records", counting)
    return written


def test_the_later_ids_are_written_by_a_child_and_copied_in(tmp_path, monkeypatch):
    expected = streamed(an_audit_of(findings_of_ids(THREE_IDS)), A_CONTEXT, 4)  # below the bound: one process
    writers = tmp_path / "writers"
    records_to_file = report._records_to_file

    def noting_the_writer(rows):
        with open(writers, "a") as note:
            note.write(f"{os.getpid()}\n")
        return records_to_file(rows)

    monkeypatch.setattr(report, "_HALF_AT_LEAST", 50)
    monkeypatch.setattr(report, "usable_cores", lambda: 2)
    monkeypatch.setattr(report, "_records_to_file", noting_the_writer)
    written_here = writes_here(monkeypatch)
    assert streamed(an_audit_of(findings_of_ids(THREE_IDS)), A_CONTEXT, 4) == expected
    writing = writers.read_text().split()
    assert len(writing) == 1 and int(writing[0]) != os.getpid()
    assert written_here == [70]  # manifest-untagged and blob-orphan here; blob-unreachable's 50 copied in


def test_on_one_core_or_with_a_small_side_no_child_is_forked(monkeypatch):
    def no_child(_work):
        raise AssertionError("a child forked")

    monkeypatch.setattr(aside, "Aside", no_child)
    monkeypatch.setattr(report, "_HALF_AT_LEAST", 50)
    monkeypatch.setattr(report, "usable_cores", lambda: 1)
    written_here = writes_here(monkeypatch)
    assert streamed(an_audit_of(findings_of_ids(THREE_IDS)), A_CONTEXT, 4)
    monkeypatch.setattr(report, "usable_cores", lambda: 2)
    monkeypatch.setattr(report, "_HALF_AT_LEAST", 51)  # the smaller side holds 50
    assert streamed(an_audit_of(findings_of_ids(THREE_IDS)), A_CONTEXT, 4)
    assert written_here == [120, 120]


@pytest.mark.parametrize("failing", ["the fork", "the child"])
def test_where_no_child_writes_them_this_process_writes_every_record(failing, monkeypatch):
    expected = streamed(an_audit_of(findings_of_ids(THREE_IDS)), A_CONTEXT, 4)
    monkeypatch.setattr(report, "_HALF_AT_LEAST", 1)
    monkeypatch.setattr(report, "usable_cores", lambda: 2)
    if failing == "the fork":
        def no_child(_work):
            raise aside.Failed("cannot fork: out of memory")

        monkeypatch.setattr(aside, "Aside", no_child)
    else:
        def failing_child(_rows):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(report, "_records_to_file", failing_child)
    written_here = writes_here(monkeypatch)
    assert streamed(an_audit_of(findings_of_ids(THREE_IDS)), A_CONTEXT, 4) == expected
    assert written_here == [70, 50]  # its own ids, then the child's


@pytest.mark.parametrize(("counts", "ours", "theirs"), [
    ({Id.MANIFEST_UNTAGGED: 40, Id.BLOB_ORPHAN: 30, Id.BLOB_UNREACHABLE: 50}, 2, 1),  # 70 | 50, not 40 | 80
    ({Id.MANIFEST_UNTAGGED: 10, Id.BLOB_ORPHAN: 100}, 1, 1),
    ({Id.BLOB_ORPHAN: 120}, 1, 0),  # one id: nothing to cut
])
def test_the_ids_are_cut_where_both_sides_come_closest_to_half(counts, ours, theirs, monkeypatch):
    monkeypatch.setattr(report, "_HALF_AT_LEAST", 10)
    mine, the_childs = report._halves(findings_of_ids(counts), 2)
    in_order = sorted(counts, key=lambda finding_id: KEY_PREFIX[finding_id])
    assert (len(mine), len(the_childs)) == (ours, theirs)
    assert mine == frozenset(in_order[:ours]) and the_childs == frozenset(in_order[ours:])
    assert report._halves(findings_of_ids(counts), 1) == (frozenset(counts), frozenset())


held_values = st.none() | st.builds(
    report.Held, NAMES, st.integers(0, 3), st.integers(0, 2**40), st.none() | st.just("2024-05-01T00:00:00Z"),
)


@settings(max_examples=200, deadline=None)
@given(audits(), contexts, st.integers(-1, 3), held_values, st.integers(0, 2**32))
def test_the_text_report_is_the_one_made_from_the_whole_list(audit, context, limit, held, seed):
    expected = reference_text(audit, context, limit, held)
    assert report.to_text(audit, context, limit, held) == expected
    from_log, before = as_log(audit, seed, memory_bound=3, batch=2, fan_in=2)
    assert report.to_text(from_log, context, limit, held) == reference_text(before, context, limit, held)


def test_no_findings_is_an_empty_list():
    now = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    audit = checks.Audit((), checks.Totals(0, 0, 0, 0, 0), True, (), None, (), None, frozenset())
    context = report.Context("/var/lib/registry", "/var/lib/registry/docker/registry/v2", now, False)
    expected = reference_json(audit, context, 0)
    assert b'"findings": []\n}\n' in expected
    assert report.to_json(audit, context, 0) == expected
    assert report.to_json(replace(audit, findings=FindingLog()), context, 0) == expected


def test_the_demo_trees_audit_is_reported_as_before():
    """The real pipeline on the demo tree: with --ignore, with findings as a tuple and as a log."""
    target = service.resolve_target(str(DEMO), None)
    now = datetime.now(timezone.utc)
    audited = service.audit(target, checks.Policy(now=now))
    assert audited.findings
    context = report.Context(target.root, target.v2, now, False)
    for audit in (audited, checks.ignore(audited, frozenset({Id.BLOB_ORPHAN, Id.TAG_INDEX_STALE}))):
        expected = reference_json(audit, context, 4)
        assert report.to_json(audit, context, 4) == expected
        from_log, before = as_log(audit, 1, memory_bound=2, batch=1, fan_in=2)
        assert streamed(from_log, context, 4) == reference_json(before, context, 4) == expected
        assert report.to_text(from_log, context, 2) == reference_text(before, context, 2)


# Memory: what adding and writing takes does not grow with the number of findings.

REPOSITORIES = tuple(f"team{n % 40}/service-{n}" for n in range(200))  # one tree: the same repositories


def synthetic(count: int) -> Iterator[Finding]:
    """Findings as an audit of a big store adds them, made one at a time: orphans in digest order,
    unused links repository by repository."""
    for n in range(count):
        digest = n.to_bytes(32, "big")
        repository = REPOSITORIES[n % len(REPOSITORIES)]
        if n % 2:
            yield Finding(Id.BLOB_ORPHAN, layout.Blob(digest), "no manifest references this blob",
                          digest=digest, bytes=n, owner=repository if n % 3 else None)
        else:
            yield Finding(Id.LAYER_LINK_UNUSED, layout.LayerLink(repository, digest),
                          "no live manifest of this repository references this blob", repository, digest=digest)


def peak_while_reporting(count: int) -> int:
    now = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    context = report.Context("/srv/registry", "/srv/registry/docker/registry/v2", now, False)
    gc.collect()
    tracemalloc.start()
    try:
        log = FindingLog()
        for finding in synthetic(count):
            log.add(finding)
        audit = checks.Audit(log, checks.Totals(200, 0, 0, count, count), True, (), None, (), None, frozenset())
        with open("/dev/null", "wb") as sink:
            report.write_json(audit, context, 4, sink)
        text = report.to_text(audit, context, 10)
        assert text.count("\n  ") < 100  # ten per id, the counts, the repositories and the next steps
        log.close()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_number_of_findings():
    """Peaks traced, not timed: 200,000 findings within 5% of 20,000 (the whole-list report held
    about 1 KB a finding: 200 MB here), and a few MB in all."""
    few = peak_while_reporting(20_000)
    many = peak_while_reporting(200_000)
    assert many <= few * 1.05, (few, many)
    assert many < 12 * 2**20, many
