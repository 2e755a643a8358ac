"""Manifest parsing: every media type to its references; anything else to a reason."""

import orjson
import pytest

from fsck import manifests as m
from fsck.layout import format_digest

A, B, C, S = (bytes([n]) * 32 for n in (1, 2, 3, 4))


def desc(digest, media_type="application/octet-stream", size=10, **extra):
    return {"mediaType": media_type, "digest": format_digest(digest), "size": size, **extra}


def parse(document):
    return m.parse_manifest(orjson.dumps(document))


@pytest.mark.parametrize("media_type", [m.DOCKER_SCHEMA2, m.OCI_MANIFEST, None])
def test_image_manifest_references_config_and_layers(media_type):
    document = {"schemaVersion": 2, "config": desc(A), "layers": [desc(B), desc(C, urls=["https://x"])]}
    if media_type:
        document["mediaType"] = media_type
    parsed = parse(document)
    assert parsed.kind is m.Kind.IMAGE
    assert [(r.digest, r.role, r.foreign) for r in parsed.references] == [
        (A, m.Role.CONFIG, False), (B, m.Role.LAYER, False), (C, m.Role.LAYER, True)
    ]


@pytest.mark.parametrize("media_type", [m.DOCKER_LIST, m.OCI_INDEX, None])
def test_index_references_children(media_type):
    document = {"schemaVersion": 2, "manifests": [desc(A, m.OCI_MANIFEST), desc(B)]}
    if media_type:
        document["mediaType"] = media_type
    parsed = parse(document)
    assert parsed.kind is m.Kind.INDEX
    assert [c.digest for c in parsed.children()] == [A, B]
    assert [c.names_manifest for c in parsed.children()] == [True, False]
    assert parsed.blob_references() == ()


def test_referrer_subject_is_not_a_reference():
    document = {
        "schemaVersion": 2, "mediaType": m.OCI_MANIFEST, "artifactType": "application/vnd.example.sig",
        "config": desc(A), "layers": [desc(B)], "subject": desc(S, m.OCI_MANIFEST),
    }
    parsed = parse(document)
    assert parsed.subject == S
    assert S not in {r.digest for r in parsed.references}


@pytest.mark.parametrize("signed", [False, True])
def test_schema1_fs_layers(signed):
    document = {"schemaVersion": 1, "name": "x", "tag": "t", "fsLayers": [{"blobSum": format_digest(A)}] * 2}
    if signed:
        document["signatures"] = [{"header": {}, "signature": "x", "protected": "y"}]
    parsed = parse(document)
    assert parsed.kind is m.Kind.SCHEMA1
    assert [r.digest for r in parsed.references] == [A, A]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b'{"schemaVersion": 2, "config": {', "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"schemaVersion": 2}', "no mediaType and no known schema"),
        (b'{"mediaType": "text/plain"}', "unknown media type"),
        (b'{"mediaType": "application/vnd.oci.image.manifest.v1+json"}', "without a config"),
        (b'{"schemaVersion": 2, "config": {"digest": "sha256:SHORT"}}', "invalid digest"),
        (b'{"schemaVersion": 1, "fsLayers": [{}]}', "without a blobSum"),
        (b'{"manifests": 3}', "not a list"),
        (b" " * (4 * 1024 * 1024 + 1), "larger than"),
    ],
)
def test_invalid_manifests_say_why(raw, reason):
    parsed = m.parse_manifest(raw)
    assert isinstance(parsed, m.InvalidManifest)
    assert reason in parsed.reason


def test_read_manifests_reads_only_stored_digests(tmp_path):
    from fsck import layout
    from fsck.store import LocalStore

    data = orjson.dumps({"schemaVersion": 2, "config": desc(B), "layers": []})
    path = tmp_path / layout.blob_data(A)
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    parsed = m.read_manifests(LocalStore(str(tmp_path)), [A, C], {A: len(data)})
    assert set(parsed) == {A}
    assert parsed[A].references[0].digest == B


@pytest.mark.parametrize("size", [0, 10, -1, 2**63 - 1, -(2**63), 2**63, 2**64 - 1, None, True, "10"])
def test_packed_references_give_back_each_descriptor_as_written(size):
    """The packed form holds what a reference says, whatever the size: one beyond 64 bits (orjson reads up to
    2**64 - 1) makes the manifest keep Reference objects instead, and answers the same."""
    entry = {"digest": format_digest(B), "mediaType": "application/x-odd", "urls": ["https://x"]}
    if size is not None:
        entry["size"] = size
    parsed = parse({"schemaVersion": 2, "mediaType": m.OCI_MANIFEST, "config": desc(A, size=7), "layers": [entry]})
    kept = size if isinstance(size, int) and not isinstance(size, bool) else None
    expected = [(A, m.Role.CONFIG, 7, "application/octet-stream", False), (B, m.Role.LAYER, kept, "application/x-odd", True)]
    assert list(parsed.descriptors()) == expected
    assert [(r.digest, r.role, r.size, r.media_type, r.foreign) for r in parsed.references] == expected
    assert parsed.digests == (A, B) and parsed.child_digests() == []
    assert (parsed.unpackable is None) == (kept is None or -(2**63) <= kept < 2**63)


def test_packed_children_are_read_from_their_roles():
    document = {"schemaVersion": 2, "mediaType": m.OCI_INDEX, "manifests": [desc(A, m.OCI_MANIFEST), desc(B, size=3)]}
    parsed = parse(document)
    assert parsed.child_digests() == [A, B] and [c.digest for c in parsed.children()] == [A, B]
    assert [c.size for c in parsed.children()] == [10, 3] and parsed.blob_references() == ()


def test_a_media_type_past_the_tables_bound_keeps_reference_objects(monkeypatch):
    table = m._MediaTypes()
    table.names.extend(f"x/{n}" for n in range(0xFFFF))
    table.numbers.update((name, n + 1) for n, name in enumerate(table.names))
    monkeypatch.setattr(m, "_MEDIA_TYPES", table)
    known = parse({"schemaVersion": 2, "config": desc(A, "x/7"), "layers": []})
    assert known.unpackable is None and known.references[0].media_type == "x/7"
    new = parse({"schemaVersion": 2, "config": desc(A, "x/new"), "layers": [desc(B, "x/8")]})
    assert new.unpackable is not None and new.packed == b""
    assert [(r.digest, r.media_type) for r in new.references] == [(A, "x/new"), (B, "x/8")]
    assert list(new.descriptors())[1] == (B, m.Role.LAYER, 10, "x/8", False)


def test_a_manifest_is_one_tuple_equal_and_pickled_as_its_fields():
    """One object a manifest (its head shared by those of the same kind and media type without a subject),
    equal to another when every field is, rebuilt whole by pickle and copy, its digests a plain tuple."""
    import copy
    import pickle
    import sys

    document = {"schemaVersion": 2, "mediaType": m.OCI_MANIFEST, "config": desc(A), "layers": [desc(B), desc(C)]}
    one, two = parse(document), parse(document)
    assert one == two and hash(one) == hash(two) and one is not two
    assert one[0] is two[0]  # the shared head
    assert type(one.digests) is tuple and one.digests == (A, B, C)
    assert sys.getsizeof(one) == sys.getsizeof((None,) * 5)  # head, packed, three digests: no record beside
    for rebuilt in (pickle.loads(pickle.dumps(one)), copy.copy(one), copy.deepcopy(one)):
        assert type(rebuilt) is m.Manifest and rebuilt == one
        assert (rebuilt.kind, rebuilt.media_type, rebuilt.subject, rebuilt.digests) == (
            m.Kind.IMAGE, m.OCI_MANIFEST, None, (A, B, C)
        )
        assert list(rebuilt.descriptors()) == list(one.descriptors())
    assert one != parse({**document, "layers": [desc(B, size=11), desc(C)]})  # another size
    assert one != parse({**document, "mediaType": m.DOCKER_SCHEMA2})
    referrer = parse({**document, "subject": desc(S, m.OCI_MANIFEST)})
    assert referrer != one and referrer.subject == S and referrer.digests == one.digests
    assert "digests=" in repr(one) and "Manifest(" in repr(one)
