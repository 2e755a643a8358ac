"""One defect per test, made by corrupting a real registry tree; each asserts the exact finding."""

import os
import subprocess
import sys

import orjson
import pytest
from clirun import audit_records, by_id, run_cli

from tests.harness import tree

pytestmark = pytest.mark.registry


def rel(root, path):
    return str(path.relative_to(tree.v2(root)))


def damage(records):
    return sorted((r["id"], r["path"]) for r in records if r["severity"] == "damage")


def ids_at(records, path):
    return {r["id"] for r in records if r["path"] == path}


def plain(demo):
    """(repo, tag, digest) of the demo's plain image tag v1."""
    return "plain/app", "v1", demo.scenario.tags["plain/app"]["v1"]


@pytest.mark.parametrize(
    ("content", "defect"),
    [
        (b"", "empty"), (b"\n", "empty"), (b"sha256:abc", "wrong digest length"), (b"garbage", "not a digest"),
        # Not "trailing whitespace": stripping it leaves no digest, so the defect to fix is the content.
        (b"garbage!!\n", "not a digest"), (b"sha256:abc\n", "wrong digest length"),
    ],
)
def test_invalid_current_link_breaks_the_tag_but_keeps_its_manifests(demo, content, defect):
    repo, tag, digest = plain(demo)
    link = tree.tag_current_link(demo.root, repo, tag)
    link.write_bytes(content)
    records = audit_records(demo.root)
    invalid = by_id(records, "link-invalid")
    assert [(r["path"], r["tag"]) for r in invalid] == [(rel(demo.root, link), tag)]
    assert defect in invalid[0]["message"]
    assert [(r["repository"], r["tag"]) for r in by_id(records, "tag-broken")] == [(repo, tag)]
    # v1's manifest is not judged untagged: the broken tag may still need it.
    assert digest not in {r["digest"] for r in by_id(records, "manifest-untagged")}


def test_uppercase_layer_link_is_invalid_and_the_blob_unlinked(demo):
    repo, _, digest = plain(demo)
    layer = demo.scenario.manifests[digest].layers[0]
    link = tree.layer_link(demo.root, repo, layer)
    link.write_bytes(link.read_bytes().upper().replace(b"SHA256", b"sha256"))
    records = audit_records(demo.root)
    assert damage(records) == sorted([
        ("link-invalid", rel(demo.root, link)),
        ("layer-link-missing", rel(demo.root, link.parent)),
    ])
    assert "uppercase" in by_id(records, "link-invalid")[0]["message"]


def test_revision_link_naming_another_digest_is_a_mismatch(demo):
    repo, _, digest = plain(demo)
    other = demo.scenario.tags["plain/app"]["v2"]
    link = tree.revision_link(demo.root, repo, digest)
    link.write_text(other)
    records = audit_records(demo.root)
    assert ("link-mismatch", rel(demo.root, link)) in damage(records)
    assert any(r["id"] == "tag-broken" and r["tag"] == "v1" for r in records)


def test_missing_current_link_keeps_the_tag_index(demo):
    repo, tag, digest = plain(demo)
    tree.tag_current_link(demo.root, repo, tag).unlink()
    records = audit_records(demo.root)
    assert [(r["tag"], r["message"]) for r in by_id(records, "tag-broken")] == [
        (tag, "current link is missing: the tag cannot be pulled")
    ]
    assert digest not in {r["digest"] for r in by_id(records, "manifest-untagged")}
    assert not by_id(records, "tag-index-stale")  or all(r["tag"] != tag for r in by_id(records, "tag-index-stale"))


@pytest.mark.parametrize(("content", "reason"), [(b"", "empty"), (b'{"schemaVersion": 2, "mediaType": "appl', "not JSON")])
def test_empty_or_truncated_manifest_data(demo, content, reason):
    repo, tag, digest = plain(demo)
    data = tree.blob_data(demo.root, digest)
    data.write_bytes(content)
    records = audit_records(demo.root)
    invalid = by_id(records, "manifest-invalid")
    assert [(r["digest"], r["path"]) for r in invalid] == [(digest, rel(demo.root, data.parent))]
    assert reason in invalid[0]["message"]
    assert any(r["id"] == "tag-broken" and r["tag"] == tag for r in records)
    assert ids_at(records, rel(demo.root, data.parent)) == {"manifest-invalid"}


def test_missing_layer_blob_is_a_missing_reference(demo):
    repo, _, digest = plain(demo)
    layer = demo.scenario.manifests[digest].layers[0]
    blob = tree.blob_dir(demo.root, layer)
    for child in blob.iterdir():
        child.unlink()
    blob.rmdir()
    records = audit_records(demo.root)
    missing = by_id(records, "manifest-missing-ref")
    assert {(r["repository"], r["digest"]) for r in missing} == {(repo, layer)}
    # The layer link now names a missing blob, but a live manifest needs it: not garbage.
    assert layer not in {r["digest"] for r in by_id(records, "layer-link-dangling")}


def test_missing_layer_link_fails_pulls(demo):
    repo, _, digest = plain(demo)
    config = demo.scenario.manifests[digest].config
    link = tree.layer_link(demo.root, repo, config)
    link.unlink()
    records = audit_records(demo.root)
    assert damage(records) == [("layer-link-missing", rel(demo.root, link.parent))]


def test_corrupt_blob_found_only_with_verify(demo):
    _, _, digest = plain(demo)
    layer = demo.scenario.manifests[digest].layers[0]
    data = tree.blob_data(demo.root, layer)
    content = bytearray(data.read_bytes())
    content[len(content) // 2] ^= 0xFF
    data.write_bytes(bytes(content))
    assert damage(audit_records(demo.root)) == []
    verified = audit_records(demo.root, verify=True)
    assert damage(verified) == [("blob-digest-mismatch", rel(demo.root, data.parent))]


def test_zero_byte_layer_blob_is_damage(demo):
    _, _, digest = plain(demo)
    layer = demo.scenario.manifests[digest].layers[0]
    data = tree.blob_data(demo.root, layer)
    data.write_bytes(b"")
    records = audit_records(demo.root)
    assert ("blob-empty", rel(demo.root, data.parent)) in damage(records)


def test_revision_without_data_is_dangling_unless_a_tag_names_it(demo):
    untagged = sorted(demo.scenario.untagged["repush/app"])[0]
    data = tree.blob_data(demo.root, untagged)
    data.unlink()
    records = audit_records(demo.root)
    dangling = by_id(records, "revision-dangling")
    assert [r["digest"] for r in dangling] == [untagged]
    assert untagged not in {r["digest"] for r in by_id(records, "manifest-untagged")}


def test_index_child_without_revision_breaks_the_index(demo):
    index = demo.scenario.tags["multi/oci"]["latest"]
    child = demo.scenario.manifests[index].children[0]
    revision = tree.revision_dir(demo.root, "multi/oci", child)
    (revision / "link").unlink()
    records = audit_records(demo.root)
    missing = by_id(records, "manifest-missing-ref")
    assert [(r["repository"], r["digest"]) for r in missing] == [("multi/oci", child)]


def test_repository_without_layers_dir_is_invisible_to_registry_2_8(demo):
    layers = tree.repo_dir(demo.root, "orphan/app") / "_layers"
    subprocess.run(["rm", "-r", str(layers)], check=True)
    records = audit_records(demo.root)
    assert [r["repository"] for r in by_id(records, "repo-invisible")] == ["orphan/app"]
    assert {r["repository"] for r in by_id(records, "layer-link-missing")} == {"orphan/app"}


def test_oddities_are_notices_and_never_crash_output(demo):
    v2 = tree.v2(demo.root)
    (v2 / "stray.txt").write_text("x")
    (demo.root.parent / "a-file").write_text("x")
    os.symlink(demo.root.parent / "a-file", v2 / "repositories" / "plain" / "evil")  # a link to a file: not followed
    os.mkdir(os.fsencode(v2 / "repositories") + b"/bad\xffname")
    leftover = tree.tag_current_link(demo.root, "plain/app", "v1").parent / "link.2b1f0c5e-3c1e-4f8e-9a7e-0d3c6b1a9f10.tmp"
    leftover.write_text("sha256:")
    records = audit_records(demo.root)
    unexpected = {r["path"]: r["message"] for r in by_id(records, "unexpected")}
    assert "stray.txt" in unexpected
    assert "symbolic link" in unexpected["repositories/plain/evil"]
    assert unexpected["repositories/bad\\xffname"] == "name is not valid UTF-8"
    assert [r["path"] for r in by_id(records, "tmp-leftover")] == [rel(demo.root, leftover)]
    text = run_cli("audit", str(demo.root), "--limit", "0")
    # The registry would open a file through the link; this tool does not, so its view is incomplete: exit gains 8.
    assert text.returncode == 4 | 8 and "Traceback" not in text.stderr
    assert "INCOMPLETE" in text.stdout
    assert "repositories/bad\\xffname" in text.stdout
    as_json = run_cli("audit", str(demo.root), "--json")
    assert as_json.returncode == 4 | 8 and "Traceback" not in as_json.stderr
    assert orjson.loads(as_json.stdout)["complete"] is False
    assert "repositories/bad\\xffname" in {f["path"] for f in orjson.loads(as_json.stdout)["findings"]}


def test_unreadable_directory_makes_the_audit_incomplete(demo):
    repo_dir = tree.repo_dir(demo.root, "plain/app") / "_manifests"
    os.chmod(repo_dir, 0)
    try:
        # As root, drop the capabilities that bypass permission bits, so mode 000 is real.
        result = subprocess.run(
            ["setpriv", "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-m", "fsck",
             "audit", str(demo.root), "--json"],
            capture_output=True, text=True, timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)),
        )
    finally:
        os.chmod(repo_dir, 0o755)
    document = orjson.loads(result.stdout)
    assert result.returncode == 4 | 8
    assert document["complete"] is False
    unreadable = [f for f in document["findings"] if f["id"] == "dir-unreadable"]
    assert [f["path"] for f in unreadable] == ["repositories/plain/app/_manifests"]
    # Nothing in a repository that could not be read whole is judged garbage.
    assert not [f for f in document["findings"] if f["repository"] == "plain/app" and f["severity"] == "garbage"]


@pytest.mark.parametrize("kind", ["revision", "current"])
def test_damaged_link_never_turns_what_it_names_into_garbage(demo, kind):
    """A recoverable link (here: a stray newline) still names a manifest: its blobs and links are not garbage."""
    repo, tag, digest = plain(demo)
    link = tree.revision_link(demo.root, repo, digest) if kind == "revision" else tree.tag_current_link(demo.root, repo, tag)
    link.write_text(digest + "\n")
    records = audit_records(demo.root)
    facts = demo.scenario.manifests[digest]
    garbage = {r["digest"] for r in records if r["severity"] == "garbage"}
    assert not garbage & {digest, *facts.references}
