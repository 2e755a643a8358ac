"""--fix-damage on real trees, one defect each: the mend, and that the registry serves again."""

import os

import orjson
import pytest
from clirun import audit_records, run_cli

from tests.harness import tree
from tests.harness.images import make_image, write_layout
from tests.harness.registry import Registry, age_uploads

pytestmark = pytest.mark.registry


@pytest.fixture
def quiet_demo(demo):
    age_uploads(demo.root)
    return demo


def damage_ids(root):
    return {r["id"] for r in audit_records(root) if r["severity"] == "damage"}


def fix(root, *extra):
    result = run_cli("repair", str(root), "--yes", "--fix-damage", "--json", *extra)
    assert result.returncode & 1, result.stderr
    return orjson.loads(result.stdout)


def test_link_with_trailing_newline_is_rewritten(quiet_demo, tmp_path):
    digest = quiet_demo.scenario.tags["plain/app"]["v1"]
    link = tree.revision_link(quiet_demo.root, "plain/app", digest)
    link.write_text(digest + "\n")
    assert "link-invalid" in damage_ids(quiet_demo.root)
    document = fix(quiet_demo.root)
    assert [a["finding"] for a in document["actions"] if a["action"] == "write-link"] == ["link-invalid"]
    assert link.read_text() == digest
    assert damage_ids(quiet_demo.root) == set()
    with Registry(quiet_demo.root, schema1=True, workdir=tmp_path / "after") as registry:
        assert registry.pull_ok("plain/app", "v1")


def test_missing_layer_link_is_recreated_with_its_siblings_owner(quiet_demo, tmp_path):
    repo_dir = tree.repo_dir(quiet_demo.root, "plain/app")
    for directory, dirnames, filenames in os.walk(repo_dir):  # as if the registry ran as uid 1000
        for name in dirnames + filenames:
            os.chown(os.path.join(directory, name), 1000, 1000)
    digest = quiet_demo.scenario.tags["plain/app"]["v1"]
    config = quiet_demo.scenario.manifests[digest].config
    link = tree.layer_link(quiet_demo.root, "plain/app", config)
    sibling = os.stat(next(p for p in link.parent.parent.glob("*/link") if p != link))
    link.unlink()
    link.parent.rmdir()
    with Registry(quiet_demo.root, schema1=True, workdir=tmp_path / "broken") as registry:
        assert not registry.pull_ok("plain/app", "v1")
    fix(quiet_demo.root)
    created = os.stat(link)
    assert link.read_text() == config
    assert (created.st_uid, created.st_gid, created.st_mode) == (1000, 1000, sibling.st_mode)
    assert os.stat(link.parent).st_uid == 1000
    with Registry(quiet_demo.root, schema1=True, workdir=tmp_path / "after") as registry:
        assert registry.pull_ok("plain/app", "v1")


def test_missing_current_is_restored_from_a_single_index_entry(quiet_demo, tmp_path):
    digest = quiet_demo.scenario.tags["org/team/app"]["latest"]
    current = tree.tag_current_link(quiet_demo.root, "org/team/app", "latest")
    current.unlink()
    fix(quiet_demo.root)
    assert current.read_text() == digest
    with Registry(quiet_demo.root, schema1=True, workdir=tmp_path / "after") as registry:
        assert registry.manifest_digest("org/team/app", "latest") == digest


def test_corrupt_layer_is_quarantined_and_a_repush_heals_the_tag(quiet_demo, tmp_path):
    digest = quiet_demo.scenario.tags["plain/app"]["v1"]
    layer = quiet_demo.scenario.manifests[digest].layers[0]
    data = tree.blob_data(quiet_demo.root, layer)
    corrupt = bytearray(data.read_bytes())
    corrupt[10] ^= 0xFF
    data.write_bytes(bytes(corrupt))
    document = fix(quiet_demo.root, "--verify")
    assert [a["digest"] for a in document["actions"] if a["finding"] == "blob-digest-mismatch"] == [layer]
    assert "plain/app:v1" in document["needs_repush"]
    assert not data.exists()
    with Registry(quiet_demo.root, schema1=True, workdir=tmp_path / "after") as registry:
        image = make_image("0/plain/app/v1")  # the seed the demo pushed v1 with
        assert image.layers[0].digest == layer
        layout_dir = write_layout(tmp_path / "layout", {"v1": image})
        registry.push(layout_dir, "v1", "plain/app", "v1")
        assert registry.pull_ok("plain/app", "v1")
    assert damage_ids(quiet_demo.root) == set()
