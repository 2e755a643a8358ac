"""The layout module: every path shape, and the digest/link syntax the registry accepts."""

import pickle
import sys
from array import array
from itertools import accumulate

import pytest
from clirun import make_non_registry

from fsck import layout
from fsck.layout import LinkDefect

HEX = "ab" + "0" * 62
D = bytes.fromhex(HEX)
D512 = bytes.fromhex("cd" + "1" * 126)


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda: layout.blob_dir(D), f"blobs/sha256/ab/{HEX}"),
        (lambda: layout.blob_data(D), f"blobs/sha256/ab/{HEX}/data"),
        (lambda: layout.repository_dir("org/team/app"), "repositories/org/team/app"),
        (lambda: layout.layer_link("a/b", D), f"repositories/a/b/_layers/sha256/{HEX}/link"),
        (lambda: layout.layer_link("a", D512), f"repositories/a/_layers/sha512/{D512.hex()}/link"),
        (lambda: layout.revision_link("app", D), f"repositories/app/_manifests/revisions/sha256/{HEX}/link"),
        (lambda: layout.revision_dir("app", D), f"repositories/app/_manifests/revisions/sha256/{HEX}"),
        (lambda: layout.tag_dir("app", "v1.0"), "repositories/app/_manifests/tags/v1.0"),
        (lambda: layout.tag_current_link("app", "latest"), "repositories/app/_manifests/tags/latest/current/link"),
        (
            lambda: layout.tag_index_link("app", "latest", D),
            f"repositories/app/_manifests/tags/latest/index/sha256/{HEX}/link",
        ),
        (
            lambda: layout.upload_dir("app", "0b5c4b8e-1f7e-4a47-9a59-6d2f1c0e8a11"),
            "repositories/app/_uploads/0b5c4b8e-1f7e-4a47-9a59-6d2f1c0e8a11",
        ),
    ],
)
def test_path_specs(build, expected):
    assert build() == expected


def test_blob_digest_from_path_inverts_blob_paths():
    assert layout.blob_digest_from_path(layout.blob_dir(D)) == D
    assert layout.blob_digest_from_path(layout.blob_data(D)) == D
    assert layout.blob_digest_from_path(f"blobs/sha256/zz/{HEX}") is None  # fan-out must match
    assert layout.blob_digest_from_path(f"blobs/sha256/ab/{HEX}/other") is None
    assert layout.blob_digest_from_path("repositories/x") is None


def test_digest_round_trip_and_compactness():
    assert layout.parse_digest(f"sha256:{HEX}") == D
    assert len(D) == 32
    assert layout.format_digest(D) == f"sha256:{HEX}"
    assert layout.format_digest(D512) == f"sha512:{D512.hex()}"


@pytest.mark.parametrize(
    ("raw", "digest", "defect", "recoverable"),
    [
        (f"sha256:{HEX}".encode(), D, None, None),
        (b"", None, LinkDefect.EMPTY, None),
        (f"sha256:{HEX}\n".encode(), None, LinkDefect.TRAILING_WHITESPACE, D),
        (f"sha256:{HEX.upper()}".encode(), None, LinkDefect.UPPERCASE, D),
        (f"sha256:{HEX[:-1]}".encode(), None, LinkDefect.BAD_LENGTH, None),
        (b"sha256:xyz", None, LinkDefect.BAD_FORMAT, None),
        (b"garbage!!\n", None, LinkDefect.BAD_FORMAT, None),
        (b" \n", None, LinkDefect.EMPTY, None),
        (f" sha256:{HEX[:-1]}\n".encode(), None, LinkDefect.BAD_LENGTH, None),
        (f"SHA256:{HEX.upper()}\n".encode(), None, LinkDefect.TRAILING_WHITESPACE, D),
        (b"md5:abc", None, LinkDefect.BAD_FORMAT, None),
        (b"\xff\xfe", None, LinkDefect.BAD_FORMAT, None),
        (b"x" * 300, None, LinkDefect.TOO_LARGE, None),
    ],
)
def test_parse_link_accepts_only_what_the_registry_accepts(raw, digest, defect, recoverable):
    content = layout.parse_link(raw)
    assert (content.digest, content.defect, content.recoverable) == (digest, defect, recoverable)


def test_alias_is_only_a_canonical_digest_under_another_algorithm():
    assert layout.is_alias(D512, D)
    assert not layout.is_alias(D, D512)
    assert not layout.is_alias(D, D)


def test_find_v2_accepts_root_or_v2(tmp_path):
    v2 = tmp_path / "docker" / "registry" / "v2"
    (v2 / "repositories").mkdir(parents=True)
    assert layout.find_v2(str(tmp_path)) == str(v2)
    assert layout.find_v2(str(v2)) == str(v2)
    assert layout.rootdirectory_of(str(v2)) == str(tmp_path)


@pytest.mark.parametrize("kind", ["missing", "file", "empty-dir", "dangling-symlink"])
def test_find_v2_rejects_what_is_no_registry(tmp_path, kind):
    target = make_non_registry(tmp_path, kind)
    with pytest.raises(layout.NotARegistry) as raised:
        layout.find_v2(str(target))
    assert "\n" not in str(raised.value)


def test_names():
    assert layout.valid_repository_component("my-app.v2")
    assert not layout.valid_repository_component("My")
    assert layout.valid_tag("v1.2_rc-3")
    assert not layout.valid_tag(".hidden")
    assert layout.valid_upload_id("0b5c4b8e-1f7e-4a47-9a59-6d2f1c0e8a11")
    assert not layout.valid_upload_id("tmp")


@pytest.mark.parametrize(
    ("path", "structural"),
    [
        ("blobs", True), ("blobs/sha256", True), ("blobs/sha256/ab", False), ("repositories", True),
        ("repositories/a", False), ("repositories/a/_layers", True), ("repositories/a/_layers/sha256", False),
        ("repositories/a/_manifests", True), ("repositories/a/_manifests/revisions", True),
        ("repositories/a/_manifests/tags", True), ("repositories/a/_manifests/tags/v1", False),
        ("repositories/tags", False), ("repositories/a/_uploads", True),
    ],
)
def test_structural_directories_stay(path, structural):
    assert layout.is_structural(path) is structural


@pytest.mark.parametrize(
    ("path", "places", "inside"),
    [
        ("repositories/a/b", {"repositories/a"}, True), ("repositories/a", {"repositories/a"}, True),
        ("repositories/ab", {"repositories/a"}, False), ("repositories", {"repositories/a"}, False),
        ("blobs/sha256/ab/x/data", {"blobs"}, True), ("blobs", set(), False),
    ],
)
def test_at_or_under_is_by_whole_path_components(path, places, inside):
    assert layout.at_or_under(path, frozenset(places)) is inside


def test_blob_data_in_its_algorithm_directory_is_the_tail_of_its_path():
    digest = bytes.fromhex("ab" * 32)
    assert layout.blob_data(digest) == "blobs/sha256/" + layout.blob_data_in_algorithm_dir(digest)


def test_digests_answer_as_the_set_of_their_digests_would():
    a, b, c, z = (bytes([n]) * 32 for n in (1, 2, 3, 26))
    held = layout.Digests([c, a, b, a])
    as_set = {a, b, c}
    assert len(held) == 3 and list(held) == [a, b, c]
    assert a in held and z not in held and "not a digest" not in held and a[:31] not in held
    assert held == as_set and frozenset(as_set) == held and held <= {a, b, c, z}
    assert hash(held) == hash(frozenset(as_set))
    assert held - {a} == {b, c} and {a, z} - held == {z}
    assert held & {a, z} == {a} and {a, z} & held == {a} and held & {a, b, c, z} == as_set
    assert held | {z} == {a, b, c, z} and {z} | held == {a, b, c, z}
    assert type(held - {a}) is set and type(held & [a]) is set
    assert not layout.Digests() and layout.Digests() == set()
    # It is a tuple underneath (one object, not a wrapper and its tuple), but compares only as a set.
    assert held != (a, b, c) and (a, b, c) != held and not held == [a, b, c]
    assert held != {a, b} and held == layout.Digests([b, c, a]) and not held < as_set and held < {a, b, c, z}
    assert {held: 1}[layout.Digests(as_set)] == 1
    assert pickle.loads(pickle.dumps(held)) == held and type(pickle.loads(pickle.dumps(held))) is layout.Digests
    assert sys.getsizeof(held) == sys.getsizeof((a, b, c))


def test_stored_blobs_find_each_stored_digest_as_the_stored_object_and_its_size():
    edges = [bytes(32), b"\xff" * 32, b"\x00\x01" + bytes(30), b"\x01" * 64, b"\x01" * 32]
    digests = [*edges, *(bytes([n, 255 - n]) * 16 for n in range(256))]
    sizes = {digest: 1000 + n for n, digest in enumerate(digests)}
    table = layout.StoredBlobs(sizes)
    assert len(table) == len(digests) and table.digests == sorted(digests) and list(table) == sorted(digests)
    assert table == sizes and dict(table.items()) == sizes and sorted(table.values()) == sorted(sizes.values())
    for digest in digests:
        asked = bytes(bytearray(digest))  # equal, another object
        assert table.stored(asked) is digest and table.digests[table.position(asked)] is digest
        assert asked in table and table[asked] == sizes[digest] and table.get(asked) == sizes[digest]
    for absent in (b"\x01" * 48, b"\xff" * 31, b"\x01", b"", b"\x00\x01" + b"\xff" * 30, None, "sha256:00"):
        assert table.position(absent) == -1 and table.stored(absent) is None
        assert absent not in table and table.get(absent) is None and table.get(absent, 0) == 0
    with pytest.raises(KeyError):
        table[b"\x01" * 48]
    others: dict = {}
    absent = b"\x02" * 32
    shared = table.shared([bytes(bytearray(edges[1])), absent, bytes(bytearray(absent)), b"\x07"], others)
    assert shared[0] is edges[1] and shared[1] is absent and shared[2] is absent and shared[3] == b"\x07"
    assert others == {absent: absent, b"\x07": b"\x07"}
    marks = bytearray(len(table))
    table.mark([b"\x07", b"", absent, bytes(bytearray(edges[1])), edges[1]], marks)
    assert [at for at, mark in enumerate(marks) if mark] == [table.position(edges[1])] and marks.count(1) == 1
    assert layout.StoredBlobs({}).position(bytes(32)) == -1 and not layout.StoredBlobs({})


def test_stored_sizes_take_four_bytes_a_blob_until_one_is_4_gib_or_more():
    small = layout.StoredBlobs({bytes([n]) * 32: n * 1000 for n in range(10)})
    assert small.sizes.itemsize == 4 and dict(small.items()) == {bytes([n]) * 32: n * 1000 for n in range(10)}
    large = {bytes([1]) * 32: 2**32 - 1, bytes([2]) * 32: 2**32, bytes([3]) * 32: 2**62}
    table = layout.StoredBlobs(large)
    assert table.sizes.itemsize == 8 and dict(table.items()) == large and table[bytes([3]) * 32] == 2**62
    assert layout.StoredBlobs({bytes([1]) * 32: 2**32 - 1}).sizes.itemsize == 4


def test_stored_blobs_of_runs_take_runs_in_order_join_others_and_merge_interleaved_lengths():
    def run_of(*digests):
        return sorted(digests)

    a = run_of(bytes([1]) * 32, bytes([1, 2]) + bytes(30))
    b = run_of(bytes([2]) * 32)
    c = run_of(bytes([3]) * 32, bytes([3, 9]) * 16)
    wide = run_of(bytes([1]) * 64, bytes([3]) * 64)  # sha512 keys among sha256 ones
    for runs in ([a, b, c], [c, a, b], [b, [], c, a], [a, wide, c, b]):
        digests = [d for run in runs for d in run]
        starts = array("I", accumulate((len(run) for run in runs[:-1]), initial=0))
        sizes = array("q", (n * 10 for n in range(len(digests))))
        expected = dict(zip(digests, sizes, strict=True))
        table = layout.StoredBlobs.of_runs(list(digests), sizes, starts)
        assert table.digests == sorted(digests) and dict(table.items()) == expected
        assert all(table.stored(bytes(bytearray(d))) is d for d in digests) and table == layout.StoredBlobs(expected)
