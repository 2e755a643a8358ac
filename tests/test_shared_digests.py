"""One digest object per blob, however many links and references name it (memory on large trees)."""

import hashlib
import os

import orjson

from fsck import layout, manifests, scan
from fsck.store import LocalStore


def write(v2, relative, data: bytes) -> None:
    path = os.path.join(v2, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


def test_links_and_references_share_the_stored_blobs_digests(tmp_path):
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

    inventory = scan.scan(LocalStore(v2))
    stored = {digest: digest for digest in inventory.blobs}
    for repository in inventory.repositories.values():
        (linked,) = repository.layer_links
        (revision,) = repository.revisions
        tag = repository.tags["latest"]
        assert linked is stored[layer_digest]
        assert revision is stored[manifest_digest]
        assert tag.current is stored[manifest_digest]
        assert next(iter(tag.index)) is stored[manifest_digest]

    parsed = manifests.read_manifests(LocalStore(v2), manifests.named_by_links(inventory), inventory.blobs)
    references = parsed[manifest_digest].references
    assert [r.digest for r in references] == [layer_digest, layer_digest]
    assert all(r.digest is stored[layer_digest] for r in references)
    assert references[0].media_type is references[1].media_type
