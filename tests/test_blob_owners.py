"""Which repository a garbage blob's bytes are charged to in the summary: the one repository that alone
uses it (for an orphan, the one whose _layers link it; for an unreachable blob, the one whose stored
manifests are or reference it), else none: shared garbage."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from clirun import DEMO, run_cli

from tests.harness import tree


def summary(root: Path) -> dict:
    result = run_cli("audit", str(root), "--json")
    assert result.returncode in (0, 1, 4), result.stderr
    return json.loads(result.stdout)["summary"]


def reclaimable(counts: dict, repository: str) -> int:
    return counts["by_repository"].get(repository, {}).get("reclaimable_bytes", 0)


def link_layer(root: Path, repository: str, digest: str) -> None:
    link = tree.layer_link(root, repository, digest)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.write_text(digest)


def test_an_orphan_linked_by_one_repository_is_charged_to_it_and_one_linked_by_two_is_shared(tmp_path):
    root = tree.copy_tree(DEMO, tmp_path / "root")
    alone, shared = tree.add_orphan_blobs(root, 2)
    sizes = {d: tree.blob_data(root, d).stat().st_size for d in (alone, shared)}
    before = summary(root)
    assert before["shared_reclaimable_bytes"] >= sizes[alone] + sizes[shared]  # no owner while nothing links them

    link_layer(root, "plain", alone)
    link_layer(root, "plain", shared)
    link_layer(root, "multi", shared)
    after = summary(root)

    assert after["shared_reclaimable_bytes"] == before["shared_reclaimable_bytes"] - sizes[alone]
    assert reclaimable(after, "plain") == reclaimable(before, "plain") + sizes[alone]
    assert reclaimable(after, "multi") == reclaimable(before, "multi")


def test_an_unreachable_blob_used_by_one_repository_is_charged_to_it(tmp_path):
    """A manifest revision nothing tags, whose config blob no other manifest uses: the revision and
    the config go to its repository; the same blobs also under a second repository are shared."""
    root = tree.copy_tree(DEMO, tmp_path / "root")
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": len(config), "digest": config_digest,
        },
        "layers": [],
    }).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    for digest, data in ((config_digest, config), (manifest_digest, manifest)):
        path = tree.blob_data(root, digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    before = summary(root)

    revision = tree.revision_link(root, "plain", manifest_digest)
    revision.parent.mkdir(parents=True, exist_ok=True)
    revision.write_text(manifest_digest)
    link_layer(root, "plain", config_digest)
    alone = summary(root)
    both = len(config) + len(manifest)
    assert reclaimable(alone, "plain") == reclaimable(before, "plain") + both
    assert alone["shared_reclaimable_bytes"] == before["shared_reclaimable_bytes"] - both

    revision = tree.revision_link(root, "multi", manifest_digest)
    revision.parent.mkdir(parents=True, exist_ok=True)
    revision.write_text(manifest_digest)
    shared = summary(root)
    assert reclaimable(shared, "plain") == reclaimable(before, "plain")
    assert shared["shared_reclaimable_bytes"] == before["shared_reclaimable_bytes"]


def test_orphans_are_charged_alike_whether_found_by_a_table_of_them_or_by_each_links_place(tmp_path, monkeypatch):
    """A store of few orphans finds them in the links by a table of the orphans; one that is mostly
    orphans by each link's place: the same findings, owners included."""
    from datetime import datetime, timezone

    from fsck import checks, manifests, scan
    from fsck.catalogue import Id
    from fsck.layout import parse_digest
    from fsck.store import Concurrency, LocalStore, PoolKind

    root = tree.copy_tree(DEMO, tmp_path / "root")
    alone, shared, unlinked = tree.add_orphan_blobs(root, 3)
    link_layer(root, "plain", alone)
    link_layer(root, "plain", shared)
    link_layer(root, "multi", shared)
    store = LocalStore(str(tree.v2(root)))
    inventory = scan.scan(store, concurrency=Concurrency(PoolKind.SERIAL, 1, "test"))
    parsed = manifests.read_manifests(store, manifests.named_by_links(inventory), inventory.blobs)

    def orphans(share: int) -> list[tuple]:
        monkeypatch.setattr(checks, "_ORPHAN_TABLE_SHARE", share)
        audit = checks.audit(inventory, parsed, checks.Policy(now=datetime.now(timezone.utc)))
        return [(f.digest, f.owner, f.bytes) for f in audit.findings if f.id is Id.BLOB_ORPHAN]

    by_table, by_place = orphans(0), orphans(10**9)
    assert by_table == by_place
    owners = {digest: owner for digest, owner, _ in by_table}
    assert owners[parse_digest(alone)] == "plain"
    assert owners[parse_digest(shared)] is None and owners[parse_digest(unlinked)] is None
