"""rm's cascade on hand-built inventories: what goes, what stays, in which order (no file system).

Each test is one rule of the cascade: roots before minus roots after, as actions.
"""

import pytest

from fsck import plan, removal
from fsck.removal import Removal, parse_ref, plan_removal, resolve
from tests.harness.inventories import Build


def cascade(b: Build, removal_: Removal, protection: plan.Protection = plan.Protection()) -> removal.RemovalPlan:
    return plan_removal(b.audit(), b.inventory, removal_, protection)


def actions(b: Build, planned: removal.RemovalPlan) -> list[str]:
    return b.actions(planned.plan)


def tags(*pairs: tuple[str, str]) -> Removal:
    return Removal(tags={pair: "rm" for pair in pairs})


def test_one_of_two_tags_sharing_a_digest_goes_alone():
    b = Build()
    v1 = b.image("v1")
    b.repo("app").push(v1).tag("latest", v1).tag("v1", v1)
    planned = cascade(b, tags(("app", "latest")))
    assert actions(b, planned) == ["tag-removed remove app:latest"]
    assert planned.manifests == ()


def test_a_tag_alone_takes_its_manifest_links_and_blobs_in_step_order():
    b = Build()
    v1, v2 = b.image("v1", layers=["base", "v1.app"]), b.image("v2", layers=["base", "v2.app"])
    b.repo("app").push(v1, v2).tag("v1", v1).tag("v2", v2)
    done = actions(b, cascade(b, tags(("app", "v1"))))
    # Tags, then manifests, then links, then blobs: every state in between serves v2 whole.
    assert [line.split()[0] for line in done] == [
        "tag-removed", "manifest-untagged", "layer-link-unused", "layer-link-unused",
        "blob-orphan", "blob-orphan", "blob-orphan",
    ]
    assert set(done) == {
        "tag-removed remove app:v1",
        "manifest-untagged remove app@v1",
        "layer-link-unused remove app/_layers/v1.app",
        "layer-link-unused remove app/_layers/v1.config",
        "blob-orphan remove v1.app",
        "blob-orphan remove v1",
        "blob-orphan remove v1.config",
    }


def test_untag_only_keeps_the_manifest_and_what_it_uses():
    b = Build()
    v1 = b.image("v1")
    b.repo("app").push(v1).tag("v1", v1)
    planned = cascade(b, Removal(tags={("app", "v1"): "rm"}, untag_only=True))
    assert actions(b, planned) == ["tag-removed remove app:v1"]


def test_a_multi_arch_tag_takes_only_the_children_no_other_tag_needs():
    b = Build()
    amd, arm = b.image("amd"), b.image("arm")
    index = b.index("index", [amd, arm])
    b.repo("app").push(index).tag("latest", index).tag("amd64", amd)
    planned = cascade(b, tags(("app", "latest")))
    assert {str(i) for i in planned.manifests} == {f"app@sha256:{d.hex()}" for d in (index, arm)}
    assert "manifest-untagged remove app@amd" not in actions(b, planned)
    assert "blob-orphan remove amd.layer" not in actions(b, planned)
    assert "blob-orphan remove arm.layer" in actions(b, planned)


def test_a_manifest_already_untagged_keeps_what_it_references():
    b = Build()
    old, new = b.image("old", layers=["base"]), b.image("new", layers=["base", "new.app"])
    b.repo("app").push(old, new).tag("v1", new)
    planned = cascade(b, tags(("app", "v1")))
    assert "blob-orphan remove base" not in actions(b, planned)
    assert "layer-link-unused remove app/_layers/base" not in actions(b, planned)
    assert "manifest-untagged remove app@old" not in actions(b, planned)
    assert planned.garbage_before >= 1  # the untagged manifest, counted and left


def test_referrers_and_cosign_tags_go_with_their_subject():
    b = Build()
    image = b.image("image")
    signature = b.image("signature")
    sbom = b.referrer("sbom", image)
    app = b.repo("app").push(image, signature, sbom).tag("v1", image).tag("keep", b.image("other"))
    app.push(b.digest("other"))
    app.tag(f"sha256-{image.hex()}.sig", signature)
    planned = cascade(b, tags(("app", "v1")))
    done = actions(b, planned)
    assert f"tag-removed remove app:sha256-{image.hex()}.sig" in done
    assert {"manifest-untagged remove app@image", "manifest-untagged remove app@signature",
            "manifest-untagged remove app@sbom"} <= set(done)
    assert "blob-orphan remove other" not in done


def test_the_cosign_tag_of_a_manifest_that_stays_stays():
    b = Build()
    image, signature = b.image("image"), b.image("signature")
    b.repo("app").push(image, signature).tag("v1", image).tag("v2", image).tag(f"sha256-{image.hex()}.sig", signature)
    assert actions(b, cascade(b, tags(("app", "v1")))) == ["tag-removed remove app:v1"]


def test_index_entries_of_other_tags_naming_a_removed_manifest_go():
    b = Build()
    old, new = b.image("old"), b.image("new")
    b.repo("app").push(old, new).tag("v1", old).tag("latest", new, history=[old])
    done = actions(b, cascade(b, tags(("app", "v1"))))
    assert set(done[:2]) == {"tag-removed remove app:v1", "tag-index-stale remove app:latest/index/old"}
    assert "manifest-untagged remove app@old" in done


def test_a_removal_that_empties_a_repository_removes_it_whole():
    b = Build()
    v1 = b.image("v1")
    b.repo("app").push(v1).tag("v1", v1)
    planned = cascade(b, tags(("app", "v1")))
    assert actions(b, planned)[0] == "repo-empty remove app/"
    assert [str(i) for i in planned.repositories] == ["app"]


def test_a_whole_repository_keeps_the_blobs_another_repository_uses_and_its_nested_repositories():
    b = Build()
    one, two = b.image("one", layers=["base", "one.app"]), b.image("two", layers=["base"])
    b.repo("one").push(one).tag("latest", one)
    b.repo("one/child").push(two).tag("latest", two)
    planned = cascade(b, Removal(repositories={"one": "rm"}))
    done = actions(b, planned)
    assert "repo-empty remove one/_layers" in done and "repo-empty remove one/_manifests" in done
    assert "repo-empty remove one/" not in done
    assert "blob-orphan remove base" not in done and "blob-orphan remove one.app" in done
    recursive = cascade(b, Removal(repositories={"one": "rm", "one/child": "rm"}))
    assert actions(b, recursive)[0] == "repo-empty remove one/"


def test_a_child_named_while_its_index_stays_is_refused_naming_the_index():
    b = Build()
    amd, arm = b.image("amd"), b.image("arm")
    index = b.index("index", [amd, arm])
    b.repo("app").push(index).tag("latest", index)
    planned = cascade(b, Removal(manifests={("app", amd): "rm"}))
    assert [r.message for r in planned.refused] == [
        f"app@sha256:{amd.hex()}: a child of app@sha256:{index.hex()}, which stays: remove that instead (or with it)"
    ]
    assert planned.plan.actions == ()


def test_a_referrer_named_while_its_subject_stays_is_refused_naming_the_subject():
    b = Build()
    image = b.image("image")
    sbom = b.referrer("sbom", image)
    b.repo("app").push(image, sbom).tag("v1", image)
    planned = cascade(b, Removal(manifests={("app", sbom): "rm"}))
    assert [r.kept_by for r in planned.refused] == [f"a referrer of app@sha256:{image.hex()}"]


def test_a_named_manifest_takes_every_tag_naming_it():
    b = Build()
    v1, v2 = b.image("v1"), b.image("v2")
    b.repo("app").push(v1, v2).tag("a", v1).tag("b", v1).tag("c", v2)
    planned = cascade(b, Removal(manifests={("app", v1): "rm"}))
    assert [str(i) for i in planned.tags] == ["app:a", "app:b"]
    assert "manifest-untagged remove app@v1" in actions(b, planned)


def test_protected_items_are_listed_and_left():
    b = Build()
    v1, v2 = b.image("v1"), b.image("v2")
    b.repo("app").push(v1, v2).tag("v1", v1).tag("v2", v2)
    protection = plan.Protection(tags=frozenset({("app", "v1")}))
    planned = cascade(b, tags(("app", "v1"), ("app", "v2")), protection)
    assert [str(i) for i in planned.protected] == ["app:v1"]
    assert "tag-removed remove app:v1" not in actions(b, planned) and "tag-removed remove app:v2" in actions(b, planned)
    assert planned.left
    by_digest = cascade(b, Removal(manifests={("app", v1): "rm"}), plan.Protection(digests=frozenset({v1})))
    assert [i.kind for i in by_digest.protected] == ["manifest"] and by_digest.plan.actions == ()


def test_a_protected_digest_keeps_the_manifest_while_its_tag_goes():
    b = Build()
    v1 = b.image("v1")
    b.repo("app").push(v1, b.image("x")).tag("v1", v1).tag("other", b.digest("x"))
    planned = cascade(b, tags(("app", "v1")), plan.Protection(digests=frozenset({v1})))
    assert actions(b, planned) == ["tag-removed remove app:v1"]


def test_garbage_that_was_there_is_left_alone_and_counted():
    b = Build()
    v1 = b.image("v1")
    b.blob("lost", size=1234)
    b.repo("app").push(v1, b.image("v2")).tag("v1", v1).tag("v2", b.digest("v2"))
    planned = cascade(b, tags(("app", "v1")))
    assert "blob-orphan remove lost" not in actions(b, planned)
    assert (planned.garbage_before, planned.garbage_before_bytes) == (1, 1234)


def test_on_a_partial_view_only_tags_go():
    b = Build()
    v1, v2 = b.image("v1"), b.image("v2")
    b.repo("app").push(v1, v2).tag("v1", v1).tag("v2", v2)
    b.unreadable_path("repositories/other")
    planned = cascade(b, tags(("app", "v1")))
    assert actions(b, planned) == ["tag-removed remove app:v1"]
    assert {reason for _, reason in b.skipped(planned.plan)} == {
        "part of the tree could not be read or followed (see dir-unreadable and unexpected): what refers to it is unknown"
    }


def test_every_action_carries_the_reason_of_what_freed_it():
    b = Build()
    v1, v2 = b.image("v1"), b.image("v2")
    b.repo("app").push(v1, v2).tag("v1", v1).tag("v2", v2)
    planned = cascade(b, Removal(tags={("app", "v1"): "retain: keep-last 1", ("app", "v2"): "rm"}))
    by_place = {b.where(a.location): a.reason for a in planned.plan.actions}
    assert by_place["app/"] == "retain: keep-last 1"  # the repository, emptied, goes whole
    assert by_place["v1.layer"] == "retain: keep-last 1" and by_place["v2.layer"] == "rm"


# REFs: parsing and what they name.


def names(b: Build, texts: list[str], glob: bool = False, recursive: bool = False):
    wanted, unmatched = resolve([parse_ref(t, glob) for t in texts], b.inventory, recursive=recursive)
    named = sorted([*(f"{r}:{t}" for r, t in wanted.tags), *(f"{r}@{b.name(d)}" for r, d in wanted.manifests),
                    *wanted.repositories])
    return named, unmatched


@pytest.fixture
def tree() -> Build:
    b = Build()
    image = b.image("image")
    for repository in ("test", "testxxx", "test/sub", "team/a", "team/a/b"):
        b.repo(repository).push(image).tag("latest", image).tag("v1.0", image).tag("latest-old", image)
    return b


@pytest.mark.parametrize(("refs", "glob", "recursive", "expected"), [
    (["test"], False, False, ["test"]),  # never testxxx, never test/sub
    (["test"], False, True, ["test", "test/sub"]),
    (["test*"], True, False, ["test", "testxxx"]),
    (["team/**"], True, False, ["team/a", "team/a/b"]),
    (["test:latest"], False, False, ["test:latest"]),  # never latest-old
    (["test:v1.0"], True, False, ["test:v1.0"]),
    (["test*:latest*"], True, False, ["test:latest", "test:latest-old", "testxxx:latest", "testxxx:latest-old"]),
    (["test@image"], False, False, ["test@image"]),
    (["**@image"], True, False, ["team/a/b@image", "team/a@image", "test/sub@image", "test@image", "testxxx@image"]),
])
def test_refs_name_exactly_what_they_say(tree, refs, glob, recursive, expected):
    refs = [r.replace("@image", "@sha256:" + tree.digest("image").hex()) for r in refs]
    assert names(tree, refs, glob, recursive) == (expected, [])


@pytest.mark.parametrize(("ref", "glob", "message"), [
    ("test:v*", False, "'test:v*': 'v*' is not a tag (give --glob for patterns)"),
    ("tes*", False, "'tes*': 'tes*' is not a repository name (give --glob for patterns)"),
    ("Test", False, "'Test': 'Test' is not a repository name"),
    ("test@sha256:abc", False, "'test@sha256:abc': 'sha256:abc' is not a digest (sha256:<64 hex>; digests are never patterns)"),
    ("test@sha256:*", True, "'test@sha256:*': 'sha256:*' is not a digest (sha256:<64 hex>; digests are never patterns)"),
    ("test:", False, "'test:': '' is not a tag"),
    ("te[st", True, "'te[st': 'te[st': unclosed ["),
])
def test_malformed_refs_say_what_is_wrong(ref, glob, message):
    with pytest.raises(removal.RefError) as raised:
        parse_ref(ref, glob)
    assert str(raised.value) == message


@pytest.mark.parametrize(("ref", "glob", "line"), [
    ("nothere", False, "nothere: no repository is named 'nothere'"),
    ("test:v2", False, "test:v2: no tag is named 'v2' in test"),
    ("x*", True, "x*: no repository matches 'x*'"),
])
def test_a_ref_naming_nothing_is_said(tree, ref, glob, line):
    assert names(tree, [ref], glob) == ([], [line])
