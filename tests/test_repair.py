"""Repair on real registry trees: every intact tag still pulls, garbage is gone, undo restores the tree."""

import fcntl
import multiprocessing
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import orjson
import pytest
from clirun import REPO, audit_records, invoke, run_cli, snapshot

from tests.harness import tree
from tests.harness.registry import Registry, age_uploads

pytestmark = pytest.mark.registry


def registry_tree(root):
    return {k: v for k, v in snapshot(root, directory_mtimes=False).items() if k.startswith("docker")}


@pytest.fixture
def quiet_demo(demo):
    """The demo with every upload aged: a stopped registry, not a live one."""
    age_uploads(demo.root)
    return demo


def served_exactly(registry, scenario, deep=False):
    """Every tag answers with its digest, every manifest it needs and every blob they need (a pull's requests)."""
    problems = []
    for repo, tag, digest in scenario.tagged():
        if registry.manifest_digest(repo, tag) != digest:
            problems.append(f"{repo}:{tag} answers another digest")
            continue
        pending = [digest]
        while pending:
            current = pending.pop()
            facts = scenario.manifests[current]
            if registry.request("HEAD", f"/v2/{repo}/manifests/{current}",
                                headers={"Accept": facts.media_type}).status != 200:
                problems.append(f"{repo}@{current} (for {tag}) is not served")
            for blob in facts.blob_references:
                if registry.request("HEAD", f"/v2/{repo}/blobs/{blob}").status != 200:
                    problems.append(f"{repo} blob {blob} (for {tag}) is not served")
            pending.extend(facts.children)
        if deep and not registry.pull_ok(repo, tag, all=True):
            problems.append(f"skopeo copy --all {repo}:{tag} fails")
    for repo, referrers in scenario.referrers.items():
        for digest in referrers:
            if registry.request("HEAD", f"/v2/{repo}/manifests/{digest}",
                                headers={"Accept": scenario.manifests[digest].media_type}).status != 200:
                problems.append(f"referrer {repo}@{digest} is not served")
    return problems


def serve(root, tmp_path, scenario, deep=False, name="serve"):
    with Registry(root, schema1=scenario.schema1, workdir=tmp_path / name) as registry:
        return served_exactly(registry, scenario, deep)


def test_repair_untagged_keeps_every_tag_and_referrer_then_undo_restores(quiet_demo, tmp_path):
    demo = quiet_demo
    before = registry_tree(demo.root)
    assert serve(demo.root, tmp_path, demo.scenario, name="before") == []
    result = run_cli("repair", str(demo.root), "--yes", "--untagged", "--json")
    assert result.returncode == 1, result.stderr
    document = orjson.loads(result.stdout)
    assert document["outcome"]["done"] == document["summary"]["actions"] > 0
    assert {a["finding"] for a in document["actions"]} >= {"tag-index-stale", "manifest-untagged", "blob-orphan",
                                                           "blob-unreachable", "repo-empty", "upload-stale"}
    assert serve(demo.root, tmp_path, demo.scenario, deep=True, name="after") == []
    assert run_cli("audit", str(demo.root)).returncode == 0
    assert [r for r in audit_records(demo.root) if r["severity"] != "notice"] == []
    with Registry(demo.root, schema1=demo.scenario.schema1, workdir=tmp_path / "catalog") as registry:
        assert not set(registry.catalog()) & set(demo.scenario.empty_repos)
    undone = run_cli("undo", str(demo.root))
    assert undone.returncode == 0, undone.stderr
    assert registry_tree(demo.root) == before


def test_default_repair_keeps_untagged_manifests_and_their_blobs(quiet_demo, tmp_path):
    demo = quiet_demo
    result = run_cli("repair", str(demo.root), "--yes")
    assert result.returncode == 1 | 4, result.stderr  # repaired, and untagged manifests left
    for repo, digests in demo.scenario.untagged.items():
        if repo in demo.scenario.empty_repos:
            continue
        for digest in digests:
            assert tree.revision_link(demo.root, repo, digest).is_file()
            for blob in (digest, *demo.scenario.manifests[digest].references):
                assert tree.blob_data(demo.root, blob).is_file(), (repo, digest, blob)
    with Registry(demo.root, schema1=demo.scenario.schema1, workdir=tmp_path / "after") as registry:
        for repo, digests in demo.scenario.untagged.items():
            for digest in digests:
                assert registry.pull_ok(repo, digest, all=True), f"{repo}@{digest} no longer pulls"
    remaining = {r["id"] for r in audit_records(demo.root) if r["severity"] != "notice"}
    assert remaining <= {"manifest-untagged", "blob-unreachable", "layer-link-unused"}


def test_dry_run_and_no_terminal_change_nothing(quiet_demo):
    before = snapshot(quiet_demo.root)
    dry = run_cli("repair", str(quiet_demo.root), "--dry-run", "--untagged")
    assert dry.returncode == 4 and "plan:" in dry.stdout
    refused = run_cli("repair", str(quiet_demo.root))
    assert refused.returncode == 16 and "--yes" in refused.stderr
    assert snapshot(quiet_demo.root) == before


def test_protected_digest_keeps_untagged_manifest_pullable(quiet_demo, tmp_path):
    demo = quiet_demo
    digest = sorted(demo.scenario.untagged["repush/app"])[0]
    protect = tmp_path / "protect.txt"
    protect.write_text(f"# pinned by a deployment\nregistry.example.com:5000/repush/app@{digest}\n")
    result = run_cli("repair", str(demo.root), "--yes", "--untagged", "--protect", str(protect))
    assert result.returncode & 1, result.stderr
    with Registry(demo.root, schema1=demo.scenario.schema1, workdir=tmp_path / "after") as registry:
        assert registry.pull_ok("repush/app", digest, all=True)


def test_fresh_upload_means_live_registry_and_repair_refuses(demo):
    before = snapshot(demo.root)
    result = run_cli("repair", str(demo.root), "--yes")
    assert result.returncode & 8 and "looks live" in result.stderr
    assert snapshot(demo.root) == before


def test_answering_registry_is_refused(quiet_demo, tmp_path):
    with Registry(quiet_demo.root, schema1=True, workdir=tmp_path / "live") as registry:
        result = run_cli("repair", "--config", str(registry.config_path), "--yes")
        assert result.returncode == 8 and f"registry pid {registry.pid} " in result.stderr


def test_lock_keeps_a_second_repair_out(quiet_demo):
    quarantine = quiet_demo.root / "registry-fsck-quarantine"
    quarantine.mkdir()
    fd = os.open(quarantine / "lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        result = run_cli("repair", str(quiet_demo.root), "--yes")
    finally:
        os.close(fd)
    assert result.returncode == 8 and "lock" in result.stderr


def test_quarantine_on_another_file_system_is_refused(quiet_demo):
    other = Path("/dev/shm") / f"registry-fsck-test-{os.getpid()}"
    if not other.parent.is_dir() or os.stat(other.parent).st_dev == os.stat(quiet_demo.root).st_dev:
        pytest.skip("no second file system here")
    try:
        result = run_cli("repair", str(quiet_demo.root), "--yes", "--quarantine", str(other))
    finally:
        subprocess.run(["rm", "-rf", str(other)], check=False)
    assert result.returncode == 8 and "another file system" in result.stderr


def test_min_age_leaves_recent_objects(quiet_demo):
    result = run_cli("repair", str(quiet_demo.root), "--dry-run", "--untagged", "--min-age", "1h", "--json")
    document = orjson.loads(result.stdout)
    assert document["summary"]["actions"] == 0
    assert {s["reason"] for s in document["skipped"]} == {"younger than --min-age"}


def test_from_report_repairs_only_what_it_lists_and_says_what_no_longer_holds(quiet_demo, tmp_path):
    demo = quiet_demo
    saved = tmp_path / "report.json"
    assert run_cli("audit", str(demo.root), "--json", "-o", str(saved)).returncode == 4
    document = orjson.loads(saved.read_bytes())
    orphans = [f for f in document["findings"] if f["id"] == "blob-orphan"]
    gone, kept = orphans[0], orphans[1:]
    subprocess.run(["rm", "-r", str(tree.v2(demo.root) / gone["path"])], check=True)
    # Orphans whose _layers links stay are kept (the registry would serve a missing blob): list the links too.
    chosen = {"blob-orphan", "layer-link-unused", "repo-empty"}
    document["findings"] = [f for f in document["findings"] if f["id"] in chosen]
    listed = tmp_path / "orphans.json"
    listed.write_bytes(orjson.dumps(document))
    result = run_cli("repair", str(demo.root), "--from", str(listed), "--yes", "--json")
    plan = orjson.loads(result.stdout)
    assert {a["finding"] for a in plan["actions"]} <= chosen
    assert {a["path"] for a in plan["actions"] if a["finding"] == "blob-orphan"} == {f["path"] for f in kept}
    gone_reasons = [(s["path"], s["reason"]) for s in plan["skipped"] if s["reason"].startswith("no longer")]
    assert gone_reasons == [(gone["path"], "no longer holds in the tree")]
    kept_by_untagged = {s["id"] for s in plan["skipped"] if s["reason"].startswith("still used")}
    assert kept_by_untagged <= {"layer-link-unused"}
    assert not (tree.v2(demo.root) / kept[0]["path"]).exists()


def test_orphan_blob_still_linked_is_kept_when_its_link_stays(quiet_demo):
    result = run_cli("repair", str(quiet_demo.root), "--dry-run", "--only", "blob-orphan", "--json")
    plan = orjson.loads(result.stdout)
    linked = [s for s in plan["skipped"] if s["reason"] == "a _layers link that stays still names it"]
    assert linked, "the demo's orphan uploads are linked in _layers"
    assert not {s["path"] for s in linked} & {a["path"] for a in plan["actions"]}


def test_delete_frees_space_and_cannot_be_undone(quiet_demo):
    result = run_cli("repair", str(quiet_demo.root), "--yes", "--delete", "--json")
    outcome = orjson.loads(result.stdout)["outcome"]
    assert outcome["bytes_freed"] > 0 and outcome["bytes_quarantined"] == 0
    runs = orjson.loads(run_cli("runs", str(quiet_demo.root), "--json").stdout)
    assert [r["purged"] for r in runs] == [True]
    undo = run_cli("undo", str(quiet_demo.root), runs[0]["run"])
    assert undo.returncode == 8 and "purged" in undo.stderr


def test_purge_frees_what_a_run_quarantined(quiet_demo):
    assert run_cli("repair", str(quiet_demo.root), "--yes").returncode & 1
    runs = orjson.loads(run_cli("runs", str(quiet_demo.root), "--json").stdout)
    assert runs[0]["bytes"] > 0 and not runs[0]["purged"]
    assert run_cli("purge", str(quiet_demo.root)).returncode == 16  # which runs?
    result = run_cli("purge", str(quiet_demo.root), "--all", "--yes")
    assert result.returncode == 0 and "purged 1 run" in result.stdout
    assert not (quiet_demo.root / "registry-fsck-quarantine" / runs[0]["run"] / "files").exists()


def crash_points(root):
    """How many changes a full --untagged run makes on this tree (its moves, then its directory removals)."""
    result = subprocess.run([sys.executable, str(REPO / "tests" / "crash_repair.py"), str(root), "0", "--untagged"],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    journal = next((root / "registry-fsck-quarantine").glob("*/journal.jsonl"))
    return sum(1 for line in journal.read_bytes().splitlines() if orjson.loads(line).get("op") in ("remove", "rmdir"))


def crash_and_check(base, k, tmp_path, scenario, deep=False):
    root = tree.copy_tree(base, tmp_path / f"k{k}")
    original = registry_tree(root)
    crashed = subprocess.run([sys.executable, str(REPO / "tests" / "crash_repair.py"), str(root), str(k), "--untagged"],
                             capture_output=True, text=True, timeout=120, cwd=REPO)
    assert crashed.returncode == 137, crashed.stdout + crashed.stderr
    assert serve(root, tmp_path, scenario, deep=deep, name=f"k{k}-crashed") == [], f"after {k} changes"
    [crashed_run] = orjson.loads(invoke("runs", str(root), "--json")[1])
    assert (crashed_run["state"], crashed_run["changes"]) == ("interrupted", k), "runs says what was carried out"
    code, _ = invoke("repair", str(root), "--yes", "--untagged", "--quiet")
    assert code in (0, 1), f"finishing after a crash at {k}"
    assert invoke("audit", str(root), "--quiet")[0] == 0, f"garbage left after finishing, k={k}"
    runs = orjson.loads(invoke("runs", str(root), "--json")[1])
    assert 1 <= len(runs) <= 2
    for _ in runs:  # the finishing run (if there was anything left), then the interrupted one
        assert invoke("undo", str(root))[0] == 0
    assert registry_tree(root) == original, f"undo after a crash at {k}"


@pytest.fixture
def crash_base(quiet_demo, tmp_path):
    base = tree.copy_tree(quiet_demo.root, tmp_path / "base")
    probe = tree.copy_tree(base, tmp_path / "probe")
    return base, crash_points(probe)


def test_crash_at_first_middle_and_last_change(crash_base, tmp_path, quiet_demo):
    base, total = crash_base
    assert total > 10
    for k in sorted({1, total // 2, total}):
        crash_and_check(base, k, tmp_path, quiet_demo.scenario)


@pytest.mark.slow
def test_crash_after_every_change(crash_base, tmp_path, quiet_demo):
    base, total = crash_base
    # Each k on its own copy and registry, in a process of its own (`invoke` runs the CLI in-process, and
    # its output capture is not thread-safe); most of the time is the registry's and skopeo's. The
    # arguments reach the forked processes as they are (the scenario does not pickle).
    _FORKED_CHECK[:] = [partial(crash_and_check, base, tmp_path=tmp_path, scenario=quiet_demo.scenario, deep=True)]
    with ProcessPoolExecutor(3, mp_context=multiprocessing.get_context("fork")) as pool:
        list(pool.map(_forked_check, range(1, total + 1)))


_FORKED_CHECK: list = []


def _forked_check(k: int) -> None:
    _FORKED_CHECK[0](k)


def test_incomplete_audit_removes_only_what_does_not_depend_on_the_unread_part(quiet_demo):
    manifests_dir = tree.repo_dir(quiet_demo.root, "plain/app") / "_manifests"
    os.chmod(manifests_dir, 0)
    try:
        def repair(*extra):
            result = subprocess.run(
                ["setpriv", "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-m", "fsck",
                 "repair", str(quiet_demo.root), "--dry-run", "--json", *extra],
                capture_output=True, text=True, timeout=120, cwd=REPO,
            )
            document = orjson.loads(result.stdout)
            assert result.returncode == document["exit_code"] == 8 | 4  # actions pending, and the view partial
            return document

        careful, forced = repair(), repair("--force")
    finally:
        os.chmod(manifests_dir, 0o755)
    safe = {"tag-index-stale", "upload-stale", "tmp-leftover", "dir-empty"}
    assert {a["finding"] for a in careful["actions"]} <= safe
    assert {s["reason"] for s in careful["skipped"] if s["id"] in ("blob-orphan", "layer-link-unused")} == {
        "part of the tree could not be read or followed (see dir-unreadable and unexpected): what refers to it is unknown"
    }
    # --force never turns a verdict on a partial view into a removal.
    assert forced["actions"] == careful["actions"]
    assert not [a for a in careful["actions"] if a["repository"] == "plain/app"]


def test_only_and_skip_select_finding_ids(quiet_demo):
    only = orjson.loads(run_cli("repair", str(quiet_demo.root), "-n", "--json", "--only", "tag-index-stale").stdout)
    assert {a["finding"] for a in only["actions"]} == {"tag-index-stale"}
    skip = orjson.loads(run_cli("repair", str(quiet_demo.root), "-n", "--json", "--skip", "blob-orphan,dir-empty").stdout)
    assert {a["finding"] for a in skip["actions"]}.isdisjoint({"blob-orphan", "dir-empty"})
    assert "tag-index-stale" in {a["finding"] for a in skip["actions"]}
    bad = run_cli("repair", str(quiet_demo.root), "-n", "--only", "no-such-id")
    assert bad.returncode == 16 and "no-such-id" in bad.stderr


def test_purge_older_than_keeps_recent_runs(quiet_demo):
    assert run_cli("repair", str(quiet_demo.root), "--yes").returncode & 1
    assert "purged 0 run" in run_cli("purge", str(quiet_demo.root), "--older-than", "1h").stdout
    assert "purged 1 run" in run_cli("purge", str(quiet_demo.root), "--older-than", "0s", "--yes").stdout
