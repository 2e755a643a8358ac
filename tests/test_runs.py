"""`runs`, `undo` and `purge` after interruptions and partial undos, on real trees: each says what is so.

What a run carried out is checked against what really is in its quarantine; what purge frees against
the sizes of the files left there; after every undo, every tag still pulls from a real registry.
"""

import os
import shutil
import subprocess
import sys

import orjson
import pytest
from clirun import REPO, answer_on_a_terminal, run_cli, snapshot

from fsck import report
from tests.harness import tree
from tests.harness.registry import Registry, age_uploads

pytestmark = pytest.mark.registry

QUARANTINE = "registry-fsck-quarantine"


def registry_tree(root):
    return {k: v for k, v in snapshot(root, directory_mtimes=False).items() if k.startswith("docker")}


def runs_of(root):
    result = run_cli("runs", str(root), "--json")
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout)


def journal(root, run):
    return [orjson.loads(line) for line in (root / QUARANTINE / run / "journal.jsonl").read_bytes().splitlines()]


def files_bytes(root, run):
    """What is really in the run's files/: the sizes of its files, as `find -type f` lists them."""
    files = root / QUARANTINE / run / "files"
    if not files.exists():
        return 0
    listed = subprocess.run(["find", str(files), "-type", "f", "-printf", "%s\n"], capture_output=True, text=True,
                            check=True).stdout.split()
    return sum(int(size) for size in listed)


def in_quarantine(root, run):
    """The journal's moves whose file is in the run's files/ (a move happened iff it is there)."""
    return [e for e in journal(root, run)[1:]
            if e.get("op") == "remove" and (root / QUARANTINE / run / "files" / e["path"]).exists()]


def crash_repair(root, after):
    crashed = subprocess.run([sys.executable, str(REPO / "tests" / "crash_repair.py"), str(root), str(after)],
                             capture_output=True, text=True, timeout=120, cwd=REPO)
    assert crashed.returncode == 137, crashed.stdout + crashed.stderr


def every_tag_pulls(demo, workdir):
    """The tags that do not pull, from a registry started on the tree now (repair and undo refuse under one)."""
    with Registry(demo.root, schema1=demo.scenario.schema1, workdir=workdir) as registry:
        return [f"{repo}:{tag}" for repo, tag, _ in demo.scenario.tagged() if not registry.pull_ok(repo, tag)]


def block_one_restore(root, run):
    """Put something new at the place of one blob the run moved away, as a push would: undo must keep it."""
    moved = next(e for e in journal(root, run)[1:] if e.get("op") == "remove" and e["finding"] == "blob-orphan")
    place = tree.v2(root) / moved["path"]
    place.mkdir(parents=True)
    (place / "data").write_bytes(b"pushed since the run\n")
    return moved, place


@pytest.fixture
def quiet_demo(demo):
    age_uploads(demo.root)
    return demo


def test_interrupted_run_shows_what_it_carried_out_not_what_it_journaled(quiet_demo, tmp_path):
    root = quiet_demo.root
    tree.add_orphan_blobs(root, 300)  # more than one batch of 256 journal entries
    before = registry_tree(root)
    planned = orjson.loads(run_cli("repair", str(root), "--dry-run", "--json").stdout)["summary"]["actions"]
    assert planned > 280
    crash_repair(root, 280)  # killed in the second batch, after its 280th change

    [run] = runs_of(root)
    carried = in_quarantine(root, run["run"])
    assert run["state"] == "interrupted" and not run["committed"]
    assert run["changes"] == len(carried) == 280
    assert run["journaled"] == planned  # both batches journaled, each before its changes
    assert run["bytes"] == sum(e["bytes"] for e in carried) > 0
    assert [e for e in journal(root, run["run"]) if e.get("op") == "done"] == [{"op": "done", "not_done": []}]
    text = run_cli("runs", str(root)).stdout.splitlines()
    assert text[0].split() == ["RUN", "STARTED", "STATE", "CHANGES", "LEFT", "HELD", "OPTIONS"]
    assert text[1].split()[2:4] == ["interrupted", "280"]

    undone = run_cli("undo", str(root))
    assert undone.returncode == 0, undone.stdout + undone.stderr
    assert f"run {run['run']}: 280 changes undone" in undone.stdout
    assert registry_tree(root) == before
    assert every_tag_pulls(quiet_demo, tmp_path / "serve") == []
    [after] = runs_of(root)
    assert (after["state"], after["changes"], after["left"], after["bytes"]) == ("undone", 280, 0, 0)
    assert not (root / QUARANTINE / run["run"] / "files").exists()  # the journal alone stays


def test_partly_undone_run_stays_and_a_second_undo_finishes_it(quiet_demo, tmp_path):
    root = quiet_demo.root
    before = registry_tree(root)
    assert run_cli("repair", str(root), "--yes", "--untagged").returncode == 1
    [run] = runs_of(root)
    assert run["state"] == "complete" and run["changes"] == run["journaled"] == run["left"] > 0
    moved, place = block_one_restore(root, run["run"])

    partial = run_cli("undo", str(root))
    assert partial.returncode == 4 and "something new is at its place" in partial.stdout
    assert "partly undone: 1 left" in partial.stdout
    [now] = runs_of(root)
    assert (now["state"], now["left"], now["changes"]) == ("partly undone", 1, run["changes"])
    assert now["bytes"] == moved["bytes"] == files_bytes(root, run["run"])
    assert run_cli("runs", str(root)).stdout.splitlines()[1].split()[2:4] == ["partly", "undone"]

    shutil.rmtree(place)  # what kept it out is gone: the next undo (no RUN) takes this run again
    finished = run_cli("undo", str(root))
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert f"run {run['run']}: 1 changes undone" in finished.stdout
    assert registry_tree(root) == before
    assert every_tag_pulls(quiet_demo, tmp_path / "serve") == []
    assert [r["state"] for r in runs_of(root)] == ["undone"]


def test_undo_without_run_never_goes_back_to_an_undone_run(quiet_demo, tmp_path):
    root = quiet_demo.root
    before = registry_tree(root)
    assert run_cli("repair", str(root), "--yes", "--only", "tag-index-stale").returncode & 1
    assert run_cli("repair", str(root), "--yes").returncode & 1
    first, second = (r["run"] for r in runs_of(root))

    undo_second = run_cli("undo", str(root))
    assert undo_second.returncode == 0 and f"run {second}:" in undo_second.stdout
    undo_first = run_cli("undo", str(root))
    assert undo_first.returncode == 0 and f"run {first}:" in undo_first.stdout, undo_first.stdout
    assert registry_tree(root) == before
    assert every_tag_pulls(quiet_demo, tmp_path / "serve") == []
    nothing = run_cli("undo", str(root))
    assert nothing.returncode == 8 and "nothing to undo" in nothing.stderr
    again = run_cli("undo", str(root), second)
    assert again.returncode == 8 and "already undone" in again.stderr
    assert registry_tree(root) == before
    assert [r["state"] for r in runs_of(root)] == ["undone", "undone"]


def test_purge_after_a_partial_undo_frees_what_is_left_and_asks_first(quiet_demo):
    root = quiet_demo.root
    assert run_cli("repair", str(root), "--yes", "--untagged").returncode == 1
    [run] = runs_of(root)
    full = files_bytes(root, run["run"])
    moved, _ = block_one_restore(root, run["run"])
    assert run_cli("undo", str(root)).returncode == 4
    left = files_bytes(root, run["run"])
    assert 0 < left < full and left == moved["bytes"]
    quarantine = root / QUARANTINE

    kept = snapshot(quarantine)
    dry = run_cli("purge", str(root), "--all", "--dry-run")
    assert dry.returncode == 0 and "dry run: nothing purged" in dry.stdout
    assert f"{run['run']}  partly undone" in dry.stdout and report.size(left) in dry.stdout
    refused = run_cli("purge", str(root), "--all")
    assert refused.returncode == 16 and "not on a terminal: give --yes" in refused.stderr
    assert report.size(left) in refused.stderr  # the plan, on stderr, as repair shows it
    both = run_cli("purge", str(root), "--all", "--dry-run", "--yes")
    assert both.returncode == 16 and "contradict" in both.stderr
    assert snapshot(quarantine) == kept

    purged = run_cli("purge", str(root), "--all", "--yes")
    assert purged.returncode == 0, purged.stderr
    assert f"purged 1 run(s), freed {report.size(left)}" in purged.stdout
    assert not (quarantine / run["run"] / "files").exists()
    [after] = runs_of(root)
    assert (after["state"], after["purged"], after["bytes"]) == ("purged", True, 0)
    again = run_cli("purge", str(root), "--run", run["run"], "--yes")
    assert again.returncode == 0 and f"purged 0 run(s), freed {report.size(0)}" in again.stdout
    assert "is purged: nothing left to free" in again.stdout
    undo = run_cli("undo", str(root))
    assert undo.returncode == 8 and "nothing to undo" in undo.stderr


def test_runs_lists_the_options_each_repair_used_and_old_journals_still_list(quiet_demo, tmp_path):
    root = quiet_demo.root
    protect = tmp_path / "protect.txt"
    protect.write_text("# nothing pinned\n")
    assert run_cli("repair", str(root), "--yes", "--skip", "dir-empty", "--min-age", "0s",
                   "--protect", str(protect)).returncode & 1
    [run] = runs_of(root)
    assert run["options"] == {
        "untagged": False, "fix_damage": False, "only": None, "skip": ["dir-empty"], "min_age": "0s",
        "upload_age": "168h", "protect": str(protect), "from": None, "verify": False, "delete": False,
        "force": False,
    }
    row = run_cli("runs", str(root)).stdout.splitlines()[1]
    assert row.endswith(f"--skip dir-empty --min-age 0s --protect {protect}"), row

    # As a journal from before options and "done" records were kept: what was carried out is read off the tree.
    path = root / QUARANTINE / run["run"] / "journal.jsonl"
    records = [r for r in journal(root, run["run"]) if r.get("op") != "done"]
    del records[0]["options"]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    [old] = runs_of(root)
    assert old["options"] is None
    assert (old["state"], old["changes"], old["bytes"]) == ("complete", run["changes"], run["bytes"])
    assert run_cli("runs", str(root)).stdout.splitlines()[1].endswith("  -")


def test_a_line_torn_by_a_crash_is_passed_over_and_undo_settles_what_happened(quiet_demo):
    root = quiet_demo.root
    before = registry_tree(root)
    crash_repair(root, 5)
    [run] = runs_of(root)
    path = root / QUARANTINE / run["run"] / "journal.jsonl"
    with open(path, "ab") as handle:  # as a crash halfway through writing the next batch would leave it
        handle.write(b'{"op":"remove","finding":"blob-orphan","bytes":7,"pa')
    assert runs_of(root)[0]["changes"] == 5

    undone = run_cli("undo", str(root))
    assert undone.returncode == 0 and "5 changes undone" in undone.stdout, undone.stdout + undone.stderr
    assert registry_tree(root) == before
    [after] = runs_of(root)  # read off the journal now: the tree no longer shows what the run did
    assert (after["state"], after["changes"], after["journaled"]) == ("undone", 5, run["journaled"])
    assert os.path.getsize(path) > 0 and path.read_bytes().endswith(b"\n")


def answer_purge_prompt(root, keys):
    """`purge --all` on a terminal: wait for the question, type `keys`; return (exit code, screen)."""
    return answer_on_a_terminal(["purge", str(root), "--all"], b"for good?", keys)


def test_purge_asks_on_a_terminal_and_a_no_keeps_everything(quiet_demo):
    root = quiet_demo.root
    assert run_cli("repair", str(root), "--yes").returncode & 1
    [run] = runs_of(root)
    held = files_bytes(root, run["run"])
    kept = snapshot(root / QUARANTINE)
    code, screen = answer_purge_prompt(root, b"n\r")
    assert code == 0 and "declined: nothing purged" in screen, screen
    assert report.size(held) in screen.split("for good?")[0]
    assert snapshot(root / QUARANTINE) == kept
    code, screen = answer_purge_prompt(root, b"y\r")
    assert code == 0 and f"purged 1 run(s), freed {report.size(held)}" in screen, screen
    assert [r["state"] for r in runs_of(root)] == ["purged"]
