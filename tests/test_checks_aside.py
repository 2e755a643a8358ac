"""The repositories checked in a forked child while this process judges the blobs: the same audit as in
one process, on real registry trees with damage of every kind, also where the repositories find damage
to blobs the blob verdicts would otherwise call garbage, and where the child fails."""

from __future__ import annotations

import os
import time
from collections import Counter
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
        "untagged_only": list(audit.untagged_only),
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


def checking_slowly_in_a_child(monkeypatch, noted: Path, pause: float = 0.005) -> None:
    """Each repository checked notes which process checked it; the child's take `pause` seconds each, so
    that this process, done with the blobs, takes shares of them from the back."""
    parent = os.getpid()
    repository = checks._repository

    def noting(state, repo, *args):
        if os.getpid() != parent:
            time.sleep(pause)
        else:  # taking shares from the back: not before the child has begun at the front
            deadline = time.monotonic() + 30
            while not (noted.exists() and "child" in noted.read_text()) and time.monotonic() < deadline:
                time.sleep(0.001)
        with open(noted, "a") as note:
            note.write(f"{'child' if os.getpid() != parent else 'parent'} {repo.name}\n")
        return repository(state, repo, *args)

    monkeypatch.setattr(checks, "_repository", noting)


def checked_by(noted: Path) -> dict[str, list[str]]:
    by: dict[str, list[str]] = {"child": [], "parent": []}
    for line in noted.read_text().splitlines():
        who, name = line.split(" ", 1)
        by[who].append(name)
    noted.unlink()
    return by


@pytest.mark.parametrize("copy", ["demo", "damaged"])
def test_this_process_takes_shares_of_the_repositories_from_the_back(copy, damaged_tree, monkeypatch, tmp_path):
    """Undamaged, what this process found joins the child's; damaged, as the last copy is (a blob of the
    wrong size that every copy's live manifests use: the first repository finding it reports it), its
    shares are checked again after the child's."""
    root = damaged_tree
    if copy == "demo":
        root = tree.copy_tree(DEMO, tmp_path / "root")
        repositories = tree.copy_repositories(root, 6)
        # An upload in its quiet period in every repository, all started at one moment: the recent ones
        # come in repository order, whichever process checked them.
        for number, repository in enumerate(sorted(p.parent for p in repositories.rglob("_layers"))):
            upload = repository / "_uploads" / f"{number:08x}-0000-4000-8000-000000000000"
            upload.mkdir(parents=True)
            (upload / "data").write_bytes(b"part")
            (upload / "startedat").write_text(NOW.strftime("%Y-%m-%dT%H:%M:%SZ"))
    monkeypatch.setattr(checks, "_ASIDE_FROM", 1)
    in_one = audit_facts(root, processes=1)
    noted = tmp_path / "checked"
    checking_slowly_in_a_child(monkeypatch, noted)
    with_child = audit_facts(root, processes=2)
    by = checked_by(noted)
    assert by["child"] and by["parent"], by
    ordered = sorted(set(by["child"]) | set(by["parent"]))
    front = ordered[: len(set(by["child"]))]
    assert by["child"] == front  # the child's from the front, in order; this process's the rest
    again = [name for name, times in Counter(by["parent"]).items() if times > 1]
    assert bool(again) == (copy == "damaged")  # checked twice where damage to a blob was found
    assert with_child == in_one
    if copy == "demo":
        assert in_one["untagged_only"] and len(in_one["recent"]) > 100


def test_shares_go_each_to_one_process():
    shares = aside.Shares(1000)

    def work():
        taken = []
        for index in shares.from_front():
            taken.append(index)
            time.sleep(0.0001)
        return taken, []

    with shares, aside.Aside(work) as child:
        back = [index for index in shares.from_back() if not time.sleep(0.0001)]
        front, _ = child.result()
    assert front == list(range(len(front)))
    assert back == list(range(999, 999 - len(back), -1))
    assert sorted(front + back) == list(range(1000))


@pytest.mark.parametrize("count", [0, aside.Shares.LIMIT + 1])
def test_shares_are_between_one_and_what_a_pipe_takes_at_once(count):
    with pytest.raises(ValueError):
        aside.Shares(count)


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
