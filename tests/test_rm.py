"""rm on real registry trees: what is named goes with its cascade, every other tag still pulls with its
digest through the real registry, a new audit finds no garbage the removal left behind, undo brings it back."""

import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from clirun import REPO, audit_records, run_cli, snapshot

from tests.harness import images, tree
from tests.harness.registry import Registry, write_config
from tests.harness.scenarios import TOPICS, Recorder, Scenario
from tests.test_repair import registry_tree, served_exactly

pytestmark = pytest.mark.registry


def extras(rec: Recorder) -> None:
    """A multi-arch image one of whose children is also tagged; a second image beside the signed one."""
    index = images.make_index("rm/mx", (images.Platform("linux", "amd64"), images.Platform("linux", "arm64", "v8")))
    rec.push(index, "mx/app", "latest", fmt="oci")
    rec.push(index.images[0], "mx/app", "amd64", fmt="oci")
    rec.push(images.make_image("rm/signed/v2", layers=1), "signed/app", "v2")


@pytest.fixture(scope="module")
def built(registry_binaries, tmp_path_factory) -> tuple[Path, Scenario]:
    base = tmp_path_factory.mktemp("rm-build")
    with Registry(base / "root", workdir=base / "registry") as registry:
        with tempfile.TemporaryDirectory(dir=registry.workdir, prefix="layouts-") as layouts:
            rec = Recorder(registry, Path(layouts))
            for topic in ("plain_tags", "multiarch", "shared_layers", "signatures", "deleted_manifests", "orphans"):
                TOPICS[topic](rec, 0)
            extras(rec)
            return base / "root", rec.freeze("rm")


@pytest.fixture
def copy(built, tmp_path) -> tuple[Path, Scenario]:
    root, scenario = built
    return tree.copy_tree(root, tmp_path / "tree"), scenario


def without(scenario: Scenario, tags=(), repositories=(), manifests=()) -> Scenario:
    """The scenario's expectations once these tags, repositories and manifests (repo, digest) are gone."""
    gone_tags, gone_repos, gone_manifests = set(tags), set(repositories), set(manifests)
    kept_tags = {
        repo: {t: d for t, d in named.items() if (repo, t) not in gone_tags}
        for repo, named in scenario.tags.items() if repo not in gone_repos
    }
    referrers = {
        repo: frozenset(d for d in digests if (repo, d) not in gone_manifests)
        for repo, digests in scenario.referrers.items() if repo not in gone_repos
    }
    return replace(scenario, tags=kept_tags, referrers=referrers)


def garbage(root: Path) -> set[tuple[str, str]]:
    return {(r["id"], r["path"]) for r in audit_records(root) if r["severity"] != "notice"}


def rm(root: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli("rm", str(root), *args)


def removed_then_undone(root, tmp_path, scenario, refs, expected, check_after, extra=()):
    """rm REFS --yes --json; the rest still served; no new garbage; `check_after(registry)`; undo restores the tree."""
    before, garbage_before = registry_tree(root), garbage(root)
    result = rm(root, *refs, "--yes", "--json", *extra)
    assert result.returncode == 1, result.stderr
    document = orjson.loads(result.stdout)
    assert document["format"] == "registry-fsck/plan/1"
    assert document["outcome"]["done"] == document["summary"]["actions"] > 0
    assert {a["reason"] for a in document["actions"]} == {"rm"}
    with Registry(root, workdir=tmp_path / "after") as registry:
        assert served_exactly(registry, expected) == []
        check_after(registry)
    assert garbage(root) <= garbage_before  # nothing the removal left behind
    undone = run_cli("undo", str(root))
    assert undone.returncode == 0, undone.stderr
    assert registry_tree(root) == before
    with Registry(root, workdir=tmp_path / "undone") as registry:
        assert served_exactly(registry, scenario) == []
        for ref in refs:
            repo, _, tag = ref.partition(":")
            if tag:
                assert registry.pull_ok(repo, tag, all=True), ref
    return document


def head(registry: Registry, repo: str, digest: str, media_type: str) -> int:
    return registry.request("HEAD", f"/v2/{repo}/manifests/{digest}", headers={"Accept": media_type}).status


def test_rm_one_of_two_tags_sharing_a_digest_leaves_the_other_pulling_and_the_manifest_stored(copy, tmp_path):
    root, scenario = copy
    shared = scenario.tags["plain/app"]["latest"]
    assert scenario.tags["plain/app"]["v2"] == shared

    def check(registry):
        assert sorted(registry.tags("plain/app")) == ["v1", "v2"]
        assert registry.pull_ok("plain/app", "v2", all=True)
        assert registry.manifest_digest("plain/app", "v2") == shared

    document = removed_then_undone(root, tmp_path, scenario, ["plain/app:latest"],
                                   without(scenario, tags={("plain/app", "latest")}), check)
    assert [a["finding"] for a in document["actions"]] == ["tag-removed"]


def test_rm_of_a_tag_keeps_its_manifest_stored_when_another_tag_names_it(copy):
    root, scenario = copy
    shared = scenario.tags["plain/app"]["latest"]
    assert rm(root, "plain/app:latest", "--yes").returncode == 1
    assert shared in tree.revision_links(root, "plain/app")
    assert tree.blob_data(root, shared).exists()
    assert tree.tag_names(root, "plain/app") == {"v1", "v2"}


def test_rm_of_a_multi_arch_tag_removes_its_children_only_where_no_other_tag_needs_them(copy, tmp_path):
    root, scenario = copy
    index = scenario.tags["mx/app"]["latest"]
    amd64 = scenario.tags["mx/app"]["amd64"]
    children = scenario.manifests[index].children
    assert amd64 in children and len(children) == 2
    (arm64,) = set(children) - {amd64}
    media = scenario.manifests[arm64].media_type

    def check(registry):
        assert registry.tags("mx/app") == ["amd64"]
        assert registry.pull_ok("mx/app", "amd64", all=True)
        assert head(registry, "mx/app", arm64, media) == 404
        assert head(registry, "mx/app", index, scenario.manifests[index].media_type) == 404
        for layer in scenario.manifests[arm64].blob_references:
            assert not tree.blob_dir(root, layer).exists()

    document = removed_then_undone(root, tmp_path, scenario, ["mx/app:latest"],
                                   without(scenario, tags={("mx/app", "latest")}), check)
    removed = {m["digest"] for m in document["removal"]["manifests"]}
    assert removed == {index, arm64}


@pytest.mark.parametrize("by", ["tag", "digest"])
def test_rm_of_a_signed_image_removes_its_signature_tag_and_referrers(copy, tmp_path, by):
    root, scenario = copy
    signed = scenario.tags["signed/app"]["v1"]
    signature_tag = images.cosign_tag(signed)
    signature = scenario.tags["signed/app"][signature_tag]
    (referrer,) = scenario.referrers["signed/app"]
    assert scenario.manifests[referrer].subject == signed
    ref = "signed/app:v1" if by == "tag" else f"signed/app@{signed}"

    def check(registry):
        assert registry.tags("signed/app") == ["v2"]
        assert registry.pull_ok("signed/app", "v2", all=True)
        for digest in (signed, signature, referrer):
            assert head(registry, "signed/app", digest, scenario.manifests[digest].media_type) == 404

    expected = without(scenario, tags={("signed/app", "v1"), ("signed/app", signature_tag)},
                       manifests={("signed/app", referrer)})
    document = removed_then_undone(root, tmp_path, scenario, [ref], expected, check)
    assert {(t["tag"]) for t in document["removal"]["tags"]} == {"v1", signature_tag}
    assert {m["digest"] for m in document["removal"]["manifests"]} == {signed, signature, referrer}


def test_rm_of_a_repository_drops_it_from_the_catalog_and_keeps_the_blobs_another_shares(copy, tmp_path):
    root, scenario = copy
    shared = {layer for layer, repos in scenario.shared_layers.items() if "shared/one" in repos}
    assert shared
    own = set(scenario.manifests[scenario.tags["shared/one"]["latest"]].blob_references) - shared

    def check(registry):
        assert "shared/one" not in registry.catalog()
        assert {"shared/two", "shared/three"} <= set(registry.catalog())
        assert registry.pull_ok("shared/two", "latest", all=True)
        assert all(tree.blob_dir(root, d).exists() for d in shared)
        assert not any(tree.blob_dir(root, d).exists() for d in own)
        assert not tree.repo_dir(root, "shared/one").exists()

    removed_then_undone(root, tmp_path, scenario, ["shared/one"], without(scenario, repositories={"shared/one"}), check)


def test_rm_of_a_repository_leaves_the_repositories_nested_in_it_unless_recursive(copy, tmp_path):
    root, scenario = copy
    before = registry_tree(root)
    assert rm(root, "a/b", "--yes").returncode == 1
    with Registry(root, workdir=tmp_path / "after") as registry:
        catalog = registry.catalog()
        assert "a/b" not in catalog and "a/b/c" in catalog
        assert registry.pull_ok("a/b/c", "1.0", all=True)
        assert served_exactly(registry, without(scenario, repositories={"a/b"})) == []
    assert run_cli("undo", str(root)).returncode == 0
    assert registry_tree(root) == before
    recursive = orjson.loads(rm(root, "a/b", "--recursive", "--dry-run", "--json").stdout)
    assert [r["repository"] for r in recursive["removal"]["repositories"]] == ["a/b", "a/b/c"]
    assert [a["path"] for a in recursive["actions"] if a["finding"] == "repo-empty"] == ["repositories/a/b"]


def test_rm_untag_only_keeps_the_manifest_pullable_by_digest(copy, tmp_path):
    root, scenario = copy
    v1 = scenario.tags["plain/app"]["v1"]
    result = rm(root, "plain/app:v1", "--untag-only", "--yes", "--json")
    assert result.returncode == 1, result.stderr
    assert [a["finding"] for a in orjson.loads(result.stdout)["actions"]] == ["tag-removed"]
    with Registry(root, workdir=tmp_path / "after") as registry:
        assert "v1" not in registry.tags("plain/app")
        assert registry.pull_ok("plain/app", v1, all=True)


def test_rm_dry_run_writes_nothing(copy):
    root, _ = copy
    before = snapshot(root)
    result = rm(root, "plain/app:v1", "shared/one", "mx/app:latest", "--dry-run")
    assert result.returncode == 4, result.stderr
    assert result.stdout.startswith("registry-fsck rm of ")
    assert "removes 3 tags, 4 manifests, 1 repository; frees " in result.stdout  # shared/one:latest among the tags
    assert "that were there before: `registry-fsck repair` is for those" in result.stdout
    assert "[tag-removed, rm]" in result.stdout
    assert snapshot(root) == before


@pytest.mark.parametrize(("refs", "line"), [
    (["plain/app:nope"], "registry-fsck: error: plain/app:nope: no tag is named 'nope' in plain/app"),
    (["plain/app:v1", "plain"], "registry-fsck: error: plain: no repository is named 'plain'"),
    (["plain/app:v*"], "registry-fsck: error: 'plain/app:v*': 'v*' is not a tag (give --glob for patterns)"),
    (["plain/app@sha256:1234"], "registry-fsck: error: 'plain/app@sha256:1234': 'sha256:1234' is not a digest "
                                "(sha256:<64 hex>; digests are never patterns)"),
    (["plai*"], "registry-fsck: error: 'plai*': 'plai*' is not a repository name (give --glob for patterns)"),
])
def test_rm_of_an_unmatched_or_malformed_ref_changes_nothing(copy, refs, line):
    root, _ = copy
    before = snapshot(root)
    result = rm(root, *refs, "--yes")
    assert (result.returncode, result.stderr.splitlines(), result.stdout) == (16, [line], "")
    assert snapshot(root) == before


def test_rm_of_a_child_while_its_index_stays_is_refused_naming_the_index(copy):
    root, scenario = copy
    index = scenario.tags["mx/app"]["latest"]
    arm64 = next(c for c in scenario.manifests[index].children if c != scenario.tags["mx/app"]["amd64"])
    before = snapshot(root)
    result = rm(root, f"mx/app@{arm64}", "--yes")
    assert result.returncode == 16
    assert result.stderr.splitlines() == [
        f"registry-fsck: error: mx/app@{arm64}: a child of mx/app@{index}, which stays: remove that instead (or with it)"
    ]
    assert snapshot(root) == before
    with_parent = rm(root, f"mx/app@{arm64}", "mx/app:latest", "--dry-run")
    assert with_parent.returncode == 4, with_parent.stderr


def test_rm_of_a_protected_ref_lists_it_and_leaves_it(copy, tmp_path):
    root, scenario = copy
    protect = tmp_path / "protect.txt"
    protect.write_text("plain/app:v1\n")
    result = rm(root, "plain/app:v1", "plain/app:latest", "--protect", str(protect), "--yes")
    assert result.returncode == 1 | 4, result.stderr
    assert "protected, left: plain/app:v1 (tag)" in result.stdout
    with Registry(root, workdir=tmp_path / "after") as registry:
        assert sorted(registry.tags("plain/app")) == ["v1", "v2"]
        assert registry.pull_ok("plain/app", "v1", all=True)


def test_rm_with_config_takes_every_positional_as_a_ref(copy, tmp_path):
    root, _ = copy
    config = write_config(root, tmp_path / "config.yml")
    result = run_cli("rm", "--config", str(config), "plain/app:v1", "--dry-run", "--json")
    assert result.returncode == 4, result.stderr
    assert orjson.loads(result.stdout)["removal"]["tags"][0]["tag"] == "v1"


def test_rm_not_on_a_terminal_without_yes_is_a_usage_error(copy):
    root, _ = copy
    before = snapshot(root)
    result = rm(root, "plain/app:v1")
    assert result.returncode == 16 and "give --yes" in result.stderr
    assert snapshot(root) == before


CRASH = """
import os, sys
sys.path.insert(0, {repo!r})
from datetime import datetime, timezone
from fsck import checks, plan, removal, service
root, crash_after, refs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
target = service.resolve_target(root, None)
now = datetime.now(timezone.utc)
loaded = service.load(target)
wanted, unmatched = removal.resolve([removal.parse_ref(r) for r in refs], loaded.inventory)
assert not unmatched, unmatched
removing = service.plan_rm(loaded, checks.Policy(now=now), wanted, plan.Protection())
def crash(count):
    if count == crash_after:
        os._exit(137)
service.carry_out(target, removing.removal.plan, service.quarantine_of(target, None), now=now, after_action=crash)
"""


def present(root: Path, scenario: Scenario) -> Scenario:
    """The scenario's tags and referrers still in the tree: each must be served whole, whatever state it is in."""
    return replace(
        scenario,
        tags={repo: {t: d for t, d in named.items() if t in tree.tag_names(root, repo)}
              for repo, named in scenario.tags.items()},
        referrers={repo: frozenset(d for d in digests if d in tree.revision_links(root, repo))
                   for repo, digests in scenario.referrers.items()},
    )


def test_rm_killed_after_any_action_leaves_every_tag_still_there_served(built, tmp_path):
    """As tests/crash_repair.py does for repair: a run killed after its k-th change (kill -9). Every tag still in
    the tree, removed ones not yet reached included, is served whole: the order never leaves a tag broken."""
    source, scenario = built
    refs = ["plain/app:v1", "mx/app:latest", "signed/app:v1", "shared/one"]
    script = tmp_path / "crash_rm.py"
    script.write_text(CRASH.format(repo=str(REPO)))
    total = len(orjson.loads(rm(source, *refs, "--dry-run", "--json").stdout)["actions"])
    assert total > 10
    for k in sorted({1, 2, total // 3, total // 2, total - 1}):
        root = tree.copy_tree(source, tmp_path / f"k{k}")
        crashed = subprocess.run([sys.executable, str(script), str(root), str(k), *refs], capture_output=True,
                                 text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert crashed.returncode == 137, crashed.stderr
        expected = present(root, scenario)
        assert expected.tags["plain/app"].keys() >= {"latest", "v2"}
        with Registry(root, workdir=tmp_path / f"serve{k}") as registry:
            assert served_exactly(registry, expected) == [], f"killed after {k} of {total}"
