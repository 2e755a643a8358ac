"""The repositories checked in a forked child while this process judges the blobs: the same audit as in
one process, on real registry trees with damage of every kind, also where the repositories find damage
to blobs the blob verdicts would otherwise call garbage, and where the child fails."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pytest
from clirun import DEMO

from fsck import aside, checks, manifests, scan
from fsck.catalogue import Finding, Id
from fsck.store import Concurrency, LocalStore, PoolKind
from tests.harness import tree

V2 = "docker/registry/v2"
NOW = datetime.now(timezone.utc)


def whole(finding: Finding) -> tuple:
    """Every field, also those equality leaves out (the owner, the location's kind and path)."""
    return (finding, finding.owner, type(finding.location), finding.location.path)


def audit_facts(root: Path, processes: int) -> dict:
    store = LocalStore(str(root / V2))
    inventory = scan.scan(store, concurrency=Concurrency(PoolKind.SERIAL, 1, "test"))
    parsed = manifests.read_manifests(store, manifests.named_by_links(inventory), inventory.blobs)
    audit = checks.audit(inventory, parsed, checks.Policy(now=NOW), processes=processes)
    return {
        "findings": [whole(f) for f in audit.findings],
        "counts": audit.findings.counts,
        "totals": audit.totals,
        "complete": audit.complete,
        "uncertain": audit.uncertain,
        "recent": audit.recent,
        "untagged_only": sorted(audit.untagged_only),
        "unread": audit.unread,
        "not_seen": audit.not_seen,
        "used_as_content": audit.used_as_content,
    }


@pytest.fixture(scope="module")
def damaged_tree(tmp_path_factory) -> Path:
    """The real demo tree copied under 6 namespaces, with damage in the last copy: links that are
    invalid or name another digest, truncated manifest data under an untagged revision (a blob the
    repositories find damaged, which the blob verdicts alone would call garbage), a layer blob of the
    wrong size, a stray file and an empty tag directory."""
    root = tree.copy_tree(DEMO, tmp_path_factory.mktemp("aside") / "root")
    repositories = tree.copy_repositories(root, 6)
    tree.add_orphan_blobs(root, 50)
    last = sorted(p.parent for p in (repositories / "copy5").rglob("_layers"))
    links = sorted((last[0] / "_manifests" / "revisions" / "sha256").iterdir())
    (links[0] / "link").write_text("garbage!!\n")
    (last[0] / "_layers" / "stray-file").write_text("not a link directory\n")
    (last[0] / "_manifests" / "tags" / "empty-tag").mkdir()
    tagged = {
        (link / "link").read_text()
        for repository in last
        for link in (repository / "_manifests" / "tags").glob("*/current")
    }
    untagged = next(
        link.name
        for repository in last
        for link in sorted((repository / "_manifests" / "revisions" / "sha256").iterdir())
        if f"sha256:{link.name}" not in tagged and (link / "link").read_text().startswith("sha256:")
    )
    data = root / V2 / "blobs" / "sha256" / untagged[:2] / untagged / "data"
    data.write_bytes(data.read_bytes()[:20])
    layer = next((last[1] / "_layers" / "sha256").iterdir()).name
    layer_data = root / V2 / "blobs" / "sha256" / layer[:2] / layer / "data"
    layer_data.write_bytes(layer_data.read_bytes() + b"x")
    return root


def test_a_child_checking_the_repositories_finds_what_one_process_finds(damaged_tree, monkeypatch, tmp_path):
    monkeypatch.setattr(checks, "_ASIDE_FROM", 1)
    checked_in = tmp_path / "pids"
    repositories = checks._repositories

    def noting_where(*args):
        with open(checked_in, "a") as note:
            note.write(f"{os.getpid()}\n")
        return repositories(*args)

    monkeypatch.setattr(checks, "_repositories", noting_where)
    in_one = audit_facts(damaged_tree, processes=1)
    checked_in.unlink()
    with_child = audit_facts(damaged_tree, processes=2)
    assert checked_in.read_text().split() != [str(os.getpid())], "no child checked the repositories"
    assert with_child == in_one
    ids = {record[0].id for record in in_one["findings"]}
    assert {Id.MANIFEST_INVALID, Id.BLOB_SIZE_MISMATCH, Id.LINK_INVALID, Id.BLOB_ORPHAN, Id.UNEXPECTED} <= ids
    invalid = {record[0].digest for record in in_one["findings"] if record[0].id is Id.MANIFEST_INVALID}
    garbage = {record[0].digest for record in in_one["findings"] if record[0].id in (Id.BLOB_ORPHAN, Id.BLOB_UNREACHABLE)}
    assert invalid and not invalid & garbage  # judged again after the repositories: never called garbage


def test_where_the_child_fails_this_process_checks_the_repositories_itself(damaged_tree, monkeypatch):
    monkeypatch.setattr(checks, "_ASIDE_FROM", 1)
    parent = os.getpid()
    repositories = checks._repositories

    def failing_in_a_child(*args):
        if os.getpid() != parent:
            raise RuntimeError("a child that cannot finish")
        return repositories(*args)

    in_one = audit_facts(damaged_tree, processes=1)
    monkeypatch.setattr(checks, "_repositories", failing_in_a_child)
    assert audit_facts(damaged_tree, processes=2) == in_one


def test_small_stores_are_checked_in_one_process(damaged_tree, monkeypatch):
    def no_child(*args, **kwargs):
        raise AssertionError("a child for a store this small")

    monkeypatch.setattr(aside, "Aside", no_child)
    assert audit_facts(damaged_tree, processes=2)["findings"]


def test_a_result_comes_back_with_its_files(tmp_path):
    path = tmp_path / "run"
    path.write_bytes(b"batches")

    def work():
        return {"answer": 42}, [open(path, "rb")]

    with aside.Aside(work) as child:
        result, files = child.result()
    assert result == {"answer": 42}
    assert [file.read() for file in files] == [b"batches"]
    for file in files:
        file.close()
    assert child.pid is None


@pytest.mark.parametrize("ending", ["raises", "exits"])
def test_a_child_without_a_result_is_a_failure_and_is_reaped(ending):
    def work():
        if ending == "exits":
            os._exit(3)
        raise ValueError("no result")

    child = aside.Aside(work)
    pid = child.pid
    with pytest.raises(aside.Failed):
        child.result()
    assert child.pid is None
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_a_child_still_working_is_stopped_on_the_way_out():
    def work():
        while True:
            pass

    with aside.Aside(work) as child:
        pid = child.pid
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
