"""Regressions: trees that once made audit or repair judge wrong, each rebuilt from a real registry tree.

Every test would fail against the behaviour it guards against: symbolic links and missing stores
taken for garbage (or replaced), unreadable or loosely written manifests taken as invalid, nested
repositories removed with their parent, aliases and damaged links removed with the garbage, restored
links owned by root, journals that cannot hold a non-UTF-8 root, plans that list what they fix as
left, and an undo that overwrites what the registry wrote since the run.

Where a test needs the registry, it starts it once and stops it for each repair (the guard would
refuse under it), then starts it again on the same root; with no stale upload and no cache, it
serves what the tree holds after the repair.
"""

import hashlib
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import orjson
import pytest
from clirun import REPO, audit_records, invoke, run_cli, snapshot

from tests.harness import tree
from tests.harness.images import OCI_MANIFEST, canonical_json, make_image
from tests.harness.registry import Registry, age_uploads

pytestmark = pytest.mark.registry

BLOB_FINDINGS = {"blob-orphan", "blob-unreachable", "blob-empty", "blob-digest-mismatch", "manifest-invalid"}
# What repair may still do when the audit could not see everything: nothing there depends on the unseen part.
SAFE_WHEN_INCOMPLETE = {"tag-index-stale", "upload-stale", "tmp-leftover", "dir-empty"}


@pytest.fixture
def quiet_demo(demo):
    """The demo with every upload aged: a stopped registry, not a live one."""
    age_uploads(demo.root)
    return demo


def registry_tree(root):
    return {k: v for k, v in snapshot(root, directory_mtimes=False).items() if k.startswith("docker")}


class Ran(NamedTuple):
    returncode: int
    stdout: str
    stderr: str = ""


def in_process(*args):
    """The command line without an interpreter start-up (an exception propagates: a traceback fails the test)."""
    return Ran(*invoke(*args))


def repair(root, *flags, runner=in_process):
    """`repair --json` with `flags`; the plan document. Never a traceback, never a usage error."""
    result = runner("repair", str(root), "--json", *flags)
    assert "Traceback" not in result.stderr, result.stderr
    assert not result.returncode & 16, result.stderr
    return result, orjson.loads(result.stdout)


def audit_json(root, runner=in_process):
    result = runner("audit", str(root), "--json")
    assert "Traceback" not in result.stderr, result.stderr
    return result, orjson.loads(result.stdout)


def links(root):
    """Every link file under repositories/, relative to v2, with its content."""
    top = tree.v2(root) / "repositories"
    return {
        str(path.relative_to(tree.v2(root))): path.read_bytes()
        for path in top.rglob("link") if path.is_file() and not path.is_symlink()
    }


def rel(root, path):
    return str(Path(path).relative_to(tree.v2(root)))


# 1. Symbolic links: the registry follows them, this tool does not; what is behind one is unknown.


# A directory link is followed as the registry follows it: tests/test_symlinked_stores.py. A link to a
# file is not: what the registry serves through it is unknown.


@pytest.mark.parametrize("kind", ["current", "layer"])
def test_fix_damage_never_replaces_a_symlinked_link(quiet_demo, tmp_path, kind):
    """The registry follows a symbolic link that this tool does not: what it serves there is unknown."""
    root = quiet_demo.root
    tags = quiet_demo.scenario.tags["plain/app"]
    if kind == "current":  # v1 made to follow v2: the registry serves v2's image as v1
        link = tree.tag_current_link(root, "plain/app", "v1")
        target = tree.tag_current_link(root, "plain/app", "v2")
    else:
        link = tree.layer_link(root, "plain/app", quiet_demo.scenario.manifests[tags["v1"]].config)
        target = tmp_path / "layer-link"
        target.write_bytes(link.read_bytes())
    link.unlink()
    link.symlink_to(target)
    served = link.read_text()

    records = audit_records(root)
    assert [r["id"] for r in records if r["path"] == rel(root, link)] == ["unexpected"]
    assert not [r for r in records if r["id"] in ("tag-broken", "layer-link-missing")]  # it may well be served

    _, plan = repair(root, "--yes", "--fix-damage")
    assert not [a for a in plan["actions"] if a["path"] == rel(root, link)]
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert link.read_text() == served


# 2. A blob store that is missing or empty (an unmounted volume) while repositories link blobs.


@pytest.mark.parametrize("state", ["missing", "empty"])
def test_missing_or_empty_blob_store_removes_no_link(quiet_demo, tmp_path, state):
    root = quiet_demo.root
    blobs = tree.v2(root) / "blobs"
    os.rename(blobs, tmp_path / "unmounted")
    if state == "empty":
        blobs.mkdir()
    links_before = {path: content for path, content in links(root).items() if "/index/" not in path}
    repositories_before = tree.repositories(root)

    result, document = audit_json(root)
    assert result.returncode & 8
    assert document["complete"] is False
    assert "blobs" in {f["path"] for f in document["findings"] if f["id"] == "dir-unreadable"}

    for flags in (["--yes"], ["--yes", "--untagged", "--fix-damage"]):
        _, plan = repair(root, *flags)
        assert {a["finding"] for a in plan["actions"]} <= SAFE_WHEN_INCOMPLETE, flags

    after = links(root)
    assert {path: content for path, content in after.items() if "/index/" not in path} == links_before
    assert tree.repositories(root) == repositories_before
    # Every tag still names what it named: its current link and that index entry are there.
    for repo, tag, digest in quiet_demo.scenario.tagged():
        assert tree.tag_current(root, repo, tag) == digest
        assert tree.tag_index_link(root, repo, tag, digest).is_file()


def test_missing_repositories_store_removes_no_blob(quiet_demo, tmp_path):
    root = quiet_demo.root
    os.rename(tree.v2(root) / "repositories", tmp_path / "unmounted")
    blobs_before = tree.blob_digests(root)
    result, document = audit_json(root)
    assert result.returncode & 8 and document["complete"] is False
    _, plan = repair(root, "--yes", "--untagged")
    assert not [a for a in plan["actions"] if a["finding"] in BLOB_FINDINGS]
    assert tree.blob_digests(root) == blobs_before


# 3. A manifest that cannot be read: what it references is unknown, so no blob may go.


def _unprivileged(*args):
    """Run the command line as root without the capabilities that bypass permission bits."""
    return subprocess.run(
        ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search",
         sys.executable, "-m", "fsck", *args],
        capture_output=True, text=True, timeout=120, cwd=REPO, stdin=subprocess.DEVNULL,
    )


def test_unreadable_manifest_freezes_blob_removal(quiet_demo):
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
    root = quiet_demo.root
    digest = quiet_demo.scenario.tags["plain/app"]["v1"]
    data = tree.blob_data(root, digest)
    os.chmod(data, 0)
    try:
        probe = subprocess.run(
            ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search", "cat", str(data)],
            capture_output=True,
        )
        if probe.returncode == 0:
            pytest.skip("mode 000 does not keep this process out: cannot make a file unreadable here")
        blobs_before = tree.blob_digests(root)

        result, document = audit_json(root, runner=_unprivileged)
        assert result.returncode & 8
        assert document["complete"] is False
        assert {(f["id"], f["digest"]) for f in document["findings"] if f["path"] == rel(root, data.parent)} == {
            ("dir-unreadable", digest)
        }
        assert "manifest-invalid" not in {f["id"] for f in document["findings"]}

        _, plan = repair(root, "--yes", "--untagged", "--fix-damage", runner=_unprivileged)
        assert not [a for a in plan["actions"] if a["finding"] in BLOB_FINDINGS]
        skipped = {s["id"] for s in plan["skipped"]}
        assert "blob-orphan" in skipped  # the demo's orphans wait until everything can be read
    finally:
        if data.exists():
            os.chmod(data, 0o644)
    assert tree.blob_digests(root) == blobs_before
    assert tree.revision_link(root, "plain/app", digest).is_file()


# 4. A malformed `subject` (2.8 ignores the field) makes no manifest invalid.


@pytest.mark.parametrize(
    "subject",
    [
        "sha256:" + "0" * 64,
        {"mediaType": OCI_MANIFEST, "digest": "sha256:not-hex", "size": 2},
        {"mediaType": OCI_MANIFEST, "size": 2},
    ],
    ids=["string", "bad-digest", "no-digest"],
)
def test_tag_whose_manifest_has_a_malformed_subject_still_pulls_after_repair(quiet_demo, tmp_path, subject):
    root = quiet_demo.root
    image = make_image("regression/malformed-subject", layers=2)
    body = orjson.loads(image.manifest.data)
    body["subject"] = subject
    manifest = canonical_json(body)
    with Registry(root, schema1=True, workdir=tmp_path / "registry") as registry:
        for blob in (image.config, *(layer.blob for layer in image.layers)):
            registry.upload_blob("subject/app", blob.data)
        digest = registry.put_manifest("subject/app", "v1", manifest, OCI_MANIFEST)
        # skopeo itself refuses a subject that is not an object; the registry serves it all the same.
        pulled = registry.pull_ok("subject/app", "v1")
        assert pulled or isinstance(subject, str)
        records = audit_records(root)
        assert not [r for r in records if r["repository"] == "subject/app" and r["severity"] != "notice"]
        registry.stop()
        _, plan = repair(root, "--yes", "--untagged", "--fix-damage")
        registry.start()
        assert plan["outcome"]["done"] > 0
        blobs = (image.config.digest, *(layer.digest for layer in image.layers))
        for blob in (digest, *blobs):
            assert tree.blob_data(root, blob).is_file(), blob
        assert registry.manifest_digest("subject/app", "v1") == digest
        for blob in blobs:
            assert registry.request("HEAD", f"/v2/subject/app/blobs/{blob}").status == 200, blob
        assert registry.pull_ok("subject/app", "v1") == pulled


# 5. Nested repositories: `a/b` emptied while `a/b/c` lives inside its directory.


def test_emptied_parent_repository_is_removed_without_its_nested_repository(quiet_demo, tmp_path):
    root = quiet_demo.root
    scenario = quiet_demo.scenario
    nested_before = snapshot(tree.repo_dir(root, "a/b/c"), directory_mtimes=False)
    with Registry(root, schema1=True, workdir=tmp_path / "registry") as registry:
        registry.delete_manifest("a/b", scenario.tags["a/b"]["1.0"])
        records = audit_records(root)
        assert "repositories/a/b" in {r["path"] for r in records if r["id"] == "repo-empty"}
        registry.stop()
        _, plan = repair(root, "--yes")
        registry.start()
        emptied = {a["path"] for a in plan["actions"] if a["finding"] == "repo-empty" and a["repository"] == "a/b"}
        assert emptied and all(path.startswith("repositories/a/b/_") for path in emptied)
        assert "repo-empty" not in plan["summary"]["left"]
        assert snapshot(tree.repo_dir(root, "a/b/c"), directory_mtimes=False) == nested_before
        assert not {"_layers", "_manifests", "_uploads"} & {p.name for p in tree.repo_dir(root, "a/b").iterdir()}
        catalog = set(registry.catalog())
        assert "a/b/c" in catalog and "a/b" not in catalog
        assert registry.pull_ok("a/b/c", "1.0")


# 6. A config blob that a revision link also names: the link is wrong, not the blob.


def test_config_named_as_a_manifest_is_not_quarantined_while_a_live_manifest_uses_it(quiet_demo, tmp_path):
    root = quiet_demo.root
    digest = quiet_demo.scenario.tags["plain/app"]["v1"]
    config = quiet_demo.scenario.manifests[digest].config
    link = tree.revision_link(root, "plain/app", config)
    link.parent.mkdir(parents=True)
    link.write_text(config)
    assert ("manifest-invalid", config) in {(r["id"], r["digest"]) for r in audit_records(root)}

    _, plan = repair(root, "--yes", "--fix-damage")
    assert not [a for a in plan["actions"] if a["digest"] == config and a["finding"] in BLOB_FINDINGS]
    assert "manifest-invalid" in {s["id"] for s in plan["skipped"]}
    assert tree.blob_data(root, config).is_file()
    with Registry(root, schema1=True, workdir=tmp_path / "registry") as registry:
        assert registry.pull_ok("plain/app", "v1")


# 7. A `_layers` link under sha512 that holds the sha256 digest of a stored blob: a legitimate alias.


@pytest.mark.parametrize("target", ["orphan", "live-layer"])
def test_sha512_alias_layer_link_survives_repair(quiet_demo, target):
    root = quiet_demo.root
    scenario = quiet_demo.scenario
    if target == "orphan":
        blob = sorted(scenario.orphan_blobs)[0]
    else:
        blob = scenario.manifests[scenario.tags["plain/app"]["v1"]].layers[0]
    sha512 = hashlib.sha512(tree.blob_data(root, blob).read_bytes()).hexdigest()
    alias = tree.repo_dir(root, "plain/app") / "_layers" / "sha512" / sha512 / "link"
    alias.parent.mkdir(parents=True)
    alias.write_text(blob)
    records = audit_records(root)
    assert not [r for r in records if "sha512" in r["path"]]
    assert not [r for r in records if r["digest"] == blob and r["repository"] in ("plain/app", None)]

    _, plan = repair(root, "--yes", "--untagged")
    assert plan["outcome"]["done"] > 0
    assert not [a for a in plan["actions"] if "sha512" in a["path"]]
    assert not [a for a in plan["actions"] if a["digest"] == blob and a["finding"] in BLOB_FINDINGS]
    assert alias.read_text() == blob
    assert tree.blob_data(root, blob).is_file()


# 8. A repository with no tags and no revisions, but with a damaged link: not removed as a whole.


@pytest.mark.parametrize(
    ("repo", "flags"),
    [("deleted/empty", ("--yes",)), ("bydigest/app", ("--yes", "--untagged"))],
    ids=["empty", "emptied-by-the-plan"],
)
def test_empty_repository_holding_an_invalid_link_is_kept(quiet_demo, repo, flags):
    root = quiet_demo.root
    invalid = tree.layer_link(root, repo, "sha256:" + hashlib.sha256(b"not stored anywhere").hexdigest())
    invalid.parent.mkdir(parents=True)
    invalid.write_bytes(b"")
    assert (rel(root, invalid), "link-invalid") in {(r["path"], r["id"]) for r in audit_records(root)}

    _, plan = repair(root, *flags)
    assert not [a for a in plan["actions"] if a["finding"] == "repo-empty" and a["repository"] == repo]
    assert invalid.is_file() and invalid.read_bytes() == b""
    assert (tree.repo_dir(root, repo) / "_layers").is_dir()
    assert (rel(root, invalid), "link-invalid") in {(r["path"], r["id"]) for r in audit_records(root)}


# 9. A restored `current` link with no sibling link to copy: owner from the repository, not root.


def test_restored_current_link_takes_the_repository_owner_without_a_sibling_link(quiet_demo):
    root = quiet_demo.root
    repo, tag = "org/team/app", "latest"
    digest = quiet_demo.scenario.tags[repo][tag]
    repository = tree.repo_dir(root, repo)
    for directory, dirnames, filenames in os.walk(repository):  # as if the registry ran as uid 1000
        for name in ["", *dirnames, *filenames]:
            os.chown(os.path.join(directory, name), 1000, 1000)
    index_link = tree.tag_index_link(root, repo, tag, digest)
    current = tree.tag_current_link(root, repo, tag)
    shutil.rmtree(current.parent)
    assert sorted(p.name for p in tree.tag_dir(root, repo, tag).iterdir()) == ["index"]

    result, plan = repair(root, "--yes", "--fix-damage")
    assert result.returncode & 1
    assert [a["finding"] for a in plan["actions"] if a["action"] == "write-link"] == ["tag-broken"]
    assert current.read_text() == digest
    restored, model = os.stat(current), os.stat(index_link)
    assert (restored.st_uid, restored.st_gid) == (1000, 1000)
    assert restored.st_mode == model.st_mode
    assert (os.stat(current.parent).st_uid, os.stat(current.parent).st_gid) == (1000, 1000)


# 10. A registry root whose path is not valid UTF-8: the journal must hold it, undo must find it.


def test_repair_and_undo_under_a_root_that_is_not_utf8(quiet_demo, tmp_path):
    root = Path(os.fsdecode(os.fsencode(tmp_path) + b"/reg\xff"))
    os.rename(quiet_demo.root, root)
    stray = os.fsencode(tree.v2(root) / "repositories") + b"/junk\xfe"  # a bystander, not UTF-8 either
    os.mkdir(stray)
    before = registry_tree(root)

    result, plan = repair(root, "--yes", "--untagged", runner=run_cli)
    assert result.returncode & 1, result.stderr
    assert plan["outcome"]["done"] == plan["summary"]["actions"] > 0
    assert plan["outcome"]["failed"] == []
    assert registry_tree(root) != before
    assert os.path.isdir(stray)

    undone = run_cli("undo", str(root))
    assert undone.returncode == 0, undone.stderr
    assert "Traceback" not in undone.stderr
    assert registry_tree(root) == before


# 11. The plan's "left" lists what the plan leaves, never what it fixes.


def test_dry_run_left_excludes_what_the_plan_settles(quiet_demo):
    root = quiet_demo.root
    scenario = quiet_demo.scenario
    v1 = scenario.tags["plain/app"]["v1"]
    config_link = tree.layer_link(root, "plain/app", scenario.manifests[v1].config)
    shutil.rmtree(config_link.parent)  # layer-link-missing: the link is written at <dir>/link
    tree.tag_current_link(root, "org/team/app", "latest").unlink()  # tag-broken: current restored
    v2_current = tree.tag_current_link(root, "plain/app", "v2")
    v2_current.write_text(scenario.tags["plain/app"]["v2"] + "\n")  # link-invalid and tag-broken: rewritten
    shutil.rmtree(tree.tag_dir(root, "a/b", "1.0"))  # a/b emptied; a/b/c lives inside it
    shutil.rmtree(tree.revision_dir(root, "a/b", scenario.tags["a/b"]["1.0"]))

    audited = Counter(r["id"] for r in audit_records(root) if r["severity"] != "notice")
    assert {"layer-link-missing", "tag-broken", "link-invalid", "repo-empty"} <= set(audited)

    flags = ("--untagged", "--fix-damage")
    result, plan = repair(root, "--dry-run", *flags)
    assert result.returncode == 4
    settled = Counter(a["finding"] for a in plan["actions"])
    assert {"layer-link-missing", "tag-broken", "link-invalid", "repo-empty"} <= set(settled)
    left = plan["summary"]["left"]
    assert not {"layer-link-missing", "tag-broken", "link-invalid", "repo-empty"} & set(left), left

    # What the plan says it leaves is what an audit finds after the run.
    result, _ = repair(root, "--yes", *flags)
    assert result.returncode & 1
    remaining = Counter(r["id"] for r in audit_records(root) if r["severity"] != "notice")
    assert dict(remaining) == left


# More of the same review: output, the quarantine guard, and undo.


def test_control_characters_in_a_name_never_break_a_report_line(quiet_demo):
    root = quiet_demo.root
    (tree.v2(root) / "stray\nfile\x1b[2J").write_text("x")
    text = run_cli("audit", str(root), "--limit", "0")
    assert "Traceback" not in text.stderr
    assert "stray\\x0afile\\x1b[2J: not part of the registry layout" in text.stdout
    assert "\x1b" not in text.stdout
    assert not [line for line in text.stdout.splitlines() if line.startswith("file")]
    _, document = audit_json(root)
    assert "stray\\x0afile\\x1b[2J" in {f["path"] for f in document["findings"]}


def test_quarantine_refused_inside_the_registry_tree_is_never_created(quiet_demo):
    root = quiet_demo.root
    inside = root / "docker" / "registry-fsck-quarantine"
    before = snapshot(root)
    result = run_cli("repair", str(root), "--yes", "--quarantine", str(inside))
    assert result.returncode == 8 and "outside the registry's tree" in result.stderr
    assert not inside.exists()
    assert snapshot(root) == before


def test_undo_keeps_a_link_the_registry_rewrote_since_the_run(quiet_demo):
    root = quiet_demo.root
    tags = quiet_demo.scenario.tags["plain/app"]
    moved, untouched = tree.tag_current_link(root, "plain/app", "v1"), tree.tag_current_link(root, "plain/app", "v2")
    moved.write_text(tags["v1"] + "\n")
    untouched.write_text(tags["v2"] + "\n")
    result, plan = repair(root, "--yes", "--fix-damage", "--only", "link-invalid")
    assert result.returncode & 1
    assert sorted(a["path"] for a in plan["actions"]) == sorted([rel(root, moved), rel(root, untouched)])
    assert (moved.read_text(), untouched.read_text()) == (tags["v1"], tags["v2"])
    moved.write_text(tags["v2"])  # since then, a push moved the tag v1 (the registry writes in place)

    undone = run_cli("undo", str(root))
    assert undone.returncode == 4 and "rewritten since the run" in undone.stdout
    assert moved.read_text() == tags["v2"]  # what the registry wrote stays
    assert untouched.read_text() == tags["v2"] + "\n"  # what the run wrote is undone
    runs = orjson.loads(run_cli("runs", str(root), "--json").stdout)
    assert len(runs) == 1  # kept, with the original link, for whoever wants it back


def test_undo_puts_back_a_rewritten_link_whose_directory_was_removed_since(quiet_demo):
    root = quiet_demo.root
    digest = quiet_demo.scenario.tags["plain/app"]["v1"]
    link = tree.tag_current_link(root, "plain/app", "v1")
    link.write_text(digest + "\n")
    result, _ = repair(root, "--yes", "--fix-damage", "--only", "link-invalid")
    assert result.returncode & 1 and link.read_text() == digest
    shutil.rmtree(link.parent)  # an admin cleaned up by hand since

    undone = run_cli("undo", str(root))
    assert undone.returncode == 0, undone.stdout + undone.stderr
    assert "Traceback" not in undone.stderr
    assert link.read_text() == digest + "\n"
