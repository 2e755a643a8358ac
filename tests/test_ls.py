"""`registry-fsck ls` against what the real registry answers: /v2/_catalog, /v2/<name>/tags/list, and
skopeo inspect on every tag's digest and platforms, on the demo tree the registry wrote."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.clirun import REPO, audit_records, run_cli, snapshot
from tests.harness import tree
from tests.harness.images import make_image, sha256
from tests.harness.registry import Registry

pytestmark = pytest.mark.registry

FORMAT = "registry-fsck/ls/1"


def _ls(*args: str) -> tuple[int, dict]:
    result = run_cli("ls", *args, "--json")
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, orjson.loads(result.stdout)


@pytest.fixture
def served(registry_binaries: None, tmp_path: Path) -> Iterator[Registry]:
    """The demo tree exactly as the registry left it (empty directories, its mtimes), served by the registry."""
    with tarfile.open(REPO / "fixtures" / "demo.tar.gz") as tar:
        tar.extractall(tmp_path / "root", filter="tar")
    with Registry(tmp_path / "root", schema1=True, workdir=tmp_path / "registry") as registry:
        yield registry


def _inspect(registry: Registry, repo: str, ref: str, raw: bool) -> bytes:
    result = registry.skopeo.run("inspect", "--tls-verify=false", *(["--raw"] if raw else []), registry.image_ref(repo, ref))
    assert result.returncode == 0, result.stderr
    return result.stdout.encode()


def _blob_size(registry: Registry, repo: str, digest: str) -> int:
    response = registry.request("HEAD", f"/v2/{repo}/blobs/{digest}")
    assert response.status == 200, (repo, digest, response.status)
    return int(response.header("Content-Length"))


def _image_bytes(registry: Registry, repo: str, manifest: dict) -> int:
    """Config and layers as the registry serves them (each blob once), sized by its Content-Length."""
    if manifest.get("schemaVersion") == 1:
        digests = {layer["blobSum"] for layer in manifest["fsLayers"]}
    else:
        digests = {manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])}
    return sum(_blob_size(registry, repo, digest) for digest in digests)


def test_ls_lists_what_the_catalog_lists_and_marks_what_it_gets_wrong(served: Registry) -> None:
    code, listed = _ls(str(served.root))
    assert code == 0 and listed["format"] == FORMAT and listed["complete"] is True
    rows = {row["name"]: row for row in listed["repositories"]}
    catalog = served.catalog()
    # Exactly the repositories the registry lists are those ls does not mark hidden.
    assert sorted(catalog) == sorted(name for name, row in rows.items() if row["catalog"] != "hidden")
    assert {name for name, row in rows.items() if row["catalog"] == "hidden"} == {"uploads/pending"}
    # Listed but nothing to pull: the emptied repository and the one holding an orphan blob only.
    assert {name for name, row in rows.items() if row["catalog"] == "empty"} == {"deleted/empty", "orphan/blobonly"}
    unknown_to_tags_list = set()
    for name in catalog:
        tags = served.tags_list(name)
        if tags is None:
            unknown_to_tags_list.add(name)
            tags = []
        assert rows[name]["tags"] == len(tags), name
        if rows[name]["catalog"] == "empty":
            assert tags == []
    # Listed by the catalog, yet "name unknown" to tags/list: no `_manifests/tags/` (pushed by digest only,
    # or blobs only).
    assert unknown_to_tags_list == {"bydigest/app", "orphan/blobonly"} and rows["bydigest/app"]["manifests"] == 1
    assert rows["uploads/pending"]["uploads"] == 1 and "only unfinished uploads" in rows["uploads/pending"]["note"]


def test_ls_repository_agrees_with_tags_list_and_skopeo_inspect(served: Registry) -> None:
    before = snapshot(served.root)
    inspected = 0
    for name in served.catalog():
        code, listed = _ls(str(served.root), name)
        assert code == 0 and listed["repository"]["name"] == name
        assert sorted(t["tag"] for t in listed["tags"]) == sorted(served.tags_list(name) or []), name
        for tag in listed["tags"]:
            assert tag["problem"] is None and tag["kind"] != "broken", tag
            raw = _inspect(served, name, tag["tag"], raw=True)
            manifest = json.loads(raw)
            if manifest.get("schemaVersion") == 1:
                # The registry re-signs schema1 on every GET: its digest is the stored one, as skopeo says.
                assert json.loads(_inspect(served, name, tag["tag"], raw=False))["Digest"] == tag["digest"]
            else:
                assert sha256(raw) == tag["digest"], (name, tag["tag"])
            if tag["kind"] == "index":
                platforms = [
                    {"os": m["platform"]["os"], "architecture": m["platform"]["architecture"],
                     "variant": m["platform"].get("variant"), "digest": m["digest"]}
                    for m in manifest["manifests"]
                ]
                assert [{k: p[k] for k in ("os", "architecture", "variant", "digest")} for p in tag["platforms"]] == platforms
                every = set()
                for platform in tag["platforms"]:
                    child = json.loads(_inspect(served, name, platform["digest"], raw=True))
                    assert platform["size"] == _image_bytes(served, name, child)
                    every |= {child["config"]["digest"], *(layer["digest"] for layer in child["layers"])}
                assert tag["size"] == sum(_blob_size(served, name, d) for d in every)
            else:
                assert tag["platforms"] == []
                assert tag["size"] == _image_bytes(served, name, manifest), (name, tag["tag"])
                if tag["kind"] == "image":
                    # skopeo's own view of the image: its digest and the layers it would pull.
                    image = json.loads(_inspect(served, name, tag["tag"], raw=False))
                    assert image["Digest"] == tag["digest"]
                    assert len(image["Layers"]) == len(manifest.get("layers") or manifest.get("fsLayers"))
            inspected += 1
    assert inspected == 19  # every tag of the demo (all pull)
    assert snapshot(served.root) == before  # ls never writes


def test_ls_repository_shows_platforms_signatures_and_referrers(served: Registry) -> None:
    _, multi = _ls(str(served.root), "multi/docker")
    (latest,) = multi["tags"]
    assert latest["kind"] == "index"
    assert latest["media_type"] == "application/vnd.docker.distribution.manifest.list.v2+json"
    assert [(p["os"], p["architecture"], p["variant"]) for p in latest["platforms"]] == [
        ("linux", "amd64", None), ("linux", "arm64", "v8"), ("linux", "s390x", None),
    ]
    _, signed = _ls(str(served.root), "signed/app")
    tags = {t["tag"]: t for t in signed["tags"]}
    image = tags["v1"]
    signature_tag = f"sha256-{image['digest'].split(':')[1]}.sig"
    assert tags[signature_tag]["kind"] == "signature" and tags[signature_tag]["subject"] == image["digest"]
    referrers = {r["kind"]: r for r in image["referrers"]}
    assert referrers["signature"]["tag"] == signature_tag
    assert referrers["signature"]["digest"] == tags[signature_tag]["digest"]
    sbom = referrers["sbom"]
    assert sbom["artifact_type"] == "application/spdx+json" and sbom["tag"] is None
    # What the registry serves for the referrer names the tagged image as its subject.
    served_sbom = served.get_manifest("signed/app", sbom["digest"]).json()
    assert served_sbom["subject"]["digest"] == image["digest"]
    assert served_sbom["artifactType"] == sbom["artifact_type"]
    # The referrer pushed by digest is no untagged manifest: its subject is tagged. As the audit counts them:
    untagged = audit_records(served.root)
    for repo in ("signed/app", "multi/docker", "deleted/app", "repush/app"):
        _, listed = _ls(str(served.root), repo)
        expected = len([r for r in untagged if r["id"] == "manifest-untagged" and r["repository"] == repo])
        assert listed["repository"]["untagged"] == expected, repo
    assert signed["repository"]["untagged"] == 0 and listed["repository"]["untagged"] == 1  # repush/app: latest's second push


def test_ls_text_shows_marks_and_tags(served: Registry) -> None:
    listing = run_cli("ls", str(served.root))
    assert listing.returncode == 0, listing.stderr
    lines = {line.split()[0]: line for line in listing.stdout.splitlines() if line.strip()}
    assert "EMPTY" in lines["deleted/empty"] and "HIDDEN" in lines["uploads/pending"]
    assert lines["plain/app"].split()[1:] == ["3", "2", "0", "listed"]
    assert "/v2/_catalog lists 18 (2 of them empty) and hides 1" in listing.stdout
    tags = run_cli("ls", str(served.root), "multi/oci")
    assert tags.returncode == 0
    assert "linux/arm64/v8" in tags.stdout and "index" in tags.stdout


def _push_by_api(registry: Registry, repo: str, tag: str, seed: str) -> str:
    image = make_image(seed, layers=1)
    for blob in (image.config, *(layer.blob for layer in image.layers)):
        registry.upload_blob(repo, blob.data)
    return registry.put_manifest(repo, tag, image.manifest.data, image.manifest.media_type)


def test_catalog_marks_match_the_registry_for_emptied_and_uploads_only_repositories(registry: Registry) -> None:
    _push_by_api(registry, "kept/app", "v1", "kept")
    for tag in ("v1", "v2"):
        registry.delete_manifest("gone/app", _push_by_api(registry, "gone/app", tag, f"gone/{tag}"))
    registry.start_upload("pending/app")  # started, never finished
    _push_by_api(registry, "nolayers/app", "v1", "nolayers")
    shutil.rmtree(tree.repo_dir(registry.root, "nolayers/app") / "_layers")
    catalog = registry.catalog()
    assert sorted(catalog) == ["gone/app", "kept/app"]  # the registry's own view
    assert registry.tags("gone/app") == []
    code, listed = _ls(str(registry.root))
    assert code == 0
    marks = {row["name"]: (row["catalog"], row["tags"], row["manifests"], row["uploads"]) for row in listed["repositories"]}
    assert marks == {
        "gone/app": ("empty", 0, 0, 0),
        "kept/app": ("listed", 1, 1, 0),
        "nolayers/app": ("hidden", 1, 1, 0),
        "pending/app": ("hidden", 0, 0, 1),
    }
    notes = {row["name"]: row["note"] for row in listed["repositories"]}
    assert "no _layers" in notes["nolayers/app"] and "only unfinished uploads" in notes["pending/app"]
    assert sorted(name for name, mark in marks.items() if mark[0] != "hidden") == sorted(catalog)


def test_broken_tags_are_shown_as_broken_not_a_traceback(served: Registry) -> None:
    root = served.root
    tree.tag_current_link(root, "plain/app", "v1").write_bytes(b"")  # an empty current link
    orphan_digest = tree.tag_current(root, "orphan/app", "v1")
    shutil.rmtree(tree.blob_dir(root, orphan_digest))  # the tagged manifest's data is gone
    org = json.loads(tree.blob_data(root, tree.tag_current(root, "org/team/app", "latest")).read_bytes())
    shutil.rmtree(tree.blob_dir(root, org["layers"][0]["digest"]))  # one layer is gone
    for repo, tag in (("plain/app", "v1"), ("orphan/app", "v1")):
        assert served.request("GET", f"/v2/{repo}/manifests/{tag}").status != 200  # the registry fails it too
    assert not served.pull_ok("org/team/app", "latest")

    code, plain = _ls(str(root), "plain/app")
    assert code == 0
    v1 = next(t for t in plain["tags"] if t["tag"] == "v1")
    assert v1["kind"] == "broken" and v1["digest"] is None and "invalid (empty)" in v1["problem"]
    _, orphan = _ls(str(root), "orphan/app")
    assert orphan["tags"][0]["kind"] == "broken" and orphan["tags"][0]["problem"] == "its manifest is not stored"
    _, org_listed = _ls(str(root), "org/team/app")
    latest = org_listed["tags"][0]
    assert latest["kind"] == "image" and "1 of its blobs is not stored" in latest["problem"]
    text = run_cli("ls", str(root), "plain/app")
    assert text.returncode == 0 and "BROKEN: its current link is invalid (empty)" in text.stdout


def test_partial_view_adds_8_and_an_unknown_repository_is_one_line(served: Registry) -> None:
    (served.root.parent / "a-file").write_text("x")
    os.symlink(served.root.parent / "a-file", tree.repo_dir(served.root, "plain") / "evil")  # not followed: unknown
    code, listed = _ls(str(served.root))
    assert code == 8 and listed["complete"] is False and listed["exit_code"] == 8
    code, _ = _ls(str(served.root), "plain/app")
    assert code == 8
    missing = run_cli("ls", str(served.root), "no/such")
    assert missing.returncode == 8
    assert missing.stderr.strip().splitlines() == [
        f"registry-fsck: error: no/such: no such repository in {tree.v2(served.root)}"
    ]
    not_registry = run_cli("ls", str(served.root.parent / "a-file"))
    assert not_registry.returncode == 8 and "Traceback" not in not_registry.stderr


def test_pushed_is_the_mtime_of_the_current_link(served: Registry) -> None:
    link = tree.tag_current_link(served.root, "repush/app", "stable")
    os.utime(link, (1_700_000_000, 1_700_000_000))
    _, listed = _ls(str(served.root), "repush/app")
    stable = next(t for t in listed["tags"] if t["tag"] == "stable")
    assert stable["pushed"] == "2023-11-14T22:13:20+00:00"


def test_config_gives_the_root_and_the_one_argument_is_the_repository(served: Registry) -> None:
    code, listed = _ls("--config", str(served.config_path), "plain/app")
    assert code == 0 and listed["repository"]["name"] == "plain/app"
