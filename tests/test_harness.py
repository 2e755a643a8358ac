"""The test harness does what it says, checked against the real registry and skopeo.

Where Debian's docker-registry 2.8.2 / skopeo 1.9.3 differ from, or add to, the
field notes (shared REFERENCE.md), as these tests show:

- `docker-registry --version` prints argv[0] first ("docker-registry ..." when run
  from PATH), not necessarily the binary's path.
- A temporary HOME does not keep skopeo running as root out of
  `/var/lib/containers/cache`: c/image picks its blob-info cache by euid. The harness
  sets `_CONTAINERS_ROOTLESS_UID` so the cache lands in a per-call XDG_DATA_HOME; a
  fresh cache per call also stops skopeo from cross-repository mounts (which skip the
  `_uploads/` directory) so that trees are reproducible.
- schema1: the blob under `blobs/` is the manifest without `signatures`; the registry
  signs it anew on every GET, so the served body never hashes to its digest. skopeo
  `--format v2s1` uploads no config blob (no `_layers` link for it).
- `GET /v2/<name>/tags/list` answers `"tags": null` once every tag was deleted.
- garbage-collect prints an empty line before its summary, and a bare `<repo>` line
  for every repository holding `_layers`, with or without manifests. With `-m` the
  `manifest eligible for deletion` lines interleave with that repository's marking
  lines. The `failed to retrieve tags unknown repository` abort goes to stderr.
- An API delete of a tagged manifest removes the whole `tags/<tag>/` directory
  (`current` and `index`), leaving `_manifests/tags/` behind, empty if it was the last.
- `skopeo copy --all` of an OCI index writes a revision link for the index and every
  child; only the index is tagged; `_layers` links the children's configs and layers
  but no manifest. `--all --format v2s2` turns the index into a Docker manifest list
  of Docker manifests, with the same configs and layers.
- After `POST .../blobs/uploads/` the upload directory holds `data` (empty),
  `startedat` and `hashstates/sha256/0`. A directory holding nothing but `_uploads`
  is not in the catalog; one holding only `_layers` is.
Everything else checked here matched the notes.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import socket
import subprocess
import tarfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.harness import images, tree
from tests.harness.images import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    DOCKER_SCHEMA1_SIGNED,
    OCI_INDEX,
    OCI_MANIFEST,
    make_image,
    make_index,
    make_layer,
    sha256,
    write_layout,
)
from tests.harness.registry import (
    REGISTRY_BIN,
    Registry,
    age_uploads,
    free_port,
    garbage_collect,
    parse_gc_output,
    read_startedat,
    registry_config,
    upload_dirs,
    write_config,
)
from tests.harness.scenarios import build, build_all, build_multiarch, build_schema1

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
LINK = re.compile(r"sha256:[0-9a-f]{64}")
PURGE_AGE = timedelta(hours=168)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# -- images: pure, no registry ------------------------------------------------------


def test_same_seed_gives_byte_identical_layouts(tmp_path: Path) -> None:
    def layout(path: Path, seed: int) -> dict[str, bytes]:
        base = make_layer(f"{seed}/base")
        items = {"one": make_image(seed, 2, shared=(base,)), "multi": make_index(seed, shared=(base,))}
        return _files(write_layout(path, items))

    first, again, other = layout(tmp_path / "a", 7), layout(tmp_path / "b", 7), layout(tmp_path / "c", 8)
    assert first == again
    blobs = {name for name in first if name.startswith("blobs/")}
    assert blobs.isdisjoint(name for name in other if name.startswith("blobs/"))


def test_image_config_describes_its_layers() -> None:
    base = make_layer("base")
    image = make_image("cfg", 2, shared=(base,))
    config = json.loads(image.config.data)
    manifest = json.loads(image.manifest.data)

    assert image.layers[0] is base
    assert config["rootfs"]["diff_ids"] == [sha256(gzip.decompress(layer.blob.data)) for layer in image.layers]
    assert len(config["history"]) == len(image.layers)
    assert manifest["config"] == image.config.descriptor()
    assert [d["digest"] for d in manifest["layers"]] == [layer.digest for layer in image.layers]
    assert [d["size"] for d in manifest["layers"]] == [len(layer.blob.data) for layer in image.layers]


def test_index_lists_one_image_per_platform() -> None:
    base = make_layer("base")
    index = make_index("idx", shared=(base,))
    body = json.loads(index.manifest.data)
    assert body["mediaType"] == OCI_INDEX
    assert [m["digest"] for m in body["manifests"]] == [img.digest for img in index.images]
    assert [m["platform"]["architecture"] for m in body["manifests"]] == ["amd64", "arm64"]
    assert all(img.layers[0] == base for img in index.images)
    assert len({img.config.digest for img in index.images}) == len(index.images)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32), size=st.integers(1, 4096))
def test_layers_are_deterministic_gzip_tars(seed: int, size: int) -> None:
    layer = make_layer(seed, size)
    assert make_layer(seed, size) == layer
    assert layer.blob.data[4:8] == b"\0\0\0\0"  # gzip header mtime
    raw = gzip.decompress(layer.blob.data)
    assert sha256(raw) == layer.diff_id
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = tar.getmembers()
    assert members and all(m.mtime == images.TAR_MTIME and m.uid == 0 and m.gid == 0 for m in members)


# -- the registry and skopeo ------------------------------------------------------

@pytest.mark.registry
def test_oci_push_keeps_bytes_v2s2_converts(registry: Registry, tmp_path: Path) -> None:
    image = make_image("push", 2)
    layout = write_layout(tmp_path / "layout", {"img": image})
    registry.push(layout, "img", "conv/oci", "v1")
    registry.push(layout, "img", "conv/docker", "v1", fmt="v2s2")

    assert registry.manifest_digest("conv/oci", "v1") == image.digest
    docker = registry.get_manifest("conv/docker", "v1")
    assert docker.media_type == DOCKER_MANIFEST
    assert docker.digest != image.digest and docker.digest == sha256(docker.body)
    body = docker.json()
    assert body["config"]["digest"] == image.config.digest
    assert [d["digest"] for d in body["layers"]] == [layer.digest for layer in image.layers]
    assert registry.pull_ok("conv/oci", "v1") and registry.pull_ok("conv/docker", docker.digest)
    assert not registry.pull_ok("conv/oci", "missing")


@pytest.mark.registry
def test_multiarch_push_writes_revisions_for_children_but_no_layer_links(registry: Registry) -> None:
    scenario = build_multiarch(registry)
    root = registry.root
    expected_types = {"multi/oci": (OCI_INDEX, OCI_MANIFEST), "multi/docker": (DOCKER_LIST, DOCKER_MANIFEST)}
    for repo, (list_type, child_type) in expected_types.items():
        (tag, digest), = scenario.tags[repo].items()
        children = scenario.index_children[repo]
        assert len(children) == 3
        assert scenario.manifests[digest].media_type == list_type
        assert {scenario.manifests[c].media_type for c in children} == {child_type}
        assert tree.revision_links(root, repo) == children | {digest}
        assert tree.tag_index(root, repo, tag) == {digest}
        assert tree.layer_links(root, repo) == {
            blob for c in children for blob in scenario.manifests[c].blob_references
        }
        assert registry.pull_ok(repo, tag, all=True)
    # Same platform images either way: the same configs and layers.
    assert {scenario.manifests[c].config for c in scenario.index_children["multi/oci"]} == {
        scenario.manifests[c].config for c in scenario.index_children["multi/docker"]
    }


@pytest.mark.registry
def test_http_helpers_write_what_they_say(registry: Registry) -> None:
    root = registry.root
    image = make_image("http", 1)
    for blob in (image.config, *(layer.blob for layer in image.layers)):
        assert registry.upload_blob("http/app", blob.data) == blob.digest
        assert tree.blob_data(root, blob.digest).read_bytes() == blob.data
        assert tree.layer_link(root, "http/app", blob.digest).read_text() == blob.digest

    assert registry.put_manifest("http/app", "t1", image.manifest.data, OCI_MANIFEST) == image.digest
    assert registry.tags("http/app") == ["t1"] and registry.catalog() == ["http/app"]
    assert tree.tag_current(root, "http/app", "t1") == image.digest

    upload_id = registry.start_upload("http/app")
    upload = tree.uploads_dir(root, "http/app") / upload_id
    assert sorted(p.relative_to(upload).as_posix() for p in upload.rglob("*") if p.is_file()) == [
        "data",
        "hashstates/sha256/0",
        "startedat",
    ]
    assert abs(read_startedat(upload) - datetime.now(timezone.utc)) < timedelta(minutes=5)

    registry.delete_manifest("http/app", image.digest)
    assert registry.tags("http/app") == []
    assert os.listdir(tree.revision_dir(root, "http/app", image.digest)) == []
    assert tree.tag_names(root, "http/app") == set()


@pytest.mark.registry
def test_age_uploads_rewrites_only_the_chosen_uploads(registry: Registry) -> None:
    fresh, stale = registry.start_upload("age/app"), registry.start_upload("age/app")
    before = {p.name: read_startedat(p) for p in upload_dirs(registry.root)}
    rewritten = age_uploads(registry.root, older_by=timedelta(days=30), only=[stale])
    after = {p.name: read_startedat(p) for p in upload_dirs(registry.root)}

    assert [p.parent.name for p in rewritten] == [stale]
    assert after[fresh] == before[fresh]
    assert before[stale] - after[stale] == timedelta(days=30)
    text = (tree.uploads_dir(registry.root, "age/app") / stale / "startedat").read_text()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", text)


@pytest.mark.registry
def test_restart_serves_a_tree_changed_offline(registry: Registry, tmp_path: Path) -> None:
    image = make_image("restart", 1)
    registry.push(write_layout(tmp_path / "layout", {"img": image}), "img", "restart/app", "v1")
    registry.push(write_layout(tmp_path / "layout", {"img": image}), "img", "restart/app", "v2")
    addr = registry.addr
    registry.stop()
    assert not registry.running
    shutil.rmtree(tree.tag_dir(registry.root, "restart/app", "v1"))
    registry.start()

    assert registry.addr == addr
    assert registry.tags("restart/app") == ["v2"]
    assert not registry.pull_ok("restart/app", "v1") and registry.pull_ok("restart/app", "v2")


@pytest.mark.registry
def test_pull_detects_a_corrupt_layer(registry: Registry, tmp_path: Path) -> None:
    image = make_image("rot", 2)
    registry.push(write_layout(tmp_path / "layout", {"img": image}), "img", "rot/app", "v1")
    assert registry.pull_ok("rot/app", "v1")
    data = tree.blob_data(registry.root, image.layers[1].digest)
    flipped = bytearray(data.read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF
    data.write_bytes(bytes(flipped))
    assert not registry.pull_ok("rot/app", "v1")


@pytest.mark.registry
def test_registry_is_stopped_on_exit(tmp_path: Path) -> None:
    with Registry(tmp_path / "root") as registry:
        pid = registry.pid
        host, port = registry.addr.split(":")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(OSError), socket.create_connection((host, int(port)), timeout=1):
        pass
    assert not registry.workdir.exists()


@pytest.mark.registry
def test_schema1_push_stores_the_unsigned_payload(schema1_registry: Registry) -> None:
    scenario = build_schema1(schema1_registry)
    root = schema1_registry.root
    (repo, tag, digest), = scenario.tagged()
    served = schema1_registry.get_manifest(repo, tag)
    stored = tree.blob_data(root, digest).read_bytes()

    assert served.media_type == DOCKER_SCHEMA1_SIGNED and served.digest == digest
    assert sha256(stored) == digest and sha256(served.body) != digest
    assert "signatures" in served.json() and "signatures" not in json.loads(stored)
    assert json.loads(stored)["schemaVersion"] == 1
    assert scenario.manifests[digest].config is None
    assert tree.layer_links(root, repo) == set(scenario.manifests[digest].layers)
    assert schema1_registry.pull_ok(repo, tag)


# -- the demo tree ------------------------------------------------------------------


@pytest.mark.registry
def test_demo_tags_pull_with_the_recorded_digests(demo, demo_registry: Registry) -> None:
    tagged = list(demo.scenario.tagged())
    assert len(tagged) >= 15
    for repo, tag, digest in tagged:
        assert demo_registry.manifest_digest(repo, tag) == digest, (repo, tag)
        assert demo_registry.pull_ok(repo, tag, all=True), (repo, tag)
    for repo, digests in demo.scenario.untagged.items():
        for digest in digests | demo.scenario.referrers[repo]:
            assert demo_registry.pull_ok(repo, digest), (repo, digest)


@pytest.mark.registry
def test_demo_tree_on_disk_matches_the_scenario(demo_build) -> None:
    root, s = demo_build.root, demo_build.scenario
    assert tree.blob_digests(root) == s.blobs
    assert tree.repositories(root) == s.repos
    for repo in s.repos:
        assert tree.layer_links(root, repo) == s.layer_links.get(repo, set()), repo
        assert tree.revision_links(root, repo) == s.revisions[repo], repo
        assert tree.revision_dirs(root, repo) == s.revisions[repo] | s.deleted.get(repo, set()), repo
        assert tree.tag_names(root, repo) == set(s.tags.get(repo, {})), repo
        for tag, digest in s.tags.get(repo, {}).items():
            assert tree.tag_current(root, repo, tag) == digest
            assert tree.tag_index(root, repo, tag) == set(s.tag_history[repo][tag])
    for digest in s.blobs:
        assert sha256(tree.blob_data(root, digest).read_bytes()) == digest


@pytest.mark.registry
def test_demo_links_hold_exactly_their_digest(demo_build) -> None:
    links = list(tree.v2(demo_build.root).rglob("link"))
    assert len(links) > 100
    for link in links:
        text = link.read_text()
        assert LINK.fullmatch(text), link
        if link.parent.name != "current":
            assert text == f"{link.parent.parent.name}:{link.parent.name}", link


@pytest.mark.registry
def test_demo_covers_every_topic(demo_build) -> None:
    s = demo_build.scenario
    assert {"org/team/app", "a/b", "a/b/c", "multi/oci", "multi/docker", "schema1/app"} <= s.repos
    assert s.empty_repos == {"deleted/empty", "orphan/blobonly"}
    assert s.untagged["bydigest/app"] and "bydigest/app" not in s.tags
    assert len(s.referrers["signed/app"]) == 1
    assert any(tag.startswith("sha256-") and tag.endswith(".sig") for tag in s.tags["signed/app"])
    assert {repo for repos in s.shared_layers.values() for repo in repos} >= {"shared/one", "shared/two", "shared/three"}
    assert s.uploads == {"uploads/app": 2, "uploads/pending": 1} and s.stale_uploads == {"uploads/app": 1}
    (referrer,) = s.referrers["signed/app"]
    assert s.manifests[referrer].subject == s.tags["signed/app"]["v1"]
    assert s.manifests[referrer].artifact_type


@pytest.mark.registry
def test_repushed_tag_index_holds_every_push(demo_build) -> None:
    root, s = demo_build.root, demo_build.scenario
    history = s.tag_history["repush/app"]["latest"]
    assert len(history) == 3
    assert tree.tag_index(root, "repush/app", "latest") == set(history)
    assert tree.tag_current(root, "repush/app", "latest") == history[-1]
    # The first push is still `stable`; the second is named by no tag.
    assert s.tags["repush/app"]["stable"] == history[0]
    assert s.untagged["repush/app"] == {history[1]}


@pytest.mark.registry
def test_deleted_manifests_leave_empty_revision_dirs(demo, demo_registry: Registry) -> None:
    root, s = demo.root, demo.scenario
    assert sum(map(len, s.deleted.values())) == 4
    for repo, digests in s.deleted.items():
        for digest in digests:
            assert os.listdir(tree.revision_dir(root, repo, digest)) == []
            assert demo_registry.request("GET", f"/v2/{repo}/manifests/{digest}").status == 404
    # A deleted earlier target of `v1` stays in its tag index; the tag `old` is gone.
    assert s.deleted["deleted/app"] & set(s.tag_history["deleted/app"]["v1"])
    assert "old" not in tree.tag_names(root, "deleted/app")
    assert demo_registry.tags("deleted/empty") == []
    assert "deleted/empty" in demo_registry.catalog()
    assert tree.tag_names(root, "deleted/empty") == set()


@pytest.mark.registry
def test_orphan_blobs_exist_and_nothing_names_them(demo_build) -> None:
    root, s = demo_build.root, demo_build.scenario
    assert len(s.orphan_blobs) == 2
    named = {ref for facts in s.manifests.values() for ref in facts.references} | set(s.manifests)
    for digest in s.orphan_blobs:
        assert sha256(tree.blob_data(root, digest).read_bytes()) == digest
        assert digest not in named
    assert s.orphan_blobs <= s.unreferenced_blobs
    assert tree.layer_links(root, "orphan/blobonly") <= s.orphan_blobs


@pytest.mark.registry
def test_uploads_fresh_and_stale(demo_build) -> None:
    root, s = demo_build.root, demo_build.scenario
    now = datetime.now(timezone.utc)
    by_repo: dict[str, list[datetime]] = {}
    for upload in upload_dirs(root):
        repo = upload.parent.parent.relative_to(tree.v2(root) / "repositories").as_posix()
        by_repo.setdefault(repo, []).append(read_startedat(upload))
    assert {repo: len(times) for repo, times in by_repo.items()} == s.uploads
    stale = {repo: sum(now - t > PURGE_AGE for t in times) for repo, times in by_repo.items()}
    fresh = {repo: sum(now - t < timedelta(hours=1) for t in times) for repo, times in by_repo.items()}
    assert {repo: n for repo, n in stale.items() if n} == s.stale_uploads
    assert {repo: stale[repo] + fresh[repo] for repo in by_repo} == s.uploads


@pytest.mark.registry
def test_catalog_lists_directories_holding_layers(demo, demo_registry: Registry) -> None:
    s = demo.scenario
    catalog = demo_registry.catalog()
    assert catalog == sorted(catalog)
    assert set(catalog) == {repo for repo in s.repos if s.layer_links.get(repo)}
    assert "uploads/pending" not in catalog and "orphan/blobonly" in catalog


@pytest.mark.registry
def test_gc_dry_run_on_demo_lists_exactly_the_unreferenced_blobs(demo, tmp_path: Path) -> None:
    s = demo.scenario
    result = garbage_collect(write_config(demo.root, tmp_path / "gc.yml"), dry_run=True)
    assert result.returncode == 0, result.stderr
    report = parse_gc_output(result.stdout)

    assert s.orphan_blobs and s.orphan_blobs <= report.eligible_blobs
    for digest in s.orphan_blobs:
        assert f"blob eligible for deletion: {digest}" in result.stdout.splitlines()
    assert report.eligible_blobs == s.unreferenced_blobs
    assert report.summary == (len(s.blobs - s.unreferenced_blobs), len(s.unreferenced_blobs), 0)
    assert report.marked_manifests == {repo: d for repo, d in s.revisions.items() if d}
    assert report.eligible_manifests == {}
    # Every marking line for a manifest ends in a space; a blank line precedes the summary.
    lines = result.stdout.splitlines()
    assert all(line.endswith(" ") for line in lines if ": marking manifest " in line)
    summary_at = next(i for i, line in enumerate(lines) if line.endswith("eligible for deletion"))
    assert lines[summary_at - 1] == ""
    bare = [line for line in lines if line and " " not in line]
    assert bare == sorted(repo for repo in s.repos if s.layer_links.get(repo))


@pytest.mark.registry
def test_same_seed_builds_the_same_demo(demo_build, schema1_registry: Registry) -> None:
    again = build_all(schema1_registry)
    assert again.to_json() == demo_build.scenario.to_json()
    assert tree.blob_digests(schema1_registry.root) == tree.blob_digests(demo_build.root)


# -- field-notes checks that registry-fsck relies on -----------------------------


@pytest.mark.registry
def test_gc_delete_untagged_aborts_on_a_repository_without_tags(demo, tmp_path: Path) -> None:
    result = garbage_collect(write_config(demo.root, tmp_path / "gc.yml"), dry_run=True, delete_untagged=True)
    assert result.returncode != 0
    assert "failed to retrieve tags unknown repository name=bydigest/app" in result.stderr


@pytest.mark.registry
def test_gc_delete_untagged_breaks_indexes_and_referrers(registry: Registry) -> None:
    s = build(registry, "multiarch", "signatures", "repushed_tag")
    root = registry.root
    dry = parse_gc_output(garbage_collect(registry.config_path, dry_run=True, delete_untagged=True).stdout)
    expected = {repo: s.index_children[repo] | s.referrers[repo] | s.untagged[repo] for repo in s.repos}
    assert dry.eligible_manifests == {repo: d for repo, d in expected.items() if d}

    registry.stop()
    result = garbage_collect(registry.config_path, dry_run=False, delete_untagged=True)
    assert result.returncode == 0, result.stderr
    for repo in ("multi/oci", "multi/docker"):
        for child in s.index_children[repo]:
            assert not tree.revision_dir(root, repo, child).exists()
            assert tree.blob_data(root, child).exists()  # the parent marks it as a blob
            assert not tree.blob_data(root, s.manifests[child].config).exists()
    (referrer,) = s.referrers["signed/app"]
    assert not tree.revision_dir(root, "signed/app", referrer).exists()
    assert not tree.blob_data(root, referrer).exists()

    registry.start()
    assert not registry.pull_ok("multi/oci", "latest", all=True)
    assert not registry.pull_ok("multi/docker", "latest", all=True)
    assert registry.pull_ok("signed/app", "v1")


@pytest.mark.registry
@pytest.mark.parametrize(
    "corrupt",
    [lambda d: "", lambda d: d + "\n", lambda d: d[:-1], lambda d: "sha256:" + d.split(":")[1].upper()],
    ids=["empty", "newline", "short", "uppercase"],
)
def test_invalid_links_break_reads_and_gc(registry: Registry, tmp_path: Path, corrupt) -> None:
    image = make_image("badlink", 1)
    registry.push(write_layout(tmp_path / "layout", {"img": image}), "img", "bad/app", "v1")
    registry.stop()
    link = tree.revision_link(registry.root, "bad/app", image.digest)
    link.write_text(corrupt(image.digest))

    result = garbage_collect(registry.config_path, dry_run=True)
    assert result.returncode != 0
    assert "invalid checksum digest" in result.stdout + result.stderr
    registry.start()
    assert registry.request("GET", f"/v2/bad/app/manifests/{image.digest}").status != 200


@pytest.mark.registry
def test_delete_by_tag_and_oci_artifact_type_are_rejected(registry: Registry) -> None:
    config, layer, manifest = images.make_artifact("artifact")
    for blob in (config, layer):
        registry.upload_blob("art/app", blob.data)
    registry.put_manifest("art/app", "ok", manifest.data, OCI_MANIFEST)
    assert registry.request("DELETE", "/v2/art/app/manifests/ok").status == 400
    put = registry.request(
        "PUT", "/v2/art/app/manifests/t", manifest.data, {"Content-Type": "application/vnd.oci.artifact.manifest.v1+json"}
    )
    assert put.status == 400 and b"MANIFEST_INVALID" in put.body
    # artifactType/subject manifests are stored byte for byte.
    assert registry.get_manifest("art/app", "ok").body == manifest.data


def _serve_briefly(config: dict, path: Path, wait: float) -> tuple[int | None, str]:
    """Run `serve` for up to `wait` seconds: (exit code or None if still running, output)."""
    path.write_text(yaml.safe_dump(config))
    log = path.with_suffix(".log")
    with open(log, "wb") as out:
        proc = subprocess.Popen([REGISTRY_BIN, "serve", str(path)], stdout=out, stderr=subprocess.STDOUT)
    try:
        code = proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=5)
    return code, log.read_text()


@pytest.mark.registry
@pytest.mark.parametrize(
    "purging, missing",
    [({"enabled": True}, "age"), ({"enabled": True, "age": "168h", "interval": "24h"}, "dryrun"), ({"enabled": False}, None)],
)
def test_partial_uploadpurging_config(registry_binaries, tmp_path: Path, purging: dict, missing: str | None) -> None:
    """Missing keys panic only when purging is enabled; `enabled: false` alone is accepted."""
    config = registry_config(tmp_path / "root", free_port())
    config["storage"]["maintenance"]["uploadpurging"] = purging
    code, out = _serve_briefly(config, tmp_path / "config.yml", wait=3 if missing is None else 10)
    if missing:
        assert code not in (None, 0)
        assert f"panic: Unable to parse upload purge configuration: {missing} missing" in out
    else:
        assert code is None and "panic" not in out


@pytest.mark.registry
def test_version_output(registry_binaries) -> None:
    out = subprocess.run([REGISTRY_BIN, "--version"], capture_output=True, text=True, timeout=10).stdout
    assert re.match(r"\S*docker-registry github\.com/docker/distribution 2\.8\.", out)


# -- the committed fixtures -----------------------------------------------------------


def _tarball_tree(dest: Path) -> Path:
    with tarfile.open(FIXTURES / "demo.tar.gz") as tar:
        tar.extractall(dest, filter="tar")
    return dest


def test_fixture_tarball_holds_the_committed_tree(tmp_path: Path) -> None:
    extracted = _tarball_tree(tmp_path / "root")
    assert _files(extracted) == _files(FIXTURES / "demo")
    facts = json.loads((FIXTURES / "demo.json").read_text())
    # Only the tarball keeps the empty revision dirs left by API deletes.
    for repo, digests in facts["deleted"].items():
        for digest in digests:
            assert os.listdir(tree.revision_dir(extracted, repo, digest)) == []
    assert (FIXTURES / "demo.tar.gz").stat().st_size + sum(map(len, _files(FIXTURES / "demo").values())) < 2**20


def test_fixture_uploads_are_all_stale() -> None:
    uploads = upload_dirs(FIXTURES / "demo")
    assert uploads
    assert all(datetime.now(timezone.utc) - read_startedat(u) > PURGE_AGE for u in uploads)


@pytest.mark.registry
def test_fixture_is_what_the_harness_builds_today(demo_build) -> None:
    """Fails when the harness changed and `python fixtures/regenerate.py` was not run."""
    committed = json.loads((FIXTURES / "demo.json").read_text())
    current = json.loads(json.dumps(demo_build.scenario.all_uploads_stale().to_json()))
    assert committed == current
    assert tree.blob_digests(FIXTURES / "demo") == demo_build.scenario.blobs


@pytest.mark.registry
def test_gc_dry_run_on_the_fixture_tarball(tmp_path: Path) -> None:
    root = _tarball_tree(tmp_path / "root")
    facts = json.loads((FIXTURES / "demo.json").read_text())
    result = garbage_collect(write_config(root, tmp_path / "gc.yml"), dry_run=True)
    assert result.returncode == 0, result.stderr
    assert parse_gc_output(result.stdout).eligible_blobs == set(facts["unreferenced_blobs"])
