"""One digest object per blob, however many links and references name it (memory on large trees)."""

import hashlib
import os

import orjson
import pytest

from fsck import layout, manifests, scan
from fsck.store import Concurrency, LocalStore, PoolKind


def write(v2, relative, data: bytes) -> None:
    path = os.path.join(v2, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


# The three walks: in this thread; on a pool, parts merged as they are; from walker processes, packed.
WALKS = {
    "one thread": Concurrency(PoolKind.SERIAL, 1, "test"),
    "threads": Concurrency(PoolKind.THREADS, 2, "test"),
    "processes": Concurrency(PoolKind.PROCESSES, 2, "test"),
}


@pytest.mark.parametrize("walk", WALKS)
def test_links_and_references_share_the_stored_blobs_digests(tmp_path, monkeypatch, walk):
    monkeypatch.setattr(scan, "_POOL_AFTER_UNITS", 0)  # a pool at once, however small the tree
    v2 = str(tmp_path)
    layer = b"layer"
    layer_digest = hashlib.sha256(layer).digest()
    write(v2, layout.blob_data(layer_digest), layer)
    descriptor = {
        "mediaType": "application/vnd.oci.image.layer.v1.tar", "size": 5, "digest": layout.format_digest(layer_digest)
    }
    raw = orjson.dumps(
        {"schemaVersion": 2, "mediaType": manifests.OCI_MANIFEST, "config": descriptor, "layers": [descriptor]}
    )
    manifest_digest = hashlib.sha256(raw).digest()
    write(v2, layout.blob_data(manifest_digest), raw)
    for repository in ("a", "b"):
        write(v2, layout.layer_link(repository, layer_digest), layout.format_digest(layer_digest).encode())
        write(v2, layout.revision_link(repository, manifest_digest), layout.format_digest(manifest_digest).encode())
        write(v2, layout.tag_current_link(repository, "latest"), layout.format_digest(manifest_digest).encode())
        write(v2, layout.tag_index_link(repository, "latest", manifest_digest), layout.format_digest(manifest_digest).encode())

    # And a link to a blob that is not stored: one object for it too.
    missing = hashlib.sha256(b"not stored").digest()
    for repository in ("a", "b"):
        write(v2, layout.layer_link(repository, missing), layout.format_digest(missing).encode())

    inventory = scan.scan(LocalStore(v2), concurrency=WALKS[walk])
    stored = {digest: digest for digest in inventory.blobs}
    assert missing not in stored
    first, second = (
        next(d for d in inventory.repositories[name].layer_links if d == missing) for name in ("a", "b")
    )
    assert first is second
    for repository in inventory.repositories.values():
        (linked,) = (digest for digest in repository.layer_links if digest != missing)
        (revision,) = repository.revisions
        tag = repository.tags["latest"]
        assert linked is stored[layer_digest]
        assert revision is stored[manifest_digest]
        assert tag.current is stored[manifest_digest]
        assert next(iter(tag.index)) is stored[manifest_digest]
    # A tag name is one str across repositories too, the dict's key and the tag's own.
    (key_a, tag_a), (key_b, tag_b) = (next(iter(inventory.repositories[name].tags.items())) for name in ("a", "b"))
    assert key_a is tag_a.name is key_b is tag_b.name

    parsed = manifests.read_manifests(
        LocalStore(v2), manifests.named_by_links(inventory), inventory.blobs
    )
    references = parsed[manifest_digest].references
    assert [r.digest for r in references] == [layer_digest, layer_digest]
    assert all(r.digest is stored[layer_digest] for r in references)
    assert references[0].media_type is references[1].media_type
