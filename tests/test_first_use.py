"""What a new user meets first, on trees the real registry wrote: what is a registry at all, where
the reclaimable bytes are, uploads without a start time, and a report that says what to do next."""

import os
import shlex
import time
from datetime import datetime, timezone

import orjson
import pytest
from clirun import audit_records, by_id, run_cli

from tests.harness import tree
from tests.harness.images import make_image, write_layout
from tests.harness.registry import age_uploads, upload_dirs

pytestmark = pytest.mark.registry


def audit_document(root, *flags):
    result = run_cli("audit", str(root), "--json", *flags)
    assert "Traceback" not in result.stderr, result.stderr
    return result, orjson.loads(result.stdout)


# Item 6: only the registry's path shape is a registry.


def test_an_oci_layout_or_a_bare_repositories_dir_is_not_a_registry(tmp_path):
    layout = write_layout(tmp_path / "oci", {"v1": make_image("first-use")})
    bare = tmp_path / "bare"
    (bare / "repositories").mkdir(parents=True)
    for path, expect in ((layout, "OCI image layout"), (bare, "not a registry storage root")):
        result = run_cli("audit", str(path))
        assert result.returncode == 8, result
        assert result.stderr.count("\n") == 1 and expect in result.stderr
        assert "docker/registry/v2" in result.stderr  # says what was expected
        assert run_cli("repair", "--dry-run", str(path)).returncode == 8


def test_a_fresh_v2_is_a_registry_through_any_path_that_names_it(tmp_path):
    v2 = tmp_path / "root" / "docker" / "registry" / "v2"
    v2.mkdir(parents=True)
    linked = tmp_path / "short"
    linked.symlink_to(v2, target_is_directory=True)
    for path in (tmp_path / "root", v2, linked):
        result = run_cli("audit", str(path))
        assert result.returncode == 0, result
        assert "no problems found" in result.stdout


# Item 4: every finding in a repository names it; the reclaimable bytes add up per repository.


def test_reclaimable_bytes_per_repository_and_shared_add_up_to_the_total(demo):
    notes = tree.repo_dir(demo.root, "plain/app") / "_manifests" / "NOTES.txt"
    notes.write_text("hand-written")
    (tree.repo_dir(demo.root, "plain/app") / "_manifests" / "revisions" / "sha256" / ("0" * 64)).mkdir()
    _, document = audit_document(demo.root)
    summary = document["summary"]
    per_repository = {name: entry["reclaimable_bytes"] for name, entry in summary["by_repository"].items()}
    assert sum(per_repository.values()) + summary["shared_reclaimable_bytes"] == summary["reclaimable_bytes"]
    # A repository whose manifests were deleted by digest owns the blobs only it linked.
    deleted_blobs = {
        f["bytes"] for f in document["findings"]
        if f["id"] == "blob-orphan" and f["digest"] in demo.scenario.layer_links["deleted/app"]
        and not any(f["digest"] in links for repo, links in demo.scenario.layer_links.items() if repo != "deleted/app")
    }
    assert deleted_blobs and per_repository["deleted/app"] >= sum(deleted_blobs)
    assert per_repository["repush/app"] > 0
    located = {f["path"]: f["repository"] for f in document["findings"] if f["id"] in ("unexpected", "dir-empty")}
    assert located["repositories/plain/app/_manifests/NOTES.txt"] == "plain/app"
    assert located[f"repositories/plain/app/_manifests/revisions/sha256/{'0' * 64}"] == "plain/app"
    for finding in document["findings"]:
        holders = [r for r in demo.scenario.repos
                   if finding["path"] == f"repositories/{r}" or finding["path"].startswith(f"repositories/{r}/")]
        if holders:
            assert finding["repository"] == max(holders, key=len), finding

    text = run_cli("audit", str(demo.root)).stdout
    shown = text[text.index("reclaimable by repository:"):]
    assert "deleted/app" in shown and "shared garbage" in shown


# Item 7: an upload without a usable startedat is aged by its directory's last change.


def test_an_upload_without_startedat_is_reported_and_aged_by_its_mtime(demo):
    age_uploads(demo.root)  # a stopped registry: no upload is recent
    upload = upload_dirs(demo.root)[0]
    (upload / "startedat").write_text("garbage")
    two_days_ago = time.time() - 2 * 86400
    os.utime(upload, (two_days_ago, two_days_ago))
    path = str(upload.relative_to(tree.v2(demo.root)))
    records = {r["path"]: r for r in audit_records(demo.root)}
    assert records[path]["id"] == "upload-undated"
    assert "upload-stale from" in records[path]["message"]

    records = {r["path"]: r for r in audit_records(demo.root, upload_age="24h")}
    assert records[path]["id"] == "upload-stale"
    assert "no valid startedat" in records[path]["message"]

    (upload / "startedat").unlink()
    os.utime(upload, None)  # just now: it makes the registry look live
    result, document = audit_document(demo.root)
    assert document["recent_uploads"] == 1
    (detail,) = document["recent_upload_details"]
    assert detail["path"] == path and detail["dated"] is False
    quiet_from = datetime.fromisoformat(detail["quiet_from"])
    assert 14 * 60 <= (quiet_from - datetime.now(timezone.utc)).total_seconds() <= 15 * 60
    text = run_cli("audit", str(demo.root)).stdout
    assert path in text and "quiet from" in text


# Item 14: the report says what to do next, and who uses a damaged or unreachable blob.


def test_the_report_ends_with_the_commands_that_act_on_it(demo):
    text = run_cli("audit", str(demo.root)).stdout
    tail = text[text.index("\nnext:\n"):]
    root = shlex.quote(str(demo.root))
    assert f"registry-fsck repair --dry-run {root}" in tail
    assert f"registry-fsck repair --dry-run --untagged {root}" in tail
    assert "--fix-damage" not in tail  # the demo has no damage

    repo, tag = "plain/app", "v1"
    layer = demo.scenario.manifests[demo.scenario.tags[repo][tag]].layers[0]
    tree.blob_data(demo.root, layer).write_bytes(b"")
    records = audit_records(demo.root)
    (empty,) = by_id(records, "blob-empty")
    users = [f"{r}:{t}" for r, tags in demo.scenario.tags.items() for t, d in tags.items()
             if layer in demo.scenario.manifests[d].blob_references]
    assert f"{repo}:{tag}" in empty["message"] and all(u in empty["message"] for u in users[:3])
    text = run_cli("audit", str(demo.root)).stdout
    assert f"registry-fsck repair --dry-run --fix-damage {root}" in text[text.index("\nnext:\n"):]

    unreachable = by_id(records, "blob-unreachable")
    assert unreachable and all("(in " in r["message"] for r in unreachable)


def test_a_recent_upload_refuses_naming_it_and_stays_visible_under_force(demo):
    fresh = [u for u in upload_dirs(demo.root)
             if (datetime.now(timezone.utc) - datetime.fromisoformat((u / "startedat").read_text())).days < 1]
    assert fresh
    named = str(fresh[0].relative_to(tree.v2(demo.root)))
    refused = run_cli("repair", str(demo.root), "--yes")
    assert refused.returncode == 8
    assert "looks live" in refused.stderr and named in refused.stderr and "quiet period ends" in refused.stderr
    forced = run_cli("repair", str(demo.root), "--yes", "--force")
    assert forced.returncode & 1, forced.stderr
    assert "going ahead (--force)" in forced.stderr and named in forced.stderr


def test_after_a_repair_the_report_says_what_the_quarantine_holds_and_only_what_is_left_to_do(demo, tmp_path):
    age_uploads(demo.root)
    done = run_cli("repair", str(demo.root), "--yes", "--json")
    assert done.returncode & 1, done.stderr
    run = orjson.loads(done.stdout)["outcome"]["run"]
    (listed,) = orjson.loads(run_cli("runs", str(demo.root), "--json").stdout)
    text = run_cli("audit", str(demo.root)).stdout
    held = text[text.index("the quarantine "):]
    assert str(demo.root / "registry-fsck-quarantine") in held and "1 run" in held
    assert listed["started"] in held and report_size(listed["bytes"]) in held and run not in held
    steps = text[text.index("\nnext:\n"):text.index("the quarantine ")]
    # What the default repair left is what only --untagged frees: it is the one command suggested.
    commands = [line.split("#")[0].split() for line in steps.splitlines() if "registry-fsck" in line]
    assert commands == [["registry-fsck", "repair", "--dry-run", "--untagged", str(demo.root)]]
    elsewhere = tmp_path / "elsewhere-quarantine"
    assert "the quarantine " not in run_cli("audit", str(demo.root), "--quarantine", str(elsewhere)).stdout
    assert not elsewhere.exists()  # audit never writes, not even a quarantine


def report_size(count):
    from fsck import report

    return report.size(count)
