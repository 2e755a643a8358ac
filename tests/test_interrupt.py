"""Ctrl-C (a real SIGINT) at every stage: one line, exit 32; a repair stops after the change under way,
says what it did, leaves a consistent journal, and `undo` puts the tree back exactly.

`tests/interrupting.py` sends the SIGINT at a chosen point (deterministic); the tests marked "from
outside" send it from this process while the command runs, as a person at the terminal would.
"""

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
from clirun import DEMO, REPO, run_cli, snapshot

from tests.harness import tree
from tests.harness.registry import age_uploads

ONE_LINE = "registry-fsck: interrupted\n"
REPAIRED_SOME_LEFT_SOME_INTERRUPTED = 1 | 4 | 32


def interrupted_at(point, *args, tmp_path, entry_point=False):
    """Run the command line with a SIGINT at `point` (see tests/interrupting.py); returns the finished
    process and how many SIGINTs were sent."""
    mark = tmp_path / f"sent-{time.monotonic_ns()}"
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "interrupting.py"), point, str(mark),
         *(["--entry-point"] if entry_point else []), "--", *args],
        capture_output=True, text=True, timeout=300, cwd=REPO, stdin=subprocess.DEVNULL,
    )
    return result, len(mark.read_text().splitlines()) if mark.exists() else 0


def registry_tree(root):
    """What `undo` restores: the tree under docker/ (names, contents, modes, owners; not directory clocks)."""
    return {k: v for k, v in snapshot(root, directory_mtimes=False).items() if k.startswith("docker")}


def the_run(root):
    runs = orjson.loads(run_cli("runs", str(root), "--json").stdout)
    assert len(runs) == 1, runs
    return runs[0]


def journal(root, run):
    lines = (root / "registry-fsck-quarantine" / run / "journal.jsonl").read_bytes().splitlines()
    return [orjson.loads(line) for line in lines]


def wait_for(predicate, process, what, timeout=120):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, f"the command ended before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout}s"
        time.sleep(0.001)


def interrupt_until_it_ends(process, every=0.02, timeout=120):
    """Ctrl-C, again and again, until the command is gone (its output read meanwhile, as a terminal
    would): it must end once, cleanly. Returns (stdout, stderr)."""

    def press():
        while process.poll() is None:
            process.send_signal(signal.SIGINT)
            time.sleep(every)

    presser = threading.Thread(target=press, daemon=True)
    presser.start()
    try:
        return process.communicate(timeout=timeout)
    finally:
        process.kill()
        presser.join()


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory):
    """The real demo tree with 20,000 orphan blobs: an audit long enough to be interrupted in the middle."""
    root = tree.copy_tree(DEMO, tmp_path_factory.mktemp("big") / "root")
    tree.add_orphan_blobs(root, 20_000)
    return root


# Start-up and audit.


# typer: the first of the heavy imports; zoneinfo: imported by orjson's initialisation (in C), which
# crashes the interpreter if an exception is raised there.
@pytest.mark.parametrize("module", ["typer", "zoneinfo"])
@pytest.mark.parametrize("entry_point", [False, True], ids=["python -m fsck", "console script"])
def test_ctrl_c_while_importing_is_one_line_and_exit_32(tmp_path, entry_point, module):
    result, sent = interrupted_at(f"import:{module}", "audit", str(DEMO), tmp_path=tmp_path, entry_point=entry_point)
    assert sent == 1
    assert (result.returncode, result.stderr, result.stdout) == (32, ONE_LINE, "")


@pytest.mark.parametrize("output", [[], ["--json"]], ids=["text", "json"])
def test_ctrl_c_during_the_audit_is_one_line_exit_32_and_no_partial_report(big_tree, tmp_path, output):
    result, sent = interrupted_at("after:list:1000", "audit", str(big_tree), *output, tmp_path=tmp_path)
    assert sent == 1
    assert (result.returncode, result.stderr, result.stdout) == (32, ONE_LINE, "")


def test_ctrl_c_from_outside_during_the_audit_of_a_big_tree(big_tree):
    before = snapshot(big_tree)
    process = subprocess.Popen(
        [sys.executable, "-m", "fsck", "audit", str(big_tree), "--json"], cwd=REPO,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # orjson is loaded while fsck.cli is imported, after the Ctrl-C handling is in place (a SIGINT before
    # that, in the interpreter's own start-up, ends the process as Python does: no program runs yet).
    maps = Path(f"/proc/{process.pid}/maps")
    wait_for(lambda: "orjson" in maps.read_text(), process, "imports")
    stdout, stderr = interrupt_until_it_ends(process)
    assert (process.returncode, stderr, stdout) == (32, ONE_LINE, "")
    assert snapshot(big_tree) == before


# Repair.


@pytest.fixture
def many_actions(demo):
    """The real demo tree, not live (uploads aged), with 600 orphan blobs: a plan over three journal batches."""
    age_uploads(demo.root)
    tree.add_orphan_blobs(demo.root, 600)
    return demo


def planned_actions(root):
    document = orjson.loads(run_cli("repair", str(root), "--dry-run", "--json").stdout)
    assert all(a["action"] == "remove" for a in document["actions"])
    return len(document["actions"])


@pytest.mark.registry
def test_ctrl_c_mid_repair_stops_after_the_change_under_way_and_the_json_says_what_was_done(many_actions, tmp_path):
    root = many_actions.root
    before = registry_tree(root)
    total = planned_actions(root)
    # Twice, as an impatient person would: the second changes nothing.
    result, sent = interrupted_at("after:move:300:2", "repair", str(root), "--yes", "--json", tmp_path=tmp_path)
    assert sent == 2
    assert (result.returncode, result.stderr) == (REPAIRED_SOME_LEFT_SOME_INTERRUPTED, ONE_LINE)
    document = orjson.loads(result.stdout)
    assert document["exit_code"] == result.returncode
    assert document["summary"]["actions"] == total
    outcome = document["outcome"]
    assert (outcome["done"], outcome["vanished"], outcome["failed"], outcome["directories_removed"]) == (300, 0, [], 0)
    done = {a["path"] for a in document["actions"][:300]}
    assert outcome["bytes_quarantined"] == sum(a["bytes"] for a in document["actions"][:300])

    # The journal: every change made is journaled, the run is not committed, and what was journaled
    # but not done is still in place (undo skips it).
    run = the_run(root)
    assert run["run"] == outcome["run"] and not run["committed"] and not run["purged"]
    entries = journal(root, run["run"])
    assert all(e.get("op") != "commit" for e in entries)
    removals = [e["path"] for e in entries if e.get("op") == "remove"]
    assert set(removals[:300]) == done and len(removals) == 512  # two batches of 256 journaled
    quarantined = root / "registry-fsck-quarantine" / run["run"] / "files"
    for path in removals[:300]:
        assert not (tree.v2(root) / path).exists() and (quarantined / path).exists(), path
    for path in removals[300:]:
        assert (tree.v2(root) / path).exists() and not (quarantined / path).exists(), path

    undone = run_cli("undo", str(root))
    assert undone.returncode == 0, undone.stderr
    assert registry_tree(root) == before


@pytest.mark.registry
def test_after_an_interrupted_repair_a_new_one_finishes_and_undo_restores_both(many_actions, tmp_path):
    root = many_actions.root
    before = registry_tree(root)
    total = planned_actions(root)
    result, _ = interrupted_at("after:move:5", "repair", str(root), "--yes", tmp_path=tmp_path)
    assert (result.returncode, result.stderr) == (REPAIRED_SOME_LEFT_SOME_INTERRUPTED, ONE_LINE)
    # The text says what was done and what was not, after the plan.
    lines = result.stdout.splitlines()
    assert lines[-3].startswith("run ") and lines[-3].endswith(": 5 done, 0 empty directories removed")
    assert lines[-1].startswith(f"interrupted: {total - 5} of {total} actions not carried out")

    finished = run_cli("repair", str(root), "--yes", "--json")
    assert finished.returncode == 1 | 4, finished.stderr  # untagged manifests stay by default
    assert orjson.loads(finished.stdout)["outcome"]["done"] == total - 5
    assert orjson.loads(run_cli("audit", str(root), "--json").stdout)["summary"]["by_id"].keys() <= {
        "manifest-untagged", "blob-unreachable", "layer-link-unused",
    }
    for _ in range(2):  # the finishing run, then the interrupted one
        assert run_cli("undo", str(root)).returncode == 0
    assert registry_tree(root) == before


@pytest.mark.registry
def test_ctrl_c_during_repair_delete_deletes_nothing_and_stays_undoable(many_actions, tmp_path):
    root = many_actions.root
    before = registry_tree(root)
    result, _ = interrupted_at("after:move:400", "repair", str(root), "--yes", "--delete", "--json", tmp_path=tmp_path)
    assert result.returncode == REPAIRED_SOME_LEFT_SOME_INTERRUPTED, result.stderr
    outcome = orjson.loads(result.stdout)["outcome"]
    assert outcome["done"] == 400 and outcome["bytes_freed"] == 0 and outcome["bytes_quarantined"] > 0
    assert not the_run(root)["purged"]
    assert run_cli("undo", str(root)).returncode == 0
    assert registry_tree(root) == before


@pytest.mark.registry
def test_ctrl_c_from_outside_mid_repair_of_a_served_tree(demo, demo_registry):
    """A registry serves the tree throughout (--force past the liveness guard): every tag pulls after the
    interrupted run, and after undo."""
    age_uploads(demo.root)
    tree.add_orphan_blobs(demo.root, 20_000)
    before = registry_tree(demo.root)
    process = subprocess.Popen(
        [sys.executable, "-m", "fsck", "repair", str(demo.root), "--yes", "--force", "--json", "--quiet"], cwd=REPO,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    quarantine = demo.root / "registry-fsck-quarantine"

    def first_batch_journaled():
        journals = list(quarantine.glob("*/journal.jsonl"))
        return bool(journals) and journals[0].read_bytes().count(b"\n") > 1

    wait_for(first_batch_journaled, process, "journal")
    stdout, stderr = interrupt_until_it_ends(process, every=0.005)
    overridden, said = stderr.splitlines(keepends=True)
    assert "is serving" in overridden and overridden.endswith("going ahead (--force)\n")
    assert said == ONE_LINE
    document = orjson.loads(stdout)
    outcome = document["outcome"]
    assert 0 < outcome["done"] + outcome["vanished"] < document["summary"]["actions"]
    assert process.returncode == document["exit_code"] == (32 | 4 | (1 if outcome["done"] else 0))
    for repo, tag, _ in demo.scenario.tagged():
        assert demo_registry.pull_ok(repo, tag), f"{repo}:{tag} after the interrupted repair"
    assert run_cli("undo", str(demo.root), "--force").returncode == 0
    assert registry_tree(demo.root) == before
    for repo, tag, _ in demo.scenario.tagged():
        assert demo_registry.pull_ok(repo, tag), f"{repo}:{tag} after undo"


# The other commands: exit 32 at the top, whatever they were doing.


@pytest.mark.registry
@pytest.mark.parametrize("command", [["audit"], ["repair", "--yes"], ["runs"], ["undo"], ["purge", "--all"]])
def test_ctrl_c_in_every_command_is_one_line_exit_32_and_changes_nothing(demo, tmp_path, command):
    age_uploads(demo.root)
    assert run_cli("repair", str(demo.root), "--yes").returncode & 1  # a run, for runs, undo and purge
    before = snapshot(demo.root)
    # The first store the command opens is where it starts its work.
    result, sent = interrupted_at("after:__post_init__:1", command[0], str(demo.root), *command[1:], tmp_path=tmp_path)
    assert sent == 1
    assert (result.returncode, result.stderr) == (32, ONE_LINE)
    assert snapshot(demo.root) == before


@pytest.mark.registry
def test_ctrl_c_mid_undo_exits_32_and_a_new_undo_finishes(demo, tmp_path):
    age_uploads(demo.root)
    before = registry_tree(demo.root)
    assert run_cli("repair", str(demo.root), "--yes", "--untagged").returncode == 1
    result, _ = interrupted_at("after:move:5", "undo", str(demo.root), tmp_path=tmp_path)
    assert (result.returncode, result.stderr) == (32, ONE_LINE)
    assert run_cli("undo", str(demo.root), "--force").returncode == 0
    assert registry_tree(demo.root) == before
