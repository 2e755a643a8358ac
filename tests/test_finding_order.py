"""What an audit reports does not depend on the order its walk finds repositories in (directory order
differs between file systems, and a bucket's listing between stores)."""

import hashlib
from datetime import datetime, timezone

import orjson

from fsck import checks, layout, manifests, scan
from fsck.store import MemoryStore

IMAGE_CONFIG = "application/vnd.docker.container.image.v1+json"
LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def _link(digest: bytes) -> bytes:
    return layout.format_digest(digest).encode()


def one_image_tagged_in(repositories: list[str]) -> MemoryStore:
    """A store whose repositories are listed in the order given, all tagging one image whose manifest
    says its layer is a byte longer than the layer stored: damage to a blob they share."""
    store = MemoryStore(root="memory:v2")
    config, layer = b"{}", b"layer bytes"
    config_digest, layer_digest = hashlib.sha256(config).digest(), hashlib.sha256(layer).digest()
    raw = orjson.dumps({
        "schemaVersion": 2, "mediaType": manifests.DOCKER_SCHEMA2,
        "config": {"mediaType": IMAGE_CONFIG, "digest": layout.format_digest(config_digest), "size": len(config)},
        "layers": [{"mediaType": LAYER, "digest": layout.format_digest(layer_digest), "size": len(layer) + 1}],
    })
    manifest_digest = hashlib.sha256(raw).digest()
    for digest, content in ((config_digest, config), (layer_digest, layer), (manifest_digest, raw)):
        store.put(layout.blob_data(digest), content)
    for name in repositories:
        for digest in (config_digest, layer_digest):
            store.put(layout.layer_link(name, digest), _link(digest))
        store.put(layout.revision_link(name, manifest_digest), _link(manifest_digest))
        store.put(layout.tag_current_link(name, "latest"), _link(manifest_digest))
        store.put(layout.tag_index_link(name, "latest", manifest_digest), _link(manifest_digest))
    return store


def findings(store: MemoryStore) -> list[tuple]:
    inventory = scan.scan(store)
    parsed = manifests.read_manifests(store, manifests.named_by_links(inventory), inventory.blobs)
    audit = checks.audit(inventory, parsed, checks.Policy(now=datetime(2026, 1, 1, tzinfo=timezone.utc)))
    return [(f.id.value, f.repository, f.path, f.message) for f in audit.findings]


def test_damage_to_a_shared_blob_is_told_by_the_first_repository_by_name_whatever_the_walk_found_first():
    names = ["zeta/app", "alpha/app", "mid/app"]
    expected = findings(one_image_tagged_in(sorted(names)))
    assert [(id_, repository) for id_, repository, _, _ in expected] == [("blob-size-mismatch", "alpha/app")]
    assert "12; tags using it: alpha/app:latest, mid/app:latest, zeta/app:latest" in expected[0][3]
    for order in (names, list(reversed(names)), ["mid/app", "zeta/app", "alpha/app"]):
        assert findings(one_image_tagged_in(order)) == expected
