"""Liveness on hand-built inventories: `reach` (roots to what they keep) and the verdicts `checks.audit`
draws from it. One rule per test; no file system, milliseconds each."""

from __future__ import annotations

from fsck import checks, layout, reach
from fsck.catalogue import Id
from fsck.layout import LinkContent, LinkDefect
from fsck.reach import Roots
from fsck.scan import LinkKind, Oddity
from tests.harness.inventories import DOCKER_LIST, Build, digest


def names(b: Build, digests) -> set[str]:
    return {b.name(d) for d in digests}


def tag_reach(b: Build) -> reach.Reach:
    return reach.reach(reach.build_graph(b.inventory, b.manifests), reach.tag_roots(b.inventory))


def graph(b: Build) -> reach.Graph:
    return reach.build_graph(b.inventory, b.manifests)


# reach: the roots and what they keep


def test_tag_roots_keep_the_tagged_image_and_its_config_and_layers():
    b = Build()
    v1 = b.image("v1", layers=["base", "v1.app"])
    b.repo("app").push(v1).tag("latest", v1)
    b.blob("stray")

    r = tag_reach(b)

    assert names(b, reach.tag_roots(b.inventory).manifests["app"]) == {"v1"}
    assert names(b, r.live["app"]) == {"v1"}
    assert names(b, r.blobs) == {"v1", "v1.config", "base", "v1.app"}


def test_a_broken_tag_keeps_every_manifest_of_its_index():
    b = Build()
    old, new, other = b.image("old"), b.image("new"), b.image("other")
    b.repo("app").push(old, new, other).tag("latest", None, history=[old, new])

    r = tag_reach(b)

    assert names(b, r.live["app"]) == {"old", "new"}
    assert "other" not in names(b, r.blobs)


def test_index_children_are_kept_recursively_where_the_repository_holds_them():
    b = Build()
    amd64, arm64, s390x = b.image("amd64"), b.image("arm64"), b.image("s390x")
    inner = b.index("inner", [arm64, s390x], media_type=DOCKER_LIST)
    top = b.index("top", [amd64, inner])
    # The repository holds every manifest but s390x (pushed elsewhere only).
    b.repo("app").push(top, amd64, inner, arm64, children=False).tag("multi", top)
    b.repo("other").push(s390x)

    r = tag_reach(b)

    assert names(b, r.live["app"]) == {"top", "amd64", "inner", "arm64"}
    # s390x is named as a child, so its digest is kept; what it references is not (app does not hold it).
    assert names(b, r.blobs) == {
        "top", "amd64", "amd64.config", "amd64.layer", "inner", "arm64", "arm64.config", "arm64.layer", "s390x",
    }


def test_referrers_of_a_live_subject_are_kept_and_referrers_of_referrers():
    b = Build()
    v1, old = b.image("v1"), b.image("old")
    signature = b.referrer("v1.sig", subject=v1)
    attestation = b.referrer("v1.sig.att", subject=signature)
    old_signature = b.referrer("old.sig", subject=old)
    b.repo("app").push(v1, old, signature, attestation, old_signature).tag("latest", v1)

    r = tag_reach(b)

    assert names(b, r.live["app"]) == {"v1", "v1.sig", "v1.sig.att"}
    assert {"v1.sig.payload", "v1.sig.att.payload"} <= names(b, r.blobs)
    assert not names(b, r.blobs) & {"old", "old.sig", "old.sig.payload"}


def test_referrers_are_kept_only_in_the_repository_holding_them():
    b = Build()
    v1 = b.image("v1")
    signature = b.referrer("v1.sig", subject=v1)
    b.repo("app").push(v1).tag("latest", v1)
    b.repo("mirror").push(v1, signature)  # the signature lives beside an untagged copy

    r = tag_reach(b)

    assert names(b, r.live["app"]) == {"v1"}
    assert names(b, r.live["mirror"]) == set()


def test_an_untagged_manifest_is_not_reached():
    b = Build()
    old, new = b.image("old", layers=["base", "old.app"]), b.image("new", layers=["base", "new.app"])
    b.repo("app").push(old, new).tag("latest", new, history=[old])

    r = tag_reach(b)

    assert not r.keeps_manifest("app", old)
    assert r.keeps_manifest("app", new)
    assert names(b, r.blobs) == {"new", "new.config", "base", "new.app"}


def test_revision_roots_keep_untagged_manifests_of_the_repositories_named():
    b = Build()
    old, new, lost = b.image("old"), b.image("new"), b.image("lost")
    b.repo("app").push(old, new).tag("latest", new)
    b.repo("attic").push(lost)
    g = graph(b)

    everything = reach.reach(g, reach.revision_roots(b.inventory))
    only_attic = reach.reach(g, reach.revision_roots(b.inventory, ["attic"]))

    assert names(b, everything.live["app"]) == {"old", "new"}
    assert names(b, everything.live["attic"]) == {"lost"}
    assert set(only_attic.live) == {"attic"}
    assert names(b, only_attic.blobs) == {"lost", "lost.config", "lost.layer"}


def test_damaged_link_roots_keep_what_bad_links_may_name():
    b = Build()
    meant, layer, alias = b.image("meant"), b.blob("layer"), b.blob("alias")
    app = b.repo("app")
    # A revision link with a trailing newline may name its path's digest and what it holds.
    app.bad_link(LinkKind.REVISION, meant, LinkContent(None, LinkDefect.TRAILING_WHITESPACE, meant))
    # A _layers link holding another digest than its path: both are blobs, neither a manifest.
    app.bad_link(LinkKind.LAYER, layer, LinkContent(digest("elsewhere"), None))
    b.names[digest("elsewhere")] = "elsewhere"
    app.alias(alias)

    roots = reach.damaged_link_roots(b.inventory)
    r = reach.reach(graph(b), roots)

    assert names(b, roots.manifests["app"]) == {"meant"}
    assert names(b, roots.blobs["app"]) == {"meant", "layer", "elsewhere", "alias"}
    assert names(b, r.live["app"]) == {"meant"}
    assert names(b, r.blobs) == {"meant", "meant.config", "meant.layer", "layer", "elsewhere", "alias"}


def test_damaged_link_roots_are_empty_without_bad_links_or_aliases():
    b = Build()
    v1 = b.image("v1")
    b.repo("app").push(v1).tag("latest", v1)

    roots = reach.damaged_link_roots(b.inventory)

    assert roots == Roots({}, {})


def test_roots_plus_unites_per_repository():
    a, b_, c = digest("a"), digest("b"), digest("c")
    left = Roots({"app": {a}, "only-left": {a}}, {"app": {a}}, frozenset({a}))
    right = Roots({"app": {b_}, "only-right": {c}}, {"other": {c}}, frozenset({c}))

    both = left.plus(right)

    assert both.manifests == {"app": {a, b_}, "only-left": {a}, "only-right": {c}}
    assert both.blobs == {"app": {a}, "other": {c}}
    assert both.anywhere == {a, c}
    assert left.manifests == {"app": {a}, "only-left": {a}}  # the operands are not changed


def test_reach_holds_blobs_as_they_are_without_following_them():
    b = Build()
    v1 = b.image("v1")
    b.repo("app").push(v1)

    r = reach.reach(graph(b), Roots(blobs={"app": {v1}}, anywhere=frozenset({digest("v1.layer")})))

    assert r.live == {}
    assert names(b, r.blobs) == {"v1", "v1.layer"}  # v1 held as a blob: its config is not kept


def test_kept_marks_are_the_kept_blobs_that_are_stored_by_their_place_among_the_stored():
    b = Build()
    v1 = b.image("v1", layers=["base", "v1.app"])
    v2 = b.image("v2", layers=["base", "v2.app"])
    b.repo("a").push(v1).tag("latest", v1).push(v2)  # v2 untagged: not kept
    b.repo("c").push(v1)
    b.blob("loose")
    b.blob("held")
    g = graph(b)
    r = reach.reach(g, Roots(manifests={"a": {v1}}, blobs={"c": {digest("held")}}, anywhere=frozenset({digest("gone")})))

    marks = r.kept_marks()

    assert len(marks) == len(g.blobs) and set(marks) <= {0, 1}
    kept = {d for d, mark in zip(g.blobs.digests, marks, strict=True) if mark}
    assert kept == r.kept_blobs() & set(g.blobs)
    assert names(b, kept) == {"v1", "v1.config", "base", "v1.app", "held"}


def test_reach_referenced_is_per_repository():
    b = Build()
    v1 = b.image("v1", layers=["base", "v1.app"])
    v2 = b.image("v2", layers=["base", "v2.app"])
    b.repo("a").push(v1).tag("latest", v1)
    b.repo("b").push(v2).tag("latest", v2)

    r = tag_reach(b)

    assert names(b, r.referenced("a")) == {"v1.config", "base", "v1.app"}
    assert names(b, r.referenced("b")) == {"v2.config", "base", "v2.app"}
    assert r.referenced("no-such-repository") == set()


def test_reach_users_names_the_repositories_whose_live_manifests_are_or_reference_each_blob():
    b = Build()
    v1 = b.image("v1", layers=["base", "v1.app"])
    v2 = b.image("v2", layers=["base"])
    b.repo("a").push(v1).tag("latest", v1)
    b.repo("b").push(v1, v2).tag("latest", v2)  # v1 untagged in b

    users = {b.name(d): repos for d, repos in tag_reach(b).users().items()}

    assert users == {
        "v1": ("a",), "v1.config": ("a",), "v1.app": ("a",),
        "v2": ("b",), "v2.config": ("b",),
        "base": ("a", "b"),
    }


def test_a_repository_not_fully_read_keeps_all_its_revisions():
    b = Build()
    old, new = b.image("old"), b.image("new")
    b.repo("app").push(old, new).tag("latest", new).partly_read()
    b.repo("whole").push(old)

    r = tag_reach(b)

    assert names(b, r.live["app"]) == {"old", "new"}
    assert names(b, r.live["whole"]) == set()


def test_nested_repositories_are_independent():
    b = Build()
    parent, child, shared = b.image("parent"), b.image("child"), b.image("shared")
    b.repo("a/b").push(parent, shared).tag("latest", parent)
    b.repo("a/b/c").push(child, shared).tag("latest", child)

    r = tag_reach(b)

    assert names(b, r.live["a/b"]) == {"parent"}
    assert names(b, r.live["a/b/c"]) == {"child"}
    assert not r.keeps_manifest("a/b", shared) and not r.keeps_manifest("a/b/c", shared)


def test_tags_using_names_tags_whose_image_or_index_children_use_a_digest():
    b = Build()
    amd64 = b.image("amd64", layers=["base", "amd64.app"])
    arm64 = b.image("arm64", layers=["arm64.app"])
    multi = b.index("multi", [amd64, arm64])
    solo = b.image("solo", layers=["base"])
    other = b.image("other")
    app = b.repo("app").push(multi, solo, other)
    app.tag("multi", multi).tag("solo", solo).tag("other", other).tag("broken", None, history=[solo])
    g = graph(b)

    assert reach.tags_using(g, b.inventory, {digest("base")}) == ["app:multi", "app:solo"]
    assert reach.tags_using(g, b.inventory, {digest("arm64.app")}) == ["app:multi"]
    assert reach.tags_using(g, b.inventory, {arm64}) == ["app:multi"]  # a child manifest itself
    assert reach.tags_using(g, b.inventory, {digest("nothing")}) == []


def test_gc_marks_every_stored_revision_and_its_references_but_not_subjects():
    b = Build()
    v1 = b.image("v1")
    signature = b.referrer("sig", subject=b.image("signed-elsewhere"))
    lost = b.image("lost", stored=False)  # a revision whose data is gone marks nothing
    unlinked = b.image("unlinked")  # stored, but no repository's revision names it
    b.repo("app").push(v1, signature, lost)

    marks = reach.graph_and_marks(b.inventory, b.manifests)[1]

    assert names(b, marks.marked) == {"v1", "v1.config", "v1.layer", "sig", "sig.config", "sig.payload"}
    assert names(b, marks.referenced) == {"v1.config", "v1.layer", "sig.config", "sig.payload"}
    assert unlinked not in marks.marked


# checks.audit: the verdicts drawn from what the roots keep


def test_manifest_untagged_and_what_only_it_references():
    b = Build()
    old = b.image("old", layers=["base", "old.app"])
    new = b.image("new", layers=["base", "new.app"])
    b.repo("app").push(old, new).tag("latest", new, history=[old])

    audit = b.audit()

    assert b.findings(audit) == {
        "tag-index-stale app:latest/index/old",
        "manifest-untagged app@old",
        "blob-unreachable old",
        "blob-unreachable old.config",
        "blob-unreachable old.app",
        "layer-link-unused app/_layers/old.config",
        "layer-link-unused app/_layers/old.app",
    }
    untagged = next(f for f in audit.findings if f.id is Id.MANIFEST_UNTAGGED)
    assert (untagged.message, untagged.bytes) == ("no tag, live index or live subject reaches this manifest", 0)
    assert {f.bytes for f in audit.findings if f.id is Id.BLOB_UNREACHABLE} == {500, 100, 1000}
    assert audit.complete and audit.uncertain == ()


def test_blob_orphan_is_what_no_stored_revision_marks_and_blob_unreachable_what_only_unlive_ones_do():
    b = Build()
    b.blob("stray")
    b.image("unlinked")  # manifest data no revision link names: it marks nothing, as in the GC
    untagged = b.image("untagged")
    b.repo("app").push(untagged, layers=False)

    audit = b.audit()

    assert b.findings(audit, Id.BLOB_ORPHAN, Id.BLOB_UNREACHABLE) == {
        "blob-orphan stray",
        "blob-orphan unlinked", "blob-orphan unlinked.config", "blob-orphan unlinked.layer",
        "blob-unreachable untagged", "blob-unreachable untagged.config", "blob-unreachable untagged.layer",
    }


def test_a_blob_kept_by_a_tag_of_another_repository_has_no_verdict():
    b = Build()
    shared = b.image("shared")
    b.repo("app").push(shared)  # untagged here
    b.repo("lib").push(shared).tag("v1", shared)

    audit = b.audit()

    assert b.findings(audit) == {
        "manifest-untagged app@shared",
        "layer-link-unused app/_layers/shared.config",
        "layer-link-unused app/_layers/shared.layer",
    }


def test_layer_link_unused_and_layer_link_dangling():
    b = Build()
    v1 = b.image("v1")
    unused, gone = b.blob("unused"), b.blob("gone", stored=False)
    b.repo("app").push(v1).tag("latest", v1).link(unused, gone)

    audit = b.audit()

    assert b.findings(audit) == {
        "layer-link-unused app/_layers/unused",
        "layer-link-dangling app/_layers/gone",
        "blob-orphan unused",
    }
    messages = {f.id: f.message for f in audit.findings}
    assert messages[Id.LAYER_LINK_UNUSED] == "no live manifest of this repository references this blob"
    assert messages[Id.LAYER_LINK_DANGLING] == "links a blob that is not stored"


def test_manifest_missing_ref_for_a_live_manifests_missing_config_layer_or_child():
    b = Build()
    broken = b.image("broken", layers=["present", "lost.layer"], missing=["broken.config", "lost.layer"])
    foreign = b.image("win", layers=["win.base"], foreign=["win.base"])
    held_elsewhere = b.image("elsewhere")
    multi = b.index("multi", [foreign, held_elsewhere])
    app = b.repo("app").push(broken, foreign).push(multi, children=False)
    app.tag("broken", broken).tag("multi", multi)
    b.repo("other").push(held_elsewhere).tag("v1", held_elsewhere)

    audit = b.audit()

    assert b.findings(audit, Id.MANIFEST_MISSING_REF) == {
        "manifest-missing-ref broken.config",
        "manifest-missing-ref lost.layer",
        "manifest-missing-ref app@elsewhere",  # stored, but not in this repository
    }
    messages = {b.where(f.location): f.message for f in audit.findings if f.id is Id.MANIFEST_MISSING_REF}
    shown = layout.format_digest(broken)
    assert messages["broken.config"] == f"config of live manifest {shown} is not stored"
    assert messages["lost.layer"] == f"layer of live manifest {shown} is not stored"
    assert messages["app@elsewhere"] == (
        f"child of live manifest {layout.format_digest(multi)} is not stored in this repository"
    )


def test_buildkit_index_entries_that_are_plain_blobs_are_kept_not_missing():
    b = Build()
    v1 = b.image("v1")
    b.blob("cache")
    multi = b.index("multi", [v1], blobs=["cache", "lost-cache"])
    b.repo("app").push(multi).tag("latest", multi)

    audit = b.audit()

    # The stored cache blob is referenced by a live index, so no verdict; the missing one is reported
    # at its blob, not as a revision of the repository.
    assert b.findings(audit) == {"manifest-missing-ref lost-cache"}


def test_layer_link_missing_for_a_stored_blob_a_live_manifest_uses_unlinked():
    b = Build()
    v1 = b.image("v1")
    b.repo("app").push(v1).tag("latest", v1).unlink(digest("v1.layer"))

    audit = b.audit()

    assert b.findings(audit) == {"layer-link-missing app/_layers/v1.layer"}
    (finding,) = audit.findings
    assert finding.message == (
        f"layer of live manifest {layout.format_digest(v1)} is stored but not linked: pulls fail"
    )


def test_schema1_fslayers_are_references():
    b = Build()
    s1 = b.schema1("s1", ["s1.a", "s1.b"])
    b.repo("old").push(s1).tag("latest", s1).unlink(digest("s1.b"))

    audit = b.audit()

    assert b.findings(audit) == {"layer-link-missing old/_layers/s1.b"}


def test_tag_broken_when_current_is_missing_or_names_what_cannot_be_served():
    b = Build()
    good, unlinked, lost, invalid = b.image("good"), b.image("unlinked"), b.image("lost", stored=False), b.invalid("bad")
    app = b.repo("app").push(good, lost, invalid)
    app.tag("missing", None, history=[good])
    app.tag("unlinked", unlinked).tag("lost", lost).tag("invalid", invalid).tag("good", good)
    b.repo("x").push(unlinked).tag("v1", unlinked)  # stored and served elsewhere

    audit = b.audit()

    broken = {f.tag: f.message for f in audit.findings if f.id is Id.TAG_BROKEN}
    assert broken == {
        "missing": "current link is missing: the tag cannot be pulled",
        "unlinked": f"names {layout.format_digest(unlinked)}, which has no revision link in this repository",
        "lost": f"names {layout.format_digest(lost)}, which has no manifest data",
        "invalid": f"names {layout.format_digest(invalid)}, which has invalid manifest data",
    }
    assert b.findings(audit, Id.MANIFEST_INVALID) == {"manifest-invalid bad"}


def test_tag_broken_with_an_invalid_current_link_accompanies_its_link_invalid():
    b = Build()
    v1 = b.image("v1")
    b.repo("app").push(v1).bad_current("latest", v1, history=[v1])

    audit = b.audit()

    assert b.findings(audit) == {"link-invalid app:latest/current/link", "tag-broken app:latest"}
    assert {f.message for f in audit.findings} == {
        "current link of tag latest: trailing whitespace", "current link is invalid: the tag cannot be pulled",
    }


def test_tag_index_stale_and_tag_index_dangling():
    b = Build()
    old, new, gone = b.image("old"), b.image("new"), b.image("gone")
    b.repo("app").push(old, new).tag("latest", new, history=[old, gone])
    b.repo("keeper").push(old, gone).tag("old", old).tag("gone", gone)  # keeps the blobs out of the way

    audit = b.audit()

    assert b.findings(audit, Id.TAG_INDEX_STALE, Id.TAG_INDEX_DANGLING) == {
        "tag-index-stale app:latest/index/old",
        "tag-index-dangling app:latest/index/gone",
    }
    messages = {f.id: f.message for f in audit.findings}
    assert messages[Id.TAG_INDEX_STALE] == "an earlier target of the tag"
    assert messages[Id.TAG_INDEX_DANGLING] == "an earlier target whose revision is gone"


def test_revision_dangling_for_a_revision_whose_data_is_missing():
    b = Build()
    v1, lost = b.image("v1"), b.image("lost", stored=False)
    b.repo("app").push(v1, lost).tag("latest", v1)

    audit = b.audit()

    # It marks nothing: what it referenced is orphaned, as the GC would see it.
    assert b.findings(audit) == {"revision-dangling app@lost", "blob-orphan lost.config", "blob-orphan lost.layer"}
    assert next(f for f in audit.findings if f.id is Id.REVISION_DANGLING).message == (
        "revision link to manifest data that is not stored"
    )


def test_an_unreadable_manifest_keeps_every_revision_of_its_repository_and_makes_the_audit_incomplete():
    b = Build()
    v1, old, unread = b.image("v1"), b.image("old"), b.unreadable("unread")
    b.repo("app").push(v1, old, unread).tag("latest", v1).link(b.blob("extra"))
    lone = b.image("lone")
    b.repo("other").push(lone)

    audit = b.audit()

    assert b.findings(audit) == {
        "dir-unreadable unread",
        "blob-orphan extra",  # what no revision marks is still an orphan
        # Another repository is judged as usual.
        "manifest-untagged other@lone",
        "blob-unreachable lone", "blob-unreachable lone.config", "blob-unreachable lone.layer",
        "layer-link-unused other/_layers/lone.config", "layer-link-unused other/_layers/lone.layer",
    }
    assert next(f for f in audit.findings if f.id is Id.DIR_UNREADABLE).message == (
        "manifest data is unreadable: Permission denied"
    )
    assert not audit.complete and audit.uncertain == ()
    assert not audit.blob_verdicts_safe
    assert audit.unread == ("app",)
    assert names(b, audit.roots(b.inventory).manifests["app"]) == {"v1", "old", "unread"}


def test_an_unparsable_manifest_makes_blob_verdicts_uncertain():
    b = Build()
    v1, junk = b.image("v1"), b.invalid("junk")
    b.repo("app").push(v1, junk).tag("latest", v1).link(b.blob("extra"))

    audit = b.audit()

    assert b.findings(audit) == {
        "manifest-invalid junk",
        "manifest-untagged app@junk",
        "blob-orphan extra",  # but no layer-link-unused: what junk references is unknown
    }
    assert next(f for f in audit.findings if f.id is Id.MANIFEST_INVALID).message == (
        "manifest data is not JSON (truncated or corrupt)"
    )
    assert audit.complete
    assert audit.uncertain == ("1 manifest(s) could not be parsed: what they reference is unknown",)
    assert not audit.blob_verdicts_safe


def test_aliases_and_damaged_links_protect_what_they_may_name():
    b = Build()
    v1, meant, aliased, mismatched = b.image("v1"), b.image("meant"), b.blob("aliased"), b.blob("mismatched")
    app = b.repo("app").push(v1).tag("latest", v1).alias(aliased)
    app.bad_link(LinkKind.REVISION, meant, LinkContent(None, LinkDefect.UPPERCASE, meant))
    app.bad_link(LinkKind.LAYER, mismatched, LinkContent(digest("v1.layer")))
    app.link(digest("meant.layer"), digest("meant.config"))

    audit = b.audit()

    # No blob verdict for meant (and what it references), the alias, or the mismatched link's digests;
    # no layer-link-unused for what meant references.
    assert b.findings(audit) == {"link-invalid app@meant/link", "link-mismatch app/_layers/mismatched/link"}
    assert names(b, audit.protected.live["app"]) == {"meant"}


def test_a_manifest_only_a_damaged_current_link_names_is_not_judged_untagged():
    b = Build()
    meant = b.image("meant")
    # The current link holds meant with a trailing newline; the tag's index lost its entry.
    b.repo("app").push(meant).bad_current("latest", meant)

    audit = b.audit()

    # What a damaged link may name is never judged garbage: the revision the link's repair brings back
    # is kept, as its blobs are.
    assert b.findings(audit) == {"link-invalid app:latest/current/link", "tag-broken app:latest"}
    assert audit.protected.keeps_manifest("app", meant)


def test_unseen_paths_suppress_the_verdicts_under_them():
    b = Build()
    v1 = b.image("v1", layers=["linked.away"], missing=["linked.away"])
    hidden = b.image("hidden", stored=False, missing=["hidden.config", "hidden.layer"])
    lost = b.image("lost", stored=False, missing=["lost.config", "lost.layer"])
    app = b.repo("app").push(v1, lost).tag("latest", v1).tag("hidden", hidden)
    app.unlink(digest("linked.away"))
    b.unknown(layout.blob_data(digest("linked.away")))
    b.unreadable_path(layout.revision_dir("app", hidden))
    b.unknown(layout.blob_dir(lost))

    audit = b.audit()

    # No manifest-missing-ref for the layer, no tag-broken for the tag, no revision-dangling for lost.
    assert {f.id for f in audit.findings} == {Id.DIR_UNREADABLE}
    assert {f.message for f in audit.findings} == {
        "cannot judge: symbolic link (never followed)", "cannot read: Permission denied",
    }
    assert not audit.complete
    assert audit.unseen(layout.blob_data(lost)) and not audit.unseen(layout.blob_data(v1))


def test_an_unknown_path_that_is_an_oddity_is_reported_once():
    b = Build()
    path = "repositories/app/_layers/sha256/x"
    b.inventory.oddities.append(Oddity(path, "symbolic link (never followed)"))
    b.unknown(path)

    audit = b.audit()

    assert [(f.id, f.path) for f in audit.findings] == [(Id.UNEXPECTED, path)]


def test_ignore_leaves_ids_out_and_counts_them():
    b = Build()
    old, new = b.image("old"), b.image("new")
    b.repo("app").push(old, new).tag("latest", new, history=[old])
    b.blob("stray")

    audit = checks.ignore(b.audit(), frozenset({Id.BLOB_UNREACHABLE, Id.BLOB_ORPHAN, Id.UPLOAD_STALE}))

    assert b.findings(audit) == {
        "tag-index-stale app:latest/index/old",
        "manifest-untagged app@old",
        "layer-link-unused app/_layers/old.config",
        "layer-link-unused app/_layers/old.layer",
    }
    assert audit.ignored == {Id.BLOB_UNREACHABLE: 3, Id.BLOB_ORPHAN: 1, Id.UPLOAD_STALE: 0}
