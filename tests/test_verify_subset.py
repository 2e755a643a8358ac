"""--verify-subset N/M: a stable slice of the blobs (digest modulo M is N-1) re-hashed on a real tree; the
slices together are --verify; bad values are one usage error."""

import hashlib

import orjson
import pytest
from clirun import DEMO, run_cli

from fsck import verify as v
from tests.harness import tree

USAGE = 16


def slice_of(digest: str, parts: int) -> int:
    """The N of the slice a "sha256:..." digest falls in, by the rule itself (not by fsck's code)."""
    return int(digest.split(":")[1], 16) % parts + 1


def mismatches(document: dict) -> set[str]:
    return {f["digest"] for f in document["findings"] if f["id"] == "blob-digest-mismatch"}


def audit_json(root, *args) -> dict:
    result = run_cli("audit", str(root), "--json", *args)
    assert result.returncode in (0, 4), result.stderr
    return orjson.loads(result.stdout)


@pytest.mark.parametrize(("text", "part", "parts"), [("1/1", 1, 1), ("3/7", 3, 7), ("007/9", 7, 9), (" 2/3 ", 2, 3),
                                                    (f"{2**32}/{2**32}", 2**32, 2**32)])
def test_good_values_parse(text, part, parts):
    subset = v.Subset.parse(text)
    assert (subset.part, subset.parts, str(subset)) == (part, parts, f"{part}/{parts}")


@pytest.mark.parametrize("text", ["0/3", "4/3", "1/0", "0/0", "abc", "", "1/", "/3", "-1/3", "1/-3", "1/3/4", "1.0/3",
                                  "½/3", "١/٣", f"1/{2**32 + 1}", "1/" + "9" * 5000])
def test_bad_values_are_refused(text):
    with pytest.raises(ValueError):
        v.Subset.parse(text)


def test_the_slices_partition_the_blobs_by_digest_modulo_m():
    digests = [hashlib.sha256(str(n).encode()).digest() for n in range(3000)]
    blobs = dict.fromkeys(digests, 1)
    slices = [v.in_subset(blobs, v.Subset(n, 5)) for n in range(1, 6)]
    assert sorted(d for s in slices for d in s) == sorted(digests)  # each blob in exactly one slice
    for n, chosen in enumerate(slices, 1):
        assert all(int.from_bytes(d, "big") % 5 == n - 1 for d in chosen)
        assert 500 < len(chosen) < 700  # a fifth, give or take: the digests are uniform
    assert v.in_subset(blobs, None) is blobs
    sha512 = hashlib.sha512(b"x").digest()
    assert sha512 in v.Subset(int.from_bytes(sha512, "big") % 7 + 1, 7)  # over the whole raw digest, any length


@pytest.mark.registry
def test_a_corrupt_blob_is_found_by_its_slice_only_and_the_slices_together_are_verify(demo):
    parts = 3
    layers = sorted({layer for manifest in demo.scenario.manifests.values() for layer in manifest.layers})
    # One corrupt blob in each of two slices, so that each slice's finding is told from the other's.
    first = layers[0]
    second = next(d for d in layers if slice_of(d, parts) != slice_of(first, parts))
    for digest in (first, second):
        data = tree.blob_data(demo.root, digest)
        content = bytearray(data.read_bytes())
        content[len(content) // 2] ^= 0xFF
        data.write_bytes(bytes(content))
    whole = audit_json(demo.root, "--verify")
    assert mismatches(whole) == {first, second}
    assert (whole["verified"], whole["verified_subset"]) == (True, None)
    union = set()
    for n in range(1, parts + 1):
        document = audit_json(demo.root, "--verify-subset", f"{n}/{parts}")
        assert (document["verified"], document["verified_subset"]) == (False, f"{n}/{parts}")
        assert mismatches(document) == {d for d in (first, second) if slice_of(d, parts) == n}
        union |= mismatches(document)
    assert union == mismatches(whole)
    plain = audit_json(demo.root)
    assert (mismatches(plain), plain["verified"], plain["verified_subset"]) == (set(), False, None)


def test_the_text_report_does_not_claim_every_blob_was_re_hashed():
    assert "every blob re-hashed" in run_cli("audit", str(DEMO), "--verify").stdout
    assert "every blob re-hashed" not in run_cli("audit", str(DEMO), "--verify-subset", "1/2").stdout


@pytest.mark.parametrize("value", ["0/3", "4/3", "1/0", "abc", f"1/{2**32 + 1}"])
def test_a_bad_subset_is_a_one_line_usage_error_before_any_work(value, tmp_path):
    result = run_cli("audit", str(tmp_path / "no such tree"), "--verify-subset", value)
    assert result.returncode == USAGE
    errors = [line for line in result.stderr.splitlines() if "Error" in line]
    assert len(errors) == 1 and "--verify-subset" in errors[0] and repr(value) in errors[0], result.stderr
    assert result.stdout == ""
