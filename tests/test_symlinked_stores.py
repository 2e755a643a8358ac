"""A store spread over directories by symbolic links, as deployments do (`blobs/` on another disk,
`docker/` on a mount): seen as the registry sees it, repaired on the real paths, each file system
with its own quarantine, and undone exactly. Loops and aliases are reported and left alone."""

import os
import shutil
import uuid
from pathlib import Path

import orjson
import pytest
from clirun import run_cli, snapshot

from tests.harness import tree
from tests.harness.registry import Registry, age_uploads

pytestmark = pytest.mark.registry

SHM = Path("/dev/shm")


def other_file_system() -> Path:
    """A directory on another file system than the tests' temporary directories (tmpfs)."""
    if not SHM.is_dir() or os.stat(SHM).st_dev == os.stat(Path.cwd()).st_dev:
        pytest.fail("/dev/shm is not a file system of its own here: the cross-file-system tests need one")
    place = SHM / f"registry-fsck-test-{uuid.uuid4().hex[:8]}"
    place.mkdir()
    return place


@pytest.fixture
def elsewhere(tmp_path, request):
    """`elsewhere("same" | "other")`: a directory on the same file system as the tree, or on another."""
    made = []

    def make(kind: str) -> Path:
        if kind == "same":
            place = tmp_path / "disk2"
            place.mkdir()
            return place
        place = other_file_system()
        made.append(place)
        return place

    yield make
    for place in made:
        shutil.rmtree(place, ignore_errors=True)


def findings(root):
    result = run_cli("audit", str(root), "--json")
    assert "Traceback" not in result.stderr, result.stderr
    document = orjson.loads(result.stdout)
    return result.returncode, document["complete"], sorted(
        (f["id"], f["path"], f["bytes"], f["message"]) for f in document["findings"]
    )


def move_and_link(root: Path, relative: str, to: Path) -> Path:
    """Move `relative` (below the rootdirectory) to `to`, and link it back: the tree the registry sees is the same."""
    place = root / relative
    target = to / place.name
    shutil.move(str(place), str(target))
    place.symlink_to(target, target_is_directory=True)
    return target


def tree_state(place: Path) -> dict:
    """Every name below `place` with its metadata and content, but the quarantine (undo keeps its journal)."""
    return {k: v for k, v in snapshot(place, directory_mtimes=False).items()
            if not k.startswith("registry-fsck-quarantine")}


def tags_served(root, scenario, workdir):
    with Registry(root, schema1=scenario.schema1, workdir=workdir) as registry:
        return {(repo, tag): registry.manifest_digest(repo, tag) == digest and registry.pull_ok(repo, tag, all=True)
                for repo, tag, digest in scenario.tagged()}


@pytest.mark.parametrize(("relative", "kind"), [
    ("docker/registry/v2/blobs", "same"),
    ("docker/registry/v2/blobs", "other"),
    ("docker", "other"),
    ("docker/registry/v2/repositories", "other"),
])
def test_a_linked_store_audits_as_the_plain_tree_and_repairs_on_its_own_file_system(
    demo, tree_copy, elsewhere, tmp_path, relative, kind
):
    age_uploads(demo.root)
    plain = tree_copy(demo.root, "plain")
    root = demo.root
    real = move_and_link(root, relative, elsewhere(kind))
    assert findings(root) == findings(plain)  # exit code, completeness and every finding
    before = {"tree": tree_state(root), "real": tree_state(real)}

    dry = run_cli("repair", str(root), "--dry-run", "--untagged")
    assert dry.returncode == 4, dry.stderr
    quarantines = {root / "registry-fsck-quarantine"} if kind == "same" else {
        real.parent / "registry-fsck-quarantine", *([] if relative == "docker" else [root / "registry-fsck-quarantine"])
    }
    for quarantine in quarantines:
        assert str(quarantine) in dry.stdout, (quarantine, dry.stdout)

    done = run_cli("repair", str(root), "--yes", "--untagged", "--json")
    assert done.returncode == 1, done.stderr
    outcome = orjson.loads(done.stdout)["outcome"]
    assert outcome["failed"] == [] and outcome["done"] > 0
    assert (root / relative).is_symlink()  # the link stays, what it leads to was repaired
    assert all(tags_served(root, demo.scenario, tmp_path / "after").values())
    for quarantine in quarantines:
        held = [p for p in (quarantine / outcome["run"] / "files").rglob("*") if p.is_file()]
        assert held, quarantine  # each file system's quarantine took what was on it
        assert {os.stat(p).st_dev for p in held} == {os.stat(quarantine).st_dev}
    journal = [orjson.loads(line) for line in
               (root / "registry-fsck-quarantine" if relative != "docker" else real.parent / "registry-fsck-quarantine")
               .joinpath(outcome["run"], "journal.jsonl").read_text().splitlines()]
    # The journal names the registry's paths and the real ones.
    assert journal[0]["v2_real"] == os.path.realpath(tree.v2(root))
    if relative != "docker":
        link = relative.removeprefix("docker/registry/v2/")
        below = [e for e in journal[1:] if e.get("op") == "remove" and e["path"].startswith(link + "/")]
        assert below and all(e["real"] == str(real) + e["path"][len(link):] for e in below)

    listed = orjson.loads(run_cli("runs", str(root), "--json").stdout)
    assert [r["run"] for r in listed] == [outcome["run"]]

    undone = run_cli("undo", str(root))
    assert undone.returncode == 0, undone.stderr
    assert tree_state(root) == before["tree"]
    assert tree_state(real) == before["real"]


def test_loops_and_aliases_are_notices_and_nothing_under_them_changes(demo, tmp_path):
    age_uploads(demo.root)
    v2 = tree.v2(demo.root)
    loop = v2 / "repositories" / "loop"
    loop.symlink_to(v2, target_is_directory=True)
    alias = v2 / "repositories" / "alias"
    alias.symlink_to(tree.repo_dir(demo.root, "repush/app"), target_is_directory=True)
    code, complete, found = findings(demo.root)
    assert code & 8 and not complete
    notices = {path: message for finding_id, path, _, message in found if finding_id == "unexpected"}
    assert "a loop" in notices["repositories/loop"]
    assert "an alias" in notices["repositories/alias"]
    result = run_cli("repair", str(demo.root), "--yes", "--untagged", "--json")
    plan = orjson.loads(result.stdout)
    assert not [a for a in plan["actions"] if a["path"].startswith(("repositories/loop", "repositories/alias"))]
    # On a partial view no blob, _layers link or manifest is removed, --force or not.
    forced = orjson.loads(run_cli("repair", str(demo.root), "--yes", "--untagged", "--force", "--json").stdout)
    for acted in (plan, forced):
        assert not {a["finding"] for a in acted["actions"]} & {
            "blob-orphan", "blob-unreachable", "layer-link-unused", "layer-link-dangling", "manifest-untagged",
        }
    assert loop.is_symlink() and alias.is_symlink()
    assert os.readlink(loop) == str(v2) and os.readlink(alias) == str(tree.repo_dir(demo.root, "repush/app"))


def test_purge_frees_what_each_file_system_s_quarantine_holds(demo, elsewhere):
    age_uploads(demo.root)
    root = demo.root
    real = move_and_link(root, "docker/registry/v2/blobs", elsewhere("other"))
    done = orjson.loads(run_cli("repair", str(root), "--yes", "--untagged", "--json").stdout)["outcome"]
    quarantines = [root / "registry-fsck-quarantine", real.parent / "registry-fsck-quarantine"]
    held = sum(p.stat().st_size for q in quarantines for p in (q / done["run"] / "files").rglob("*") if p.is_file())
    purged = run_cli("purge", str(root), "--all", "--yes")
    assert purged.returncode == 0, purged.stderr
    assert not any((q / done["run"] / "files").exists() for q in quarantines)
    (listed,) = orjson.loads(run_cli("runs", str(root), "--json").stdout)
    assert listed["state"] == "purged"
    assert str(held) in purged.stdout or report_size(held) in purged.stdout


def report_size(count):
    from fsck import report

    return report.size(count)
