"""`registry-fsck du` on trees the real registry wrote: the accounting proven by deleting what it says.

A repository's `exclusive` bytes are what a new audit reports as new garbage once its directory is
gone; its `frees_on_rm` is what the registry's own `garbage-collect --dry-run` newly deletes then
(the untagged manifests of other repositories still mark what they use). The tree is built so that
the two differ: `solo/app`'s layer `lone` is exclusive (only its tags use it) but another
repository's untagged manifest references it, and `solo/app` has an untagged manifest of its own.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from fsck import checks, freeing, removal, service, usage
from fsck.catalogue import Id
from fsck.reach import reach
from tests.clirun import audit_records, invoke, run_cli, snapshot
from tests.harness import tree
from tests.harness.images import make_image, make_layer
from tests.harness.registry import Registry, garbage_collect, parse_gc_output, write_config
from tests.harness.scenarios import Recorder

pytestmark = pytest.mark.registry

REPOSITORIES = ("big/data", "other/tool", "solo/app", "team/app", "team/web")


@pytest.fixture(scope="module")
def built(registry_binaries: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Repositories that share a base layer (team/*), one big one, and untagged manifests crossing over."""
    base = tmp_path_factory.mktemp("du-build")
    with Registry(base / "root", workdir=base / "registry") as reg:
        rec = Recorder(reg, base / "layouts")
        shared_base = make_layer("du/base", size=8192)
        rec.push(make_image("du/team/app", layers=2, shared=(shared_base,), layer_size=6000), "team/app", "v1")
        rec.push(make_image("du/team/web", layers=1, shared=(shared_base,)), "team/web", "v1")
        rec.push(make_image("du/big", layers=3, layer_size=30000), "big/data", "latest")
        lone = make_layer("du/lone", size=5000)
        rec.push(make_image("du/solo", layers=1, shared=(lone,)), "solo/app", "v1")
        rec.push(make_image("du/solo-old", layers=1), "solo/app", "v2")
        rec.push(make_image("du/solo-new", layers=1), "solo/app", "v2")  # the old v2: untagged, its own blobs
        rec.push(make_image("du/other-old", layers=1, shared=(lone,)), "other/tool", "v1")
        rec.push(make_image("du/other-new", layers=1), "other/tool", "v1")  # the old v1 (uses lone): untagged
    return base / "root"


@pytest.fixture
def du_tree(built: Path, tmp_path: Path) -> Path:
    return tree.copy_tree(built, tmp_path / "du")


def _account(root: Path, namespaces: tuple[str, ...] = ()) -> tuple[checks.Audit, usage.Usage]:
    policy = checks.Policy(now=datetime.now(timezone.utc))
    return service.audit_and_usage(service.resolve_target(str(root), None), policy, namespaces=namespaces)


def _rows(accounted: usage.Usage) -> dict[str, usage.Row]:
    return {row.name: row for row in accounted.rows}


def _garbage_blob_bytes(root: Path) -> int:
    result = service.audit(service.resolve_target(str(root), None), checks.Policy(now=datetime.now(timezone.utc)))
    return sum(f.bytes for f in result.findings if f.id in (Id.BLOB_ORPHAN, Id.BLOB_UNREACHABLE))


def _gc_deletes(root: Path, workdir: Path) -> dict[str, int]:
    """What the registry's own `garbage-collect --dry-run` would delete, with the bytes of each blob."""
    workdir.mkdir(parents=True, exist_ok=True)
    result = garbage_collect(write_config(root, workdir / "gc.yml"), dry_run=True)
    assert result.returncode == 0, result.stderr
    return {d: tree.blob_data(root, d).stat().st_size for d in parse_gc_output(result.stdout).eligible_blobs}


def test_the_totals_add_up_on_a_tree_with_shared_layers_and_untagged_manifests(du_tree: Path) -> None:
    _, accounted = _account(du_tree)
    totals = accounted.totals
    rows = _rows(accounted)
    assert set(rows) == set(REPOSITORIES)
    assert totals.stored_bytes == sum(p.stat().st_size for p in (tree.v2(du_tree) / "blobs").rglob("data"))
    assert totals.exclusive_bytes == sum(r.exclusive_bytes for r in rows.values())
    assert totals.exclusive_bytes + totals.shared_bytes == totals.live_bytes
    assert totals.live_bytes + totals.garbage_bytes + totals.damage_held_bytes == totals.stored_bytes
    assert totals.garbage_bytes > 0 and totals.shared_bytes > 0 and totals.damage_held_bytes == 0
    for row in rows.values():
        assert row.exclusive_bytes + row.shared_bytes == row.referenced_bytes
    # The base layer is the only blob two repositories' tags use: each of team/* counts it as shared.
    assert rows["team/app"].shared_bytes == rows["team/web"].shared_bytes == totals.shared_bytes
    assert rows["big/data"].shared_bytes == rows["solo/app"].shared_bytes == 0
    assert (rows["solo/app"].tags, rows["solo/app"].manifests_live, rows["solo/app"].manifests_untagged) == (2, 2, 1)


@pytest.mark.parametrize("repository", REPOSITORIES)
def test_deleting_a_repository_makes_exactly_its_exclusive_bytes_new_garbage(
    du_tree: Path, repository: str
) -> None:
    _, accounted = _account(du_tree)
    row = _rows(accounted)[repository]
    garbage_before = _garbage_blob_bytes(du_tree)
    shutil.rmtree(tree.repo_dir(du_tree, repository))
    assert _garbage_blob_bytes(du_tree) - garbage_before == row.exclusive_bytes
    assert row.exclusive_bytes > 0


@pytest.mark.parametrize("repository", REPOSITORIES)
def test_frees_on_rm_is_what_the_registrys_gc_newly_deletes_once_the_repository_is_gone(
    du_tree: Path, repository: str, tmp_path: Path
) -> None:
    _, accounted = _account(du_tree)
    before = _gc_deletes(du_tree, tmp_path / "gc-before")
    shutil.rmtree(tree.repo_dir(du_tree, repository))
    after = _gc_deletes(du_tree, tmp_path / "gc-after")
    assert before.keys() <= after.keys()
    assert _rows(accounted)[repository].frees_on_rm_bytes == sum(after[d] for d in after.keys() - before.keys())


def test_exclusive_and_frees_on_rm_differ_where_untagged_manifests_share(du_tree: Path) -> None:
    rows = _rows(_account(du_tree)[1])
    lone = make_layer("du/lone", size=5000).blob.size
    solo, other = rows["solo/app"], rows["other/tool"]
    # `lone`: exclusive to solo/app (only its tags use it), kept by other/tool's untagged manifest after an rm;
    # the old solo/app:v2 (untagged) is garbage now, not exclusive, and freed by an rm.
    assert solo.frees_on_rm_bytes != solo.exclusive_bytes
    assert solo.frees_on_rm_bytes == solo.exclusive_bytes - lone + solo.reclaimable_bytes
    # other/tool's untagged manifest is its garbage but for `lone` (live through solo/app): an rm frees both.
    assert other.frees_on_rm_bytes == other.exclusive_bytes + other.reclaimable_bytes != other.exclusive_bytes
    assert rows["big/data"].frees_on_rm_bytes == rows["big/data"].exclusive_bytes


def test_freed_by_each_is_what_removing_each_repositorys_roots_frees(du_tree: Path) -> None:
    """The one pass over the users of each blob agrees with the removal computed directly, per repository."""
    loaded = service.load(service.resolve_target(str(du_tree), None))
    judged = service.judge(loaded, checks.Policy(now=datetime.now(timezone.utc)))
    before = freeing.keeping_roots(judged, loaded.inventory)
    each = freeing.freed_by_each(freeing.users(reach(judged.graph, before)), before.anywhere)
    for name in REPOSITORIES:
        direct = freeing.freed(judged.graph, before, freeing.without(before, {name}))
        assert direct == each.get(name, set()), name
        assert direct


def test_a_namespace_subtotal_is_what_no_repository_outside_it_reaches(du_tree: Path, tmp_path: Path) -> None:
    _, accounted = _account(du_tree, ("team/",))
    (team,) = accounted.namespaces
    rows = _rows(accounted)
    assert (team.name, team.namespace, team.repositories) == ("team/", True, 2)
    # The base layer both share belongs to the namespace alone.
    assert team.exclusive_bytes == rows["team/app"].exclusive_bytes + rows["team/web"].exclusive_bytes + \
        rows["team/app"].shared_bytes
    assert team.shared_bytes == 0 and team.tags == 2
    garbage_before = _garbage_blob_bytes(du_tree)
    gc_before = _gc_deletes(du_tree, tmp_path / "gc-before")
    shutil.rmtree(tree.v2(du_tree) / "repositories" / "team")
    assert _garbage_blob_bytes(du_tree) - garbage_before == team.exclusive_bytes
    gc_after = _gc_deletes(du_tree, tmp_path / "gc-after")
    assert team.frees_on_rm_bytes == sum(gc_after[d] for d in gc_after.keys() - gc_before.keys())


def test_the_demo_tree_adds_up_and_an_emptied_orphan_leaves_the_garbage(demo) -> None:
    _, accounted = _account(demo.root)
    totals = accounted.totals
    assert totals.live_adds_up and totals.stored_adds_up and totals.damage_held_bytes == 0
    assert totals.garbage_bytes > 0 and totals.shared_bytes > 0
    # An orphan blob truncated to nothing: blob-empty (damage) instead of garbage.
    records = audit_records(demo.root)
    orphan = next(r for r in records if r["id"] == "blob-orphan" and r["bytes"] > 0)
    tree.blob_data(demo.root, orphan["digest"]).write_bytes(b"")
    _, damaged = _account(demo.root)
    assert damaged.totals.stored_bytes == totals.stored_bytes - orphan["bytes"]
    assert damaged.totals.garbage_bytes == totals.garbage_bytes - orphan["bytes"]
    assert damaged.totals.live_bytes == totals.live_bytes
    assert damaged.totals.live_adds_up and damaged.totals.stored_adds_up


def test_a_damaged_blob_of_untagged_manifest_is_held_by_damage_with_its_bytes(du_tree: Path) -> None:
    """A manifest no tag names, its data overwritten with bytes that are no JSON: manifest-invalid (damage),
    not garbage; its bytes count as held by damage, and the totals still add up."""
    _, clean = _account(du_tree)
    revisions = tree.revision_links(du_tree, "solo/app")
    tagged = {tree.tag_current(du_tree, "solo/app", t) for t in tree.tag_names(du_tree, "solo/app")}
    (untagged,) = revisions - tagged
    data = tree.blob_data(du_tree, untagged)
    data.write_bytes(b"not json" + b"x" * 100)
    _, damaged = _account(du_tree)
    assert damaged.totals.damage_held_bytes == 108
    assert damaged.totals.live_adds_up and damaged.totals.stored_adds_up
    assert damaged.totals.stored_bytes != clean.totals.stored_bytes


def test_json_document(du_tree: Path) -> None:
    code, out = invoke("du", str(du_tree), "--json")
    assert code == 0
    document = json.loads(out)
    assert document["format"] == "registry-fsck/du/1"
    assert set(document) == {"format", "root", "v2", "generated_at", "complete", "exit_code", "totals",
                             "repositories", "namespaces", "more"}
    assert document["complete"] is True and document["exit_code"] == 0 and document["namespaces"] == []
    assert document["v2"] == str(tree.v2(du_tree))
    totals = document["totals"]
    assert totals["live_adds_up"] and totals["stored_adds_up"]
    assert totals["exclusive_bytes"] + totals["shared_bytes"] == totals["live_bytes"]
    names = [r["repository"] for r in document["repositories"]]
    assert sorted(names) == sorted(REPOSITORIES) and names[0] == "big/data"  # biggest exclusive first
    exclusive = [r["exclusive_bytes"] for r in document["repositories"]]
    assert exclusive == sorted(exclusive, reverse=True)
    for record in document["repositories"]:
        assert set(record) == {"repository", "kind", "repositories", "tags", "manifests_live", "manifests_untagged",
                               "blobs", "referenced_bytes", "exclusive_bytes", "shared_bytes", "reclaimable_bytes",
                               "frees_on_rm_bytes", "uploads_bytes"}
        assert record["kind"] == "repository" and all(isinstance(v, int) for k, v in record.items()
                                                      if k not in ("repository", "kind"))


def test_csv_header_and_rows(du_tree: Path) -> None:
    code, out = invoke("du", str(du_tree), "--csv", "--sort", "name", "team/")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == ("repository,kind,repositories,tags,manifests_live,manifests_untagged,blobs,referenced_bytes,"
                        "exclusive_bytes,shared_bytes,reclaimable_bytes,frees_on_rm_bytes,uploads_bytes")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["repository"], r["kind"]) for r in rows] == [
        ("team/app", "repository"), ("team/web", "repository"), ("team/", "namespace"),
    ]
    assert int(rows[2]["exclusive_bytes"]) > int(rows[0]["exclusive_bytes"]) + int(rows[1]["exclusive_bytes"])


def test_top_and_sort(du_tree: Path) -> None:
    _, out = invoke("du", str(du_tree), "--json", "--top", "2", "--sort", "frees-on-rm")
    document = json.loads(out)
    shown = document["repositories"]
    everything = json.loads(invoke("du", str(du_tree), "--json", "--sort", "frees-on-rm")[1])["repositories"]
    assert shown == everything[:2] and len(everything) == len(REPOSITORIES)
    assert [r["frees_on_rm_bytes"] for r in everything] == sorted((r["frees_on_rm_bytes"] for r in everything),
                                                                  reverse=True)
    assert document["more"] == {
        "repositories": 3,
        "exclusive_bytes": sum(r["exclusive_bytes"] for r in everything[2:]),
        "referenced_bytes": sum(r["referenced_bytes"] for r in everything[2:]),
    }
    by_name = json.loads(invoke("du", str(du_tree), "--json", "--sort", "name")[1])["repositories"]
    assert [r["repository"] for r in by_name] == sorted(REPOSITORIES)
    _, text = invoke("du", str(du_tree), "--top", "1")
    assert "... and 4 more repositories" in text and "big/data" in text and "team/web" not in text.split("totals")[0]


def test_text_shows_the_rows_and_the_identities(du_tree: Path) -> None:
    code, text = invoke("du", str(du_tree), "team/", "big/data")
    assert code == 0
    _, accounted = _account(du_tree)
    totals = accounted.totals
    assert f"in bytes {totals.live_bytes} = {totals.exclusive_bytes} + {totals.shared_bytes}" in text
    assert (f"in bytes {totals.stored_bytes} = {totals.live_bytes} + {totals.garbage_bytes} + "
            f"{totals.damage_held_bytes}") in text
    table = text.split("totals over")[0]
    assert "team/app" in table and "team/web" in table and "big/data" in table and "solo/app" not in table
    assert "team/ (2 repositories)" in table


def test_never_writes_into_the_tree(du_tree: Path) -> None:
    before = snapshot(du_tree)
    for args in ((), ("--json",), ("--csv", "team/")):
        assert invoke("du", str(du_tree), *args)[0] == 0
    assert snapshot(du_tree) == before


@pytest.mark.parametrize(("names", "expected"), [
    (["Team/App"], "'Team/App' is not a repository name"),
    (["team//app"], "is not a repository name"),
    (["nope/app"], "no repository named nope/app"),
    (["zzz/"], "no repository under zzz/"),
    (["team/app", "nope", "zz/"], "no repository named nope; no repository under zz/"),
])
def test_bad_repository_names_are_usage_errors(du_tree: Path, names: list[str], expected: str) -> None:
    result = run_cli("du", str(du_tree), *names)
    assert result.returncode == 16, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_json_and_csv_together_is_a_usage_error(du_tree: Path) -> None:
    result = run_cli("du", str(du_tree), "--json", "--csv")
    assert result.returncode == 16 and "give --json or --csv, not both" in result.stderr


def test_not_a_registry_is_an_operational_error(tmp_path: Path) -> None:
    result = run_cli("du", str(tmp_path / "missing"))
    assert result.returncode == 8
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "registry-fsck: error:" in result.stderr


def test_a_partial_view_exits_8_and_says_so(du_tree: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("x")
    os.symlink(outside, tree.repo_dir(du_tree, "big/data") / "stray")  # a link to a file: not followed
    code, out = invoke("du", str(du_tree), "--json")
    assert code == 8
    document = json.loads(out)
    assert document["complete"] is False and document["exit_code"] == 8
    code, text = invoke("du", str(du_tree))
    assert code == 8 and "INCOMPLETE" in text


def test_frees_on_rm_is_what_rm_of_the_repository_plans_to_free(du_tree: Path) -> None:
    """du's one pass and rm's cascade are two computations of the same roots: they must agree, per repository."""
    loaded = service.load(service.resolve_target(str(du_tree), None))
    judged = service.judge(loaded, checks.Policy(now=datetime.now(timezone.utc)))
    rows = _rows(usage.account(judged, loaded.inventory, ()))
    for name in REPOSITORIES:
        planned = removal.plan_removal(judged, loaded.inventory, removal.Removal(repositories={name: removal.RM}))
        blobs = {a.digest: a.bytes for a in planned.plan.actions if a.finding is Id.BLOB_ORPHAN}
        assert sum(blobs.values()) == rows[name].frees_on_rm_bytes, name
