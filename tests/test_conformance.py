"""Conformance with the real registry: the audit agrees with `registry garbage-collect`
(Debian's docker-registry 2.8) where 2.8 is right, and every place it differs is named,
derived from the scenario facts and shown on a real tree.

The model of 2.8's mark rule and the audit's liveness rule live in
`tests/harness/randomized.py`; every tree here goes through both real dry runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from clirun import audit_records, run_cli

from tests.harness import scenarios, tree
from tests.harness.images import (
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    MANIFEST_TYPES,
    OCI_MANIFEST,
    make_image,
    write_layout,
)
from tests.harness.randomized import (
    Facts,
    GcRuns,
    audit_model,
    check_audit_against_delete_untagged,
    check_blob_orphans,
    check_differential,
    check_gc_against_model,
    facts_of,
    gc_model,
    push_nested_index,
    record_digests,
    record_repos,
    run_gc_dry_runs,
)
from tests.harness.registry import (
    Registry,
    age_uploads,
    garbage_collect,
    parse_gc_output,
    upload_dirs,
    write_config,
)
from tests.harness.scenarios import Recorder, Scenario

pytestmark = pytest.mark.registry

TOPICS = tuple(scenarios.TOPICS)
TREES = (*TOPICS, "demo")
ACCEPT = {"Accept": ", ".join(MANIFEST_TYPES)}


# -- every scenario tree, built once, checked once -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checked:
    """A tree (a private copy), its scenario, the facts, the audit's records and both GC dry runs."""

    root: Path
    scenario: Scenario
    facts: Facts
    records: list[dict]
    runs: GcRuns


class Trees:
    def __init__(self, base: Path, demo_root: Path, demo_scenario: Scenario) -> None:
        self.base = base
        self.demo = (demo_root, demo_scenario)
        self.built: dict[str, tuple[Path, Scenario]] = {}
        self.checked: dict[str, Checked] = {}

    def build(self, name: str) -> tuple[Path, Scenario]:
        """The untouched tree of a topic (a `build_*` scenario in its own registry) or the demo."""
        if name == "demo":
            return self.demo
        if name not in self.built:
            where = self.base / "built" / name.replace("/", "_")
            with Registry(where / "root", schema1=name == "schema1", workdir=where / "registry") as reg:
                scenario = scenarios.build(reg, name)
            self.built[name] = (where / "root", scenario)
        return self.built[name]

    def copy(self, name: str, dest: Path) -> tuple[Path, Scenario]:
        root, scenario = self.build(name)
        return tree.copy_tree(root, dest), scenario

    def check(self, name: str) -> Checked:
        if name not in self.checked:
            work = self.base / "checked" / name
            root, scenario = self.copy(name, work / "root")
            facts = facts_of(scenario, root)
            runs = run_gc_dry_runs(root, facts, work / "gc", where=f"\ntree {name}")
            self.checked[name] = Checked(root, scenario, facts, audit_records(root), runs)
        return self.checked[name]


@pytest.fixture(scope="module")
def trees(demo_build, tmp_path_factory) -> Trees:
    return Trees(tmp_path_factory.mktemp("conformance"), demo_build.root, demo_build.scenario)


def subjects_and_children(scenario: Scenario) -> dict[str, frozenset[str]]:
    """Per repository, the index children and referrers the scenario recorded as live."""
    out = {}
    for repo in scenario.repos:
        both = scenario.index_children.get(repo, frozenset()) | scenario.referrers.get(repo, frozenset())
        if both:
            out[repo] = both
    return out


def refs_closure(facts: Facts, manifests) -> set[str]:
    out = set()
    for digest in manifests:
        out.add(digest)
        out.update(facts.refs(digest))
    return out


def rel(root: Path, path: Path) -> str:
    return str(path.relative_to(tree.v2(root)))


# -- the differential on every real scenario tree -------------------------------------------------


@pytest.mark.parametrize("name", TREES)
def test_gc_dry_runs_print_what_the_2_8_marking_model_predicts(trees: Trees, name: str) -> None:
    """Plain and --delete-untagged dry runs: marked manifests and blobs per repository,
    eligible manifests per repository, eligible blobs and the summary, exactly."""
    c = trees.check(name)
    plain, untagged = check_gc_against_model(c.facts, c.runs, f"\ntree {name}")
    assert plain.summary[0] > 0 and untagged.summary[0] <= plain.summary[0]
    assert plain.summary == c.runs.plain.summary


@pytest.mark.parametrize("name", TREES)
def test_blob_orphan_is_exactly_what_the_plain_dry_run_deletes(trees: Trees, name: str) -> None:
    c = trees.check(name)
    invisible_loss = check_blob_orphans(c.facts, c.runs, c.records, f"\ntree {name}")
    assert not invisible_loss  # every scenario repository with revisions holds _layers
    assert record_digests(c.records, "blob-orphan") == c.runs.plain.eligible_blobs
    assert c.scenario.orphan_blobs <= record_digests(c.records, "blob-orphan")


@pytest.mark.parametrize("name", TREES)
def test_audit_garbage_is_delete_untagged_minus_live_index_children_and_referrers(trees: Trees, name: str) -> None:
    """manifest-untagged and blob-orphan ∪ blob-unreachable equal what the -m dry run deletes,
    except the manifests a tagged list/index lists (recursively) or whose subject is live:
    2.8 lists them as eligible and deletes what only they keep (their configs and layers,
    and the manifests an untagged inner index lists). That difference must be exactly the
    scenario's index children and referrers."""
    c = trees.check(name)
    diff = check_audit_against_delete_untagged(c.facts, c.runs, c.records, f"\ntree {name}")
    expected = subjects_and_children(c.scenario)
    assert diff.through_index_or_subject == expected
    assert bool(expected) == (name in ("multiarch", "signatures", "demo"))
    for repo, manifests in expected.items():
        assert manifests <= c.runs.untagged.eligible_manifests[repo]
        assert not manifests & record_digests(c.records, "manifest-untagged", repo)
    # What 2.8 -m deletes and the audit keeps: blobs only those manifests are or reference.
    marked = gc_model(c.runs.untagged_facts, delete_untagged=True).blobs_marked
    assert diff.children_loss == refs_closure(c.facts, set().union(*expected.values())) - marked
    assert bool(diff.children_loss) == bool(expected)
    assert diff.children_loss <= c.runs.untagged.eligible_blobs
    assert not diff.children_loss & (record_digests(c.records, "blob-orphan") | record_digests(c.records, "blob-unreachable"))


def test_delete_untagged_lists_index_children_but_keeps_their_manifest_blobs(trees: Trees) -> None:
    """2.8 -m: a tagged list/index marks its children as blobs, so their manifest data stays,
    while the children themselves are eligible, so their configs and layers are deleted."""
    c = trees.check("multiarch")
    for repo in ("multi/oci", "multi/docker"):
        children = c.scenario.index_children[repo]
        assert len(children) == 3
        assert c.runs.untagged.eligible_manifests[repo] == children
        assert children <= c.runs.untagged.marked_blobs[repo]
        assert not children & c.runs.untagged.eligible_blobs
        for child in children:
            assert set(c.scenario.manifests[child].blob_references) <= c.runs.untagged.eligible_blobs
            assert not set(c.scenario.manifests[child].blob_references) & c.runs.plain.eligible_blobs


def test_delete_untagged_deletes_a_live_referrer_and_what_only_it_references(trees: Trees) -> None:
    c = trees.check("signatures")
    (referrer,) = c.scenario.referrers["signed/app"]
    facts = c.scenario.manifests[referrer]
    assert facts.subject in c.scenario.tags["signed/app"].values()
    assert referrer in c.runs.untagged.eligible_manifests["signed/app"]
    assert referrer in c.runs.untagged.eligible_blobs  # nothing marks a referrer's manifest blob
    assert set(facts.layers) <= c.runs.untagged.eligible_blobs
    kept = c.facts.blobs - record_digests(c.records, "blob-orphan") - record_digests(c.records, "blob-unreachable")
    assert {referrer, *facts.layers} <= kept


# -- real (non-dry) runs: what -m deletes, the registry can no longer serve -----------------------------


def serve(root: Path, workdir: Path, schema1: bool = False) -> Registry:
    return Registry(root, schema1=schema1, workdir=workdir)


def test_delete_untagged_breaks_multiarch_tags_the_audit_keeps(trees: Trees, tmp_path: Path) -> None:
    gc_root, scenario = trees.copy("multiarch", tmp_path / "gc")
    kept_root, _ = trees.copy("multiarch", tmp_path / "kept")
    repos = ("multi/oci", "multi/docker")
    records = audit_records(kept_root)
    for repo in repos:
        assert not record_digests(records, "manifest-untagged", repo)
    garbage = record_digests(records, "blob-orphan") | record_digests(records, "blob-unreachable")
    needed = {d for repo in repos for child in scenario.index_children[repo] for d in scenario.manifests[child].references}
    assert needed and not needed & garbage

    before = tree.blob_digests(gc_root)
    dry = parse_gc_output(garbage_collect(write_config(gc_root, tmp_path / "gc.yml"), dry_run=True,
                                          delete_untagged=True).stdout)
    result = garbage_collect(tmp_path / "gc.yml", dry_run=False, delete_untagged=True)
    assert result.returncode == 0, result.stderr
    assert before - tree.blob_digests(gc_root) == dry.eligible_blobs
    assert needed <= dry.eligible_blobs

    with serve(gc_root, tmp_path / "reg-gc") as broken, serve(kept_root, tmp_path / "reg-kept") as intact:
        for repo in repos:
            assert intact.pull_ok(repo, "latest", all=True), repo
            assert not broken.pull_ok(repo, "latest", all=True), repo
            assert broken.request("GET", f"/v2/{repo}/manifests/latest", headers=ACCEPT).status == 200

    # The audit sees what the run broke: every child of the tags is gone from its repository.
    after = audit_records(gc_root)
    for repo in repos:
        missing = {r["digest"] for r in after if r["id"] == "manifest-missing-ref" and r["repository"] == repo}
        assert missing == set(scenario.index_children[repo]), repo


def test_delete_untagged_deletes_a_referrer_the_audit_keeps(trees: Trees, tmp_path: Path) -> None:
    gc_root, scenario = trees.copy("signatures", tmp_path / "gc")
    kept_root, _ = trees.copy("signatures", tmp_path / "kept")
    (referrer,) = scenario.referrers["signed/app"]
    records = audit_records(kept_root)
    assert referrer not in record_digests(records, "manifest-untagged")
    assert referrer not in record_digests(records, "blob-unreachable") | record_digests(records, "blob-orphan")

    result = garbage_collect(write_config(gc_root, tmp_path / "gc.yml"), dry_run=False, delete_untagged=True)
    assert result.returncode == 0, result.stderr
    path = f"/v2/signed/app/manifests/{referrer}"
    with serve(gc_root, tmp_path / "reg-gc") as broken, serve(kept_root, tmp_path / "reg-kept") as intact:
        got = intact.request("GET", path, headers={"Accept": OCI_MANIFEST})
        assert got.status == 200 and "sha256:" + hashlib.sha256(got.body).hexdigest() == referrer
        assert broken.request("GET", path, headers={"Accept": OCI_MANIFEST}).status == 404
        assert broken.pull_ok("signed/app", "v1", all=False)  # the subject itself survives


def test_delete_untagged_deletes_the_grandchildren_of_a_nested_index(registry: Registry, tmp_path: Path) -> None:
    """An OCI index listing an index: 2.8 marks the outer index's entries as blobs only, so
    the inner index is eligible and the manifests it lists lose their data too."""
    with tempfile.TemporaryDirectory(dir=registry.workdir, prefix="layouts-") as layouts:
        rec = Recorder(registry, Path(layouts))
        outer = push_nested_index(rec, "nest/app", "v1", "conformance/nested")
        scenario = rec.freeze("nested")
    registry.stop()
    inner = next(c for c in scenario.manifests[outer].children if scenario.manifests[c].children)
    leaf = next(c for c in scenario.manifests[outer].children if c != inner)
    grandchildren = set(scenario.manifests[inner].children)
    assert len(grandchildren) == 2

    root = tree.copy_tree(registry.root, tmp_path / "checked")
    records = audit_records(root)
    diff = check_differential(root, facts_of(scenario, root), records, tmp_path / "work", "nested index")
    untagged = diff.runs.untagged
    assert untagged.eligible_manifests["nest/app"] == {inner, leaf, *grandchildren}
    assert grandchildren <= untagged.eligible_blobs  # their manifest data, not only configs and layers
    assert {inner, leaf} <= untagged.marked_blobs["nest/app"] and not {inner, leaf} & untagged.eligible_blobs
    assert diff.untagged.through_index_or_subject == {"nest/app": frozenset({inner, leaf, *grandchildren})}
    assert not record_digests(records, "manifest-untagged")

    gc_root = tree.copy_tree(registry.root, tmp_path / "gc")
    result = garbage_collect(write_config(gc_root, tmp_path / "gc.yml"), dry_run=False, delete_untagged=True)
    assert result.returncode == 0, result.stderr
    with serve(gc_root, tmp_path / "reg-gc") as broken, serve(root, tmp_path / "reg-kept") as intact:
        for digest in (outer, inner, *grandchildren):
            assert intact.request("GET", f"/v2/nest/app/manifests/{digest}", headers=ACCEPT).status == 200
        assert broken.request("GET", "/v2/nest/app/manifests/v1", headers=ACCEPT).status == 200
        for digest in (inner, *grandchildren):
            assert broken.request("GET", f"/v2/nest/app/manifests/{digest}", headers=ACCEPT).status == 404


# -- repositories 2.8 cannot see -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "repo"),
    [("plain_tags", "org/team/app"), ("by_digest", "bydigest/app")],
    ids=["tagged-repo-without-layers", "push-by-digest-then-no-layers"],
)
def test_repository_without_layers_is_invisible_to_gc_which_deletes_its_blobs(
    trees: Trees, tmp_path: Path, topic: str, repo: str
) -> None:
    """Named difference `repo-invisible`: 2.8 enumerates only directories holding `_layers`."""
    original, scenario = trees.build(topic)
    root, _ = trees.copy(topic, tmp_path / "invisible")
    shutil.rmtree(tree.repo_dir(root, repo) / "_layers")
    facts = facts_of(scenario, root)
    assert repo not in facts.visible and facts.revisions[repo]
    records = audit_records(root)
    diff = check_differential(root, facts, records, tmp_path / "work", f"{topic} without {repo}/_layers")

    own = refs_closure(facts, scenario.revisions[repo])
    assert diff.invisible_plain_loss == own  # each of these repositories shares no blob with another
    assert own <= diff.runs.plain.eligible_blobs
    assert not own & record_digests(records, "blob-orphan")
    assert record_repos(records, "repo-invisible") == {repo}
    assert repo not in diff.runs.plain.marked_manifests
    # Invisible, it no longer aborts -m either: 2.8 never looks at it.
    assert diff.runs.untagged_aborted is None
    live = audit_model(facts).live[repo]
    assert diff.untagged.invisible_loss == refs_closure(facts, live & scenario.revisions[repo])
    if live:
        # The blobs are needed: with the _layers links restored the tag pulls again, unless
        # a real garbage-collect ran in between.
        gc_root = tree.copy_tree(root, tmp_path / "gc")
        result = garbage_collect(write_config(gc_root, tmp_path / "gc.yml"), dry_run=False)
        assert result.returncode == 0, result.stderr
        for target in (root, gc_root):
            shutil.copytree(tree.repo_dir(original, repo) / "_layers", tree.repo_dir(target, repo) / "_layers")
        with serve(gc_root, tmp_path / "reg-gc") as broken, serve(root, tmp_path / "reg-kept") as intact:
            (tag,) = scenario.tags[repo]
            assert intact.pull_ok(repo, tag, all=False)
            assert not broken.pull_ok(repo, tag, all=False)


# -- where 2.8 aborts, the audit completes -------------------------------------------------------------


def test_delete_untagged_aborts_on_revisions_without_tags_dir_and_the_audit_completes(trees: Trees) -> None:
    c = trees.check("by_digest")
    assert c.facts.tagless == {"bydigest/app"}
    assert gc_model(c.facts, delete_untagged=True).aborts_in == {"bydigest/app"}
    aborted = c.runs.untagged_aborted
    assert aborted is not None and aborted.returncode != 0
    assert "failed to retrieve tags unknown repository name=bydigest/app" in aborted.stderr
    (manifest,) = c.scenario.revisions["bydigest/app"]
    assert record_digests(c.records, "manifest-untagged", "bydigest/app") == {manifest}
    assert record_digests(c.records, "blob-unreachable") == refs_closure(c.facts, {manifest})
    assert not record_digests(c.records, "blob-orphan")
    assert not [r for r in c.records if r["severity"] == "damage"]


def _first_layer(scenario: Scenario, digest: str) -> str:
    return scenario.manifests[digest].layers[0]


INVALID_LINKS = {
    # kind: (which link, plain run aborts, -m run aborts)
    "revision": (lambda root, s, d: tree.revision_link(root, "plain/app", d), True, True),
    "current": (lambda root, s, d: tree.tag_current_link(root, "plain/app", "v1"), False, True),
    "layer": (lambda root, s, d: tree.layer_link(root, "plain/app", _first_layer(s, d)), False, False),
    "tag-index": (lambda root, s, d: tree.tag_index_link(root, "plain/app", "v1", d), False, False),
}


@pytest.mark.parametrize("kind", INVALID_LINKS)
def test_invalid_link_aborts_gc_by_kind_while_the_audit_completes(trees: Trees, tmp_path: Path, kind: str) -> None:
    """2.8 reads revision links (both runs) and `current` links (-m only); an empty one aborts
    the run. It never reads `_layers` or tag-index links, so those do not abort it."""
    link_of, plain_aborts, untagged_aborts = INVALID_LINKS[kind]
    root, scenario = trees.copy("plain_tags", tmp_path / "tree")
    digest = scenario.tags["plain/app"]["v1"]
    link = link_of(root, scenario, digest)
    assert link.read_text().startswith("sha256:")
    link.write_bytes(b"")

    config = write_config(root, tmp_path / "gc.yml")
    plain = garbage_collect(config, dry_run=True)
    untagged = garbage_collect(config, dry_run=True, delete_untagged=True)
    assert (plain.returncode != 0) == plain_aborts, plain.stderr
    assert (untagged.returncode != 0) == untagged_aborts, untagged.stderr
    for result in (plain, untagged):
        if result.returncode != 0:
            assert "invalid checksum digest format" in result.stderr

    records = audit_records(root)
    assert {(r["id"], r["path"]) for r in records if r["path"] == rel(root, link)} == {("link-invalid", rel(root, link))}
    if not plain_aborts:
        assert record_digests(records, "blob-orphan") == parse_gc_output(plain.stdout).eligible_blobs
    if kind in ("revision", "current"):
        assert {(r["repository"], r["tag"]) for r in records if r["id"] == "tag-broken"} == {("plain/app", "v1")}
    if kind == "layer":
        assert record_digests(records, "layer-link-missing", "plain/app") == {_first_layer(scenario, digest)}
    if not untagged_aborts:
        check_differential(root, facts_of(scenario, root), records, tmp_path / "work", f"invalid {kind} link")


def test_invalid_revision_link_keeps_what_a_repair_of_the_link_brings_back(trees: Trees, tmp_path: Path) -> None:
    """2.8 refuses to collect; the audit must not call the manifest's config and layers
    garbage: rewriting the link from its path makes the tag pull again."""
    root, scenario = trees.copy("plain_tags", tmp_path / "tree")
    digest = scenario.tags["plain/app"]["v1"]
    tree.revision_link(root, "plain/app", digest).write_bytes(b"")
    records = audit_records(root)
    needed = {digest, *scenario.manifests[digest].references}
    garbage_ids = {"blob-orphan", "blob-unreachable", "layer-link-unused", "manifest-untagged"}
    assert not {r["id"] for r in records if r["digest"] in needed} & garbage_ids

    repaired = tree.copy_tree(root, tmp_path / "repaired")
    tree.revision_link(repaired, "plain/app", digest).write_text(digest)
    result = garbage_collect(write_config(repaired, tmp_path / "gc.yml"), dry_run=True)
    assert result.returncode == 0 and not needed & parse_gc_output(result.stdout).eligible_blobs
    with serve(repaired, tmp_path / "reg") as reg:
        assert reg.pull_ok("plain/app", "v1", all=False)


# -- parsing real GC output --------------------------------------------------------------------------------


def test_parse_gc_output_gives_eligible_manifests_the_repository_of_the_bare_line_before(
    registry: Registry, tmp_path: Path
) -> None:
    """`manifest eligible for deletion: <d>` names no repository; the same manifest untagged in
    two repositories is listed twice, once under each bare `<repo>` line."""
    shared, later, other = (make_image(f"conformance/parse/{i}", layers=1) for i in range(3))
    layout = write_layout(tmp_path / "layout", {"shared": shared, "later": later, "other": other})
    for repo in ("parse/one", "parse/two"):
        registry.push(layout, "shared", repo, "t")
        registry.push(layout, "later", repo, "t")
    registry.push(layout, "other", "parse/one", "old")
    registry.push(layout, "later", "parse/one", "old")
    registry.stop()

    result = garbage_collect(registry.config_path, dry_run=True, delete_untagged=True)
    assert result.returncode == 0, result.stderr
    report = parse_gc_output(result.stdout)
    root = registry.root
    expected = {}
    for repo in ("parse/one", "parse/two"):
        currents = {tree.tag_current(root, repo, t) for t in tree.tag_names(root, repo)}
        expected[repo] = tree.revision_links(root, repo) - currents
    assert expected == {"parse/one": {shared.digest, other.digest}, "parse/two": {shared.digest}}
    assert report.eligible_manifests == expected
    assert result.stdout.splitlines().count(f"manifest eligible for deletion: {shared.digest}") == 2
    assert report.summary[2] == 3
    assert report.marked_manifests == {"parse/one": {later.digest}, "parse/two": {later.digest}}


# -- layout variants ---------------------------------------------------------------------------------------


def test_audit_is_identical_from_rootdirectory_v2_dir_config_and_env(demo, tmp_path: Path) -> None:
    config = write_config(demo.root, tmp_path / "config.yml")
    elsewhere = write_config(tmp_path / "no-such-root", tmp_path / "elsewhere.yml")
    runs = {
        "rootdirectory": run_cli("audit", str(demo.root), "--json"),
        "v2": run_cli("audit", str(tree.v2(demo.root)), "--json"),
        "config": run_cli("audit", "--config", str(config), "--json"),
        "env": run_cli("audit", "--config", str(elsewhere), "--json",
                       env={"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(demo.root)}),
    }
    reports = {}
    for how, result in runs.items():
        assert result.returncode == 4, (how, result.stderr)
        reports[how] = json.loads(result.stdout)
    first = reports["rootdirectory"]
    assert first["findings"] and first["root"] == str(demo.root)
    for how, report in reports.items():
        for key in ("findings", "summary", "root", "v2", "exit_code", "complete"):
            assert report[key] == first[key], (how, key)


def test_repository_holding_only_uploads_reports_its_stale_upload(demo) -> None:
    repo = "uploads/pending"
    assert sorted(os.listdir(tree.repo_dir(demo.root, repo))) == ["_uploads"]
    (upload,) = [u for u in upload_dirs(demo.root) if u.parent.parent == tree.repo_dir(demo.root, repo)]
    path = rel(demo.root, upload)
    assert not [r for r in audit_records(demo.root) if r["id"] == "upload-stale" and r["repository"] == repo]
    assert age_uploads(demo.root, only=[upload.name])
    stale = [r for r in audit_records(demo.root) if r["id"] == "upload-stale" and r["repository"] == repo]
    assert [r["path"] for r in stale] == [path]


def test_schema1_fslayers_are_referenced_by_the_audit_and_by_gc(trees: Trees) -> None:
    c = trees.check("demo")
    (digest,) = c.scenario.tags["schema1/app"].values()
    assert c.scenario.manifests[digest].media_type in (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED)
    stored = json.loads(tree.blob_data(c.root, digest).read_bytes())
    assert stored["schemaVersion"] == 1 and "config" not in stored
    layers = {layer["blobSum"] for layer in stored["fsLayers"]}
    assert len(layers) == 2 and layers <= c.facts.blobs
    garbage = {r["digest"] for r in c.records if r["id"] in ("blob-orphan", "blob-unreachable", "layer-link-unused")}
    assert not layers & garbage
    assert not [r for r in c.records if r["repository"] == "schema1/app"]
    for report in (c.runs.plain, c.runs.untagged):
        assert layers <= report.marked_blobs["schema1/app"]
        assert not layers & report.eligible_blobs


def test_pre_2_5_signature_links_are_neither_unexpected_nor_breaking(trees: Trees, tmp_path: Path) -> None:
    """Registries up to 2.4 kept schema1 signatures beside each revision:
    `_manifests/revisions/sha256/<hex>/signatures/sha256/<sig hex>/link`, the signature stored
    as a blob. No registry installable here writes them, so they are added by hand, from the
    documented layout, to a copy of a tree the real registry wrote (schema1). Nothing
    references those blobs any more: both the audit and 2.8's GC treat them as orphans."""
    root, scenario = trees.copy("schema1", tmp_path / "tree")
    before = audit_records(root)
    (digest,) = scenario.revisions["schema1/app"]
    signatures = set()
    for i in range(2):
        jws = json.dumps({
            "header": {"jwk": {"crv": "P-256", "kty": "EC", "x": f"x{i}", "y": f"y{i}"}, "alg": "ES256"},
            "signature": f"sig{i}", "protected": f"prot{i}",
        }).encode()
        sig = "sha256:" + hashlib.sha256(jws).hexdigest()
        tree.blob_dir(root, sig).mkdir(parents=True)
        tree.blob_data(root, sig).write_bytes(jws)
        link = tree.revision_dir(root, "schema1/app", digest) / "signatures" / "sha256" / sig.split(":")[1] / "link"
        link.parent.mkdir(parents=True)
        link.write_text(sig)
        signatures.add(sig)

    records = audit_records(root)
    assert not [r for r in records if r["id"] in ("unexpected", "dir-unreadable") or r["severity"] == "damage"]
    assert record_digests(records, "blob-orphan") == record_digests(before, "blob-orphan") | signatures
    key = lambda r: (r["id"], r["path"])  # noqa: E731
    assert sorted(map(key, records)) == sorted([*map(key, before),
                                                *(("blob-orphan", rel(root, tree.blob_dir(root, s))) for s in signatures)])
    facts = replace(facts_of(scenario, root), blobs=scenario.blobs | signatures)
    diff = check_differential(root, facts, records, tmp_path / "work", "pre-2.5 signatures")
    assert signatures <= diff.runs.plain.eligible_blobs
