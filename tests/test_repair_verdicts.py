"""One verdict per item in a repair's plan, on real registry trees: what --fix-damage mends is not
also skipped, a quarantined blob counts its true bytes, and whatever --protect keeps says so."""

import orjson
import pytest
from clirun import run_cli

from tests.harness import tree
from tests.harness.registry import Registry, age_uploads

pytestmark = pytest.mark.registry


@pytest.fixture
def quiet_demo(demo):
    age_uploads(demo.root)
    return demo


def plan_of(root, *flags):
    result = run_cli("repair", str(root), "--json", *flags)
    assert "Traceback" not in result.stderr and not result.returncode & 16, result.stderr
    return result, orjson.loads(result.stdout)


def test_fix_damage_gives_one_verdict_per_item_and_true_bytes(quiet_demo, tmp_path):
    demo = quiet_demo
    root = demo.root
    scenario = demo.scenario
    v1 = scenario.tags["plain/app"]["v1"]
    # A current link with a stray newline: link-invalid (rewritten) and tag-broken (settled by it).
    current = tree.tag_current_link(root, "plain/app", "v1")
    current.write_bytes(current.read_bytes() + b"\n")
    # An emptied _layers link of a live layer: link-invalid (nothing to recover) and layer-link-missing
    # (re-created from the manifest): the same file, one verdict.
    layer = scenario.manifests[v1].layers[0]
    emptied = tree.layer_link(root, "plain/app", layer)
    emptied.write_bytes(b"")
    # A manifest nothing uses as content, truncated: quarantined as corrupt, with its real size.
    untagged = sorted(scenario.untagged["repush/app"])[0]
    data = tree.blob_data(root, untagged)
    data.write_bytes(data.read_bytes()[:40])
    size = data.stat().st_size

    _, plan = plan_of(root, "--dry-run", "--fix-damage")
    acted = {a["path"] for a in plan["actions"]}
    skipped = {s["path"]: s["reason"] for s in plan["skipped"]}
    assert not acted & set(skipped), acted & set(skipped)
    assert str(emptied.relative_to(tree.v2(root))) in acted
    assert str(current.relative_to(tree.v2(root))) in acted
    assert str(tree.tag_dir(root, "plain/app", "v1").relative_to(tree.v2(root))) not in skipped
    (corrupt,) = [a for a in plan["actions"] if a["finding"] == "manifest-invalid"]
    assert corrupt["bytes"] == size > 0
    assert plan["summary"]["bytes"] == sum(a["bytes"] for a in plan["actions"])

    result, done = plan_of(root, "--yes", "--fix-damage")
    assert result.returncode & 1, result.stderr
    assert done["outcome"]["bytes_quarantined"] == plan["summary"]["bytes"]
    with Registry(root, schema1=scenario.schema1, workdir=tmp_path / "after") as registry:
        for repo, tag, digest in scenario.tagged():
            assert registry.manifest_digest(repo, tag) == digest, (repo, tag)
        assert registry.pull_ok("plain/app", "v1", all=True)


def test_everything_protect_keeps_is_listed_as_protected(quiet_demo, tmp_path):
    demo = quiet_demo
    scenario = demo.scenario
    untagged = sorted(scenario.untagged["repush/app"])[0]
    orphan = sorted(scenario.orphan_blobs)[0]
    tagged_repo, tag = "repush/app", next(iter(scenario.tags["repush/app"]))
    protect = tmp_path / "protect.txt"
    protect.write_text(f"repush/app@{untagged}\n{orphan}\n{tagged_repo}:{tag}\n")

    _, unprotected = plan_of(demo.root, "--dry-run", "--untagged")
    _, plan = plan_of(demo.root, "--dry-run", "--untagged", "--protect", str(protect))
    protected = {(s["id"], s["path"]) for s in plan["skipped"] if s["reason"] == "protected"}
    before = {(a["finding"], a["path"]) for a in unprotected["actions"]}
    after = {(a["finding"], a["path"]) for a in plan["actions"]}
    # Every action the protection withdrew is listed as protected; nothing protected is acted on.
    assert before - after and before - after <= protected
    digests = {s["digest"] for s in plan["skipped"] if s["reason"] == "protected"}
    assert untagged in digests and orphan in digests
    assert {s["tag"] for s in plan["skipped"] if s["reason"] == "protected" and s["id"] == "tag-index-stale"} <= {tag}
    assert not {a["digest"] for a in plan["actions"]} & {untagged, orphan}
    text = run_cli("repair", str(demo.root), "--dry-run", "--untagged", "--protect", str(protect)).stdout
    assert f"{len(protected):>7}  protected" in text
