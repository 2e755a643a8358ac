"""The audit on real trees written by the registry: every garbage verdict derived from what was pushed."""

import pytest
import yaml
from clirun import audit_records, by_id, digests

from tests.harness.registry import garbage_collect, parse_gc_output, registry_config

pytestmark = pytest.mark.registry


@pytest.fixture
def demo_config(demo, tmp_path):
    """A registry config over this test's copy of the demo tree, for offline garbage-collect runs."""
    path = tmp_path / "gc-config.yml"
    path.write_text(yaml.safe_dump(registry_config(demo.root, 5000, schema1=True)))
    return path


def live_manifests(scenario, repo):
    return scenario.revisions.get(repo, frozenset()) - scenario.untagged.get(repo, frozenset())


def references(scenario, manifest_digests):
    refs = set()
    for digest in manifest_digests:
        refs.add(digest)
        refs.update(scenario.manifests[digest].references)
    return refs


@pytest.fixture
def audited(demo):
    return demo, audit_records(demo.root)


def test_clean_tree_has_no_damage(audited):
    _, records = audited
    assert [r for r in records if r["severity"] == "damage"] == []


def test_stale_tag_index_entries_are_the_earlier_targets(audited):
    scenario, records = audited[0].scenario, audited[1]
    earlier = {
        (repo, tag, digest)
        for repo, tags in scenario.tag_history.items()
        for tag, history in tags.items()
        for digest in history
        if digest != scenario.tags[repo][tag]
    }
    deleted = {(repo, tag, digest) for repo, tag, digest in earlier if digest in scenario.deleted.get(repo, ())}
    assert earlier - deleted and deleted, "the demo must re-push a tag, and delete an earlier target of one"

    def found(finding_id):
        return {(r["repository"], r["tag"], r["digest"]) for r in by_id(records, finding_id)}

    assert found("tag-index-stale") == earlier - deleted
    assert found("tag-index-dangling") == deleted


def test_untagged_manifests_exclude_index_children_and_referrers(audited):
    scenario, records = audited[0].scenario, audited[1]
    for repo in scenario.repos:
        assert digests(records, "manifest-untagged", repo) == set(scenario.untagged.get(repo, ())), repo
    flagged = digests(records, "manifest-untagged")
    for repo in scenario.repos:
        assert not flagged & scenario.index_children.get(repo, frozenset())
        assert not flagged & scenario.referrers.get(repo, frozenset())
    assert any(scenario.index_children.values()) and any(scenario.referrers.values())


def test_blob_orphans_are_what_no_revision_references(audited):
    scenario, records = audited[0].scenario, audited[1]
    assert digests(records, "blob-orphan") == set(scenario.unreferenced_blobs)
    assert scenario.orphan_blobs <= digests(records, "blob-orphan")


def test_blob_unreachable_is_what_only_untagged_manifests_reference(audited):
    scenario, records = audited[0].scenario, audited[1]
    kept = set()
    for repo in scenario.repos:
        kept |= references(scenario, live_manifests(scenario, repo))
    expected = set(scenario.blobs) - set(scenario.unreferenced_blobs) - kept
    assert expected, "the demo must hold blobs only untagged manifests use"
    assert digests(records, "blob-unreachable") == expected


def test_unused_layer_links_and_empty_repositories(audited):
    scenario, records = audited[0].scenario, audited[1]
    assert {r["repository"] for r in by_id(records, "repo-empty")} == set(scenario.empty_repos)
    for repo in scenario.repos - scenario.empty_repos:
        used = references(scenario, live_manifests(scenario, repo))
        expected = set(scenario.layer_links.get(repo, ())) - used
        assert digests(records, "layer-link-unused", repo) == expected, repo


def test_stale_uploads_counted_per_repository(audited):
    scenario, records = audited[0].scenario, audited[1]
    found = {}
    for record in by_id(records, "upload-stale"):
        found[record["repository"]] = found.get(record["repository"], 0) + 1
    assert found == {repo: n for repo, n in scenario.stale_uploads.items() if n}


def test_api_deletes_leave_empty_revision_dirs(audited):
    scenario, records = audited[0].scenario, audited[1]
    empty = {r["path"] for r in by_id(records, "dir-empty")}
    for repo, deleted in scenario.deleted.items():
        if repo in scenario.empty_repos:
            continue  # covered by repo-empty
        for digest in deleted:
            assert f"repositories/{repo}/_manifests/revisions/sha256/{digest.split(':')[1]}" in empty


def test_blob_orphan_equals_garbage_collect_dry_run(demo, demo_config):
    records = audit_records(demo.root)
    result = garbage_collect(demo_config, dry_run=True)
    assert result.returncode == 0, result.stderr
    gc = parse_gc_output(result.stdout)
    assert digests(records, "blob-orphan") == set(gc.eligible_blobs)


def test_audit_with_verify_writes_nothing(demo):
    from clirun import run_cli, snapshot

    before = snapshot(demo.root)
    for args in ([], ["--verify"], ["--json", "--verify"]):
        result = run_cli("audit", str(demo.root), *args)
        assert result.returncode == 4, result.stderr
    assert snapshot(demo.root) == before


def test_fresh_upload_warns_that_the_registry_looks_live(demo):
    from clirun import run_cli

    result = run_cli("audit", str(demo.root))
    assert sum(demo.scenario.uploads.values()) > sum(demo.scenario.stale_uploads.values())
    assert "the registry looks live" in result.stdout.splitlines()[1]
