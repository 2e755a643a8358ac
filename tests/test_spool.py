"""The finding log: report order whatever the order added, counters that match a recount, bounded
files and memory, temporary files that go away."""

from __future__ import annotations

import gc
import os
import pickle
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsck import layout
from fsck.catalogue import Finding, Id, Severity
from fsck.spool import ROW_FIELDS, FindingLog, row_of

REPOSITORIES = ("a", "a/b", "library/busybox", "z")
DIGESTS = tuple(bytes([n]) * 32 for n in range(4)) + (b"\x07" * 64,)  # a sha512 too


def _locations(repository: str, digest: bytes, tag: str) -> st.SearchStrategy:
    return st.sampled_from([
        layout.Blob(digest),
        layout.LayerLink(repository, digest),
        layout.Revision(repository, digest),
        layout.TagDir(repository, tag),
        layout.TagIndexEntry(repository, tag, digest),
        layout.LinkFile(layout.Revision(repository, digest)),
        layout.LinkFile(layout.TagCurrent(repository, tag)),
        layout.UploadDir(repository, "0a1b2c3d-0000-4000-8000-000000000000"),
        layout.RepositoryDir(repository),
        layout.Other(f"repositories/{repository}/odd"),
    ])


@st.composite
def findings(draw: st.DrawFn) -> Finding:
    repository = draw(st.sampled_from(REPOSITORIES))
    digest = draw(st.sampled_from(DIGESTS))
    tag = draw(st.sampled_from(("latest", "v1")))
    in_repository = draw(st.booleans())
    return Finding(
        draw(st.sampled_from(list(Id))),
        draw(_locations(repository, digest, tag)),
        draw(st.text(max_size=8)),  # ties in the sort key keep the order added: messages tell them apart
        repository if in_repository else None,
        draw(st.none() | st.just(tag)),
        draw(st.none() | st.just(digest)),
        draw(st.integers(0, 2**40)),
        draw(st.none() | st.sampled_from(REPOSITORIES)),
    )


def whole(finding: Finding) -> tuple:
    """Every field, also those equality leaves out (the owner, a location's rendered path)."""
    location = finding.location
    owner = getattr(location, "owner", None)
    return (finding, finding.owner, type(location), location.path, type(owner), owner and owner.path)


bounds = st.fixed_dictionaries({
    "memory_bound": st.integers(1, 9), "batch": st.integers(1, 4), "fan_in": st.integers(2, 4),
})


@settings(max_examples=150, deadline=None)
@given(st.lists(findings(), max_size=120), bounds)
def test_findings_come_back_in_sorted_order_across_the_spill_boundary(added, sizes):
    with FindingLog(**sizes) as log:
        for finding in added:
            log.add(finding)
        expected = [whole(f) for f in sorted(added, key=Finding.sort_key)]
        assert [whole(f) for f in log] == expected
        assert [whole(f) for f in log] == expected  # a second read
        assert list(log.rows()) == [row_of(f) for f in sorted(added, key=Finding.sort_key)]
        assert len(log) == len(added)
        assert log.spilled == (len(added) >= sizes["memory_bound"])


@settings(max_examples=150, deadline=None)
@given(st.lists(findings(), max_size=120), st.randoms(use_true_random=False), bounds)
def test_findings_made_in_order_id_by_id_come_back_as_made(made, shuffle, sizes):
    """As checks make them: each id's findings in report order, the ids interleaved. An id's runs then
    follow one another and are read one after the other; where they overlap (ties included), merged."""
    by_id: dict[Id, list[Finding]] = {}
    for finding in sorted(made, key=Finding.sort_key):
        by_id.setdefault(finding.id, []).append(finding)
    queues = [list(reversed(findings)) for findings in by_id.values()]
    added = []
    while queues:
        queue = shuffle.choice(queues)
        added.append(queue.pop())
        if not queue:
            queues.remove(queue)
    with FindingLog(**sizes) as log:
        for finding in added:
            log.add(finding)
        assert [whole(f) for f in log] == [whole(f) for f in sorted(added, key=Finding.sort_key)]
        assert list(log.rows()) == [row_of(f) for f in sorted(added, key=Finding.sort_key)]


@settings(max_examples=150, deadline=None)
@given(st.lists(findings(), max_size=120), st.frozensets(st.sampled_from(list(Id))), bounds)
def test_the_rows_of_some_ids_are_those_of_all_the_rows_with_those_ids(added, ids, sizes):
    with FindingLog(**sizes) as log:
        for finding in added:
            log.add(finding)
        every = list(log.rows())
        assert list(log.rows(ids)) == [row for row in every if row[0] in ids]
        assert list(log.rows(ids)) == [row for row in every if row[0] in ids]  # a second read
        assert list(log.rows(frozenset(Id))) == every


def test_a_row_holds_what_a_record_shows_in_its_fields_order():
    location = layout.LinkFile(layout.TagCurrent("a/b", "v1"))
    finding = Finding(Id.LINK_INVALID, location, "empty", "a/b", "v1", DIGESTS[0], 7, "z")
    row = row_of(finding)
    assert dict(zip(ROW_FIELDS, row, strict=True)) == {
        "id": Id.LINK_INVALID, "path": location.path, "message": "empty", "repository": "a/b", "tag": "v1",
        "digest": DIGESTS[0], "bytes": 7, "owner": "z",
    }


def recount(added: list[Finding], ignore: frozenset[Id] = frozenset()) -> dict:
    kept = [f for f in added if f.id not in ignore]
    by_id: dict[Id, list[int]] = {}
    for f in kept:
        entry = by_id.setdefault(f.id, [0, 0])
        entry[0] += 1
        entry[1] += f.bytes
    repositories: dict[str, list[int]] = {}
    shared = 0
    for f in kept:
        garbage = f.severity is Severity.GARBAGE
        if f.repository is not None:
            entry = repositories.setdefault(f.repository, [0, 0])
            entry[0] += 1
            entry[1] += f.bytes if garbage else 0
        elif garbage and f.bytes and f.owner is None:
            shared += f.bytes
        elif garbage and f.bytes:
            repositories.setdefault(f.owner, [0, 0])[1] += f.bytes
    severities = Counter(f.severity for f in kept)
    return {
        "findings": len(kept),
        "by_id": by_id,
        "by_severity": {s: severities[s] for s in Severity},
        "by_repository": dict(sorted(repositories.items())),
        "reclaimable_bytes": sum(f.bytes for f in kept if f.severity is Severity.GARBAGE),
        "shared_reclaimable_bytes": shared,
        "ignored": {i: sum(f.id is i for f in added) for i in ignore} if ignore else None,
    }


def as_plain(log: FindingLog) -> dict:
    counts = log.counts
    return {
        "findings": counts.findings,
        "by_id": {i: [t.count, t.bytes] for i, t in counts.by_id.items()},
        "by_severity": dict(counts.by_severity),
        "by_repository": {n: [t.findings, t.reclaimable_bytes] for n, t in counts.by_repository.items()},
        "reclaimable_bytes": counts.reclaimable_bytes,
        "shared_reclaimable_bytes": counts.shared_reclaimable_bytes,
        "ignored": dict(counts.ignored) if counts.ignored is not None else None,
    }


@settings(max_examples=150, deadline=None)
@given(st.lists(findings(), max_size=80), st.frozensets(st.sampled_from(list(Id)), max_size=4), bounds)
def test_counters_equal_a_recount_and_ignored_ids_are_only_counted(added, ignore, sizes):
    with FindingLog(ignore or None, **sizes) as log:
        for finding in added:
            log.add(finding)
        assert as_plain(log) == recount(added, ignore)
        assert list(log.counts.by_id) == [i for i in Id if i in log.counts.by_id]  # catalogue order
        assert [whole(f) for f in log] == [whole(f) for f in sorted(added, key=Finding.sort_key) if f.id not in ignore]
        for finding_id in Id:
            assert log.count(finding_id) == sum(f.id is finding_id for f in added if f.id not in ignore)
        assert log.ids() == {f.id for f in added if f.id not in ignore}


@settings(max_examples=60, deadline=None)
@given(st.lists(findings(), max_size=60), st.frozensets(st.sampled_from(list(Id)), min_size=1, max_size=3),
       st.frozensets(st.sampled_from(list(Id)), min_size=1, max_size=3))
def test_without_leaves_ids_out_and_adds_to_what_was_ignored(added, first, then):
    with FindingLog(first, memory_bound=5, batch=2, fan_in=2) as log:
        for finding in added:
            log.add(finding)
        with log.without(then) as narrower:
            assert as_plain(narrower) == recount(added, first | then)
            assert [whole(f) for f in narrower] == [
                whole(f) for f in sorted(added, key=Finding.sort_key) if f.id not in first | then
            ]
        assert as_plain(log) == recount(added, first)  # left as it was


def blob_findings(count: int) -> list[Finding]:
    """Garbage blobs in descending digest order: every one sorts before those added earlier."""
    return [
        Finding(Id.BLOB_ORPHAN, layout.Blob(n.to_bytes(32, "big")), "orphan", digest=n.to_bytes(32, "big"), bytes=n)
        for n in range(count, 0, -1)
    ]


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_reads_side_by_side_do_not_disturb_each_other():
    added = blob_findings(500)
    with FindingLog(memory_bound=7, batch=3, fan_in=3) as log:
        for finding in added:
            log.add(finding)
        pairs = list(zip(log, log, strict=True))
        assert [a for a, _ in pairs] == [b for _, b in pairs] == sorted(added, key=Finding.sort_key)


def test_open_files_stay_few_whatever_the_number_of_findings(tmp_path: Path):
    """5,000 findings in runs of 4 would be 1,250 runs: merged in tiers of 3, a handful stay open."""
    before = open_descriptors()
    most = 0
    with FindingLog(memory_bound=4, batch=2, fan_in=3, directory=str(tmp_path)) as log:
        for finding in blob_findings(5000):
            log.add(finding)
            most = max(most, open_descriptors() - before)
        assert log.spilled
        assert sum(1 for _ in log) == 5000
        assert os.listdir(tmp_path) == []  # anonymous: nothing to leave behind even on a crash
    assert 1 <= most <= 2 * 7 + 2  # (fan_in - 1) runs per tier, 7 tiers for 1,250 runs, one being written


def test_closing_or_dropping_the_log_closes_its_temporary_files():
    before = open_descriptors()
    log = FindingLog(memory_bound=10, batch=4)
    for finding in blob_findings(100):
        log.add(finding)
    assert open_descriptors() > before
    log.close()
    assert open_descriptors() == before
    with pytest.raises(ValueError):
        iter(log)

    dropped = FindingLog(memory_bound=10, batch=4)
    for finding in blob_findings(100):
        dropped.add(finding)
    assert open_descriptors() > before
    del dropped
    gc.collect()
    assert open_descriptors() == before


def test_the_first_read_seals_the_log():
    log = FindingLog(memory_bound=3)
    for finding in blob_findings(5):
        log.add(finding)
    assert len(list(log)) == 5
    with pytest.raises(RuntimeError):
        log.add(blob_findings(1)[0])
    log.close()


def test_of_wraps_any_iterable_and_returns_a_log_as_it_is():
    added = blob_findings(20)
    log = FindingLog.of(reversed(added), memory_bound=6)
    assert FindingLog.of(log) is log
    assert list(log) == sorted(added, key=Finding.sort_key)
    narrowed = FindingLog.of(log, ignore={Id.BLOB_ORPHAN})
    assert len(narrowed) == 0 and not narrowed
    assert narrowed.ignored == {Id.BLOB_ORPHAN: 20}
    assert log.ignored is None
    assert not FindingLog() and list(FindingLog()) == []
    log.close()


@settings(max_examples=150, deadline=None)
@given(st.lists(findings(), max_size=60), st.lists(findings(), max_size=60), st.lists(findings(), max_size=20),
       st.booleans(), bounds)
def test_a_log_taken_over_reads_as_though_its_findings_were_added_after(first, handed, after, aside, sizes):
    """As the checks hand a child's log back (`aside`: through a pickle and the files' descriptors,
    with a codec that numbered the kinds of locations in another order)."""
    with FindingLog(**sizes) as log:
        for finding in first:
            log.add(finding)
        other = FindingLog(**sizes)
        for finding in reversed(handed) if aside else handed:  # the kinds of locations met in another order
            other.add(finding)
        exported, files = other.export()
        if aside:
            exported = pickle.loads(pickle.dumps(exported))
            sent, files = files, [os.fdopen(os.dup(file.fileno()), "rb", buffering=0) for file in files]
            for file in sent:
                file.close()
        log.absorb(exported, files)
        for finding in after:
            log.add(finding)
        added = first + (list(reversed(handed)) if aside else handed) + after
        expected = [whole(f) for f in sorted(added, key=Finding.sort_key)]
        assert [whole(f) for f in log] == expected
        assert list(log.rows()) == [row_of(f) for f in sorted(added, key=Finding.sort_key)]
        assert as_plain(log) == recount(added)


def test_a_log_handed_over_is_closed_and_its_files_are_the_takers():
    before = open_descriptors()
    other = FindingLog(memory_bound=10, batch=4)
    for finding in blob_findings(100):
        other.add(finding)
    exported, files = other.export()
    with pytest.raises(ValueError):
        iter(other)
    other.close()
    assert open_descriptors() > before  # the files are not the handed-over log's to close
    with FindingLog() as log:
        log.absorb(exported, files)
        assert len(log) == 100 and list(log) == sorted(blob_findings(100), key=Finding.sort_key)
        with pytest.raises(RuntimeError):
            log.export()  # it holds another log's runs
    assert open_descriptors() == before
