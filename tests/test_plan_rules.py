"""The plan's rules on hand-built inventories: `checks.audit`, then `plan.prepare` with a clock the test
controls. One rule per test; no file system, milliseconds each."""

from __future__ import annotations

from datetime import timedelta
from itertools import groupby

import pytest

from fsck import layout, plan
from fsck.catalogue import Id, Step
from fsck.layout import LinkContent, LinkDefect
from fsck.plan import Selection
from fsck.scan import LinkKind
from tests.harness.inventories import NOW, Build, digest, text, upload_id

INCOMPLETE = (
    "part of the tree could not be read or followed (see dir-unreadable and unexpected): what refers to it is unknown"
)
UNPARSED = (
    "some manifests could not be parsed: what they reference is unknown (--force removes it anyway, trusting the "
    "other manifests)"
)
YOUNG = "younger than --min-age"
GUARDED = "a _layers link that stays still names it"


def ids(*names: str) -> frozenset[Id]:
    return frozenset(Id(n) for n in names)


def steps(b: Build, the_plan: plan.Plan) -> list[tuple[Step, set[str]]]:
    """The plan's actions grouped by step, in the order they run."""
    described = zip((a.step for a in the_plan.actions), b.actions(the_plan), strict=True)
    return [(step, {d for _, d in group}) for step, group in groupby(described, key=lambda pair: pair[0])]


def garbage(b: Build | None = None) -> Build:
    """One of each kind of garbage, and one damage each mend can act on.

    app:latest was re-pushed from `old` to `new` (sharing `base`); `old` is untagged. app also holds
    a revision whose data is gone, a link to a blob that is not stored, a link to a blob nothing uses,
    a stale upload, and its tag `new` lost the _layers link to `new.app`.
    """
    b = b or Build()
    old = b.image("old", layers=["base", "old.app"])
    new = b.image("new", layers=["base", "new.app"])
    lost = b.image("lost", stored=False, missing=["lost.config", "lost.layer"])
    app = b.repo("app").push(old, new, lost).tag("latest", new, history=[old])
    app.link(b.blob("unused"), b.blob("gone", stored=False)).unlink(digest("new.app"))
    app.upload(1, timedelta(days=30))
    b.blob("stray")
    b.leftover("repositories/app/_layers/sha256/link.0b5c.tmp")
    b.empty_dir("repositories/app/_manifests/revisions/sha512")
    return b


# The selection: which ids act


def test_selection_ids_default_untagged_and_fix_damage():
    default = ids(
        "tag-index-stale", "tag-index-dangling", "revision-dangling", "layer-link-unused", "layer-link-dangling",
        "blob-orphan", "repo-empty", "upload-stale", "dir-empty", "tmp-leftover",
    )
    untagged = ids("manifest-untagged", "blob-unreachable")
    damage = ids("link-invalid", "tag-broken", "manifest-invalid", "layer-link-missing", "blob-empty",
                 "blob-digest-mismatch")

    assert Selection().ids() == default
    assert Selection(untagged=True).ids() == default | untagged
    assert Selection(fix_damage=True).ids() == default | damage
    assert Selection(untagged=True, only=ids("blob-unreachable", "link-invalid")).ids() == ids("blob-unreachable")
    assert Selection(skip=ids("blob-orphan")).ids() == default - ids("blob-orphan")
    listed = frozenset({(Id.BLOB_ORPHAN, "blobs/x"), (Id.MANIFEST_UNTAGGED, "y")})
    assert Selection(from_report=listed).ids() == ids("blob-orphan")
    assert Selection(from_report=listed, untagged=True, fix_damage=True).ids() == (
        ids("blob-orphan", "manifest-untagged") | damage
    )


# Order


def test_actions_run_in_the_catalogue_step_order():
    b = garbage()

    the_plan = b.plan(Selection(untagged=True, fix_damage=True))

    assert steps(b, the_plan) == [
        (Step.MEND, {"layer-link-missing write-link app/_layers/new.app/link"}),
        (Step.TAG_INDEX, {"tag-index-stale remove app:latest/index/old"}),
        (Step.MANIFESTS, {"manifest-untagged remove app@old", "revision-dangling remove app@lost"}),
        (Step.LINKS, {
            "layer-link-unused remove app/_layers/old.config", "layer-link-unused remove app/_layers/old.app",
            "layer-link-unused remove app/_layers/unused",
            "layer-link-dangling remove app/_layers/gone",
        }),
        (Step.BLOBS, {
            "blob-unreachable remove old", "blob-unreachable remove old.config", "blob-unreachable remove old.app",
            "blob-orphan remove unused", "blob-orphan remove stray",
        }),
        (Step.UPLOADS, {
            f"upload-stale remove app/_uploads/{upload_id(1)}",
            "tmp-leftover remove repositories/app/_layers/sha256/link.0b5c.tmp",
        }),
        (Step.DIRECTORIES, {"dir-empty remove repositories/app/_manifests/revisions/sha512"}),
    ]
    within = [(a.step, a.path) for a in the_plan.actions]
    assert within == sorted(within)
    assert the_plan.skipped == ()


def test_default_acts_on_what_no_client_can_still_ask_for():
    b = garbage()

    the_plan = b.plan()

    assert set(b.actions(the_plan)) == {
        "tag-index-stale remove app:latest/index/old",
        "revision-dangling remove app@lost",
        "layer-link-unused remove app/_layers/unused",
        "layer-link-dangling remove app/_layers/gone",
        "blob-orphan remove unused",
        "blob-orphan remove stray",
        f"upload-stale remove app/_uploads/{upload_id(1)}",
        "tmp-leftover remove repositories/app/_layers/sha256/link.0b5c.tmp",
        "dir-empty remove repositories/app/_manifests/revisions/sha512",
    }
    assert the_plan.bytes == 2 * 1000 + 4096 + 7


def test_without_untagged_an_untagged_manifest_keeps_its_blobs_and_layers_links():
    b = garbage()

    the_plan = b.plan()

    # Not acted on and not skipped: what the repair keeps still uses them, so they are left.
    assert b.leftover_findings(the_plan) == {
        "manifest-untagged app@old",
        "blob-unreachable old", "blob-unreachable old.config", "blob-unreachable old.app",
        "layer-link-unused app/_layers/old.config", "layer-link-unused app/_layers/old.app",
        "layer-link-missing app/_layers/new.app",
    }
    assert the_plan.skipped == ()


def test_untagged_removes_untagged_manifests_and_what_they_free_but_not_what_a_tag_shares():
    b = garbage()

    the_plan = b.plan(Selection(untagged=True))

    assert {a for a in b.actions(the_plan) if "old" in a} == {
        "tag-index-stale remove app:latest/index/old",
        "manifest-untagged remove app@old",
        "layer-link-unused remove app/_layers/old.config",
        "layer-link-unused remove app/_layers/old.app",
        "blob-unreachable remove old",
        "blob-unreachable remove old.config",
        "blob-unreachable remove old.app",
    }
    assert not any("base" in a for a in b.actions(the_plan))
    assert b.leftover_findings(the_plan) == {"layer-link-missing app/_layers/new.app"}


def test_fix_damage_mends_links_and_restores_a_tag_from_its_only_index_entry():
    b = Build()
    v1, v2 = b.image("v1"), b.image("v2")
    app = b.repo("app").push(v1, v2).tag("v1", v1).unlink(digest("v1.layer"))
    app.tag("lost", None, history=[v2])  # current link missing, one index entry
    plain = Selection()

    mended = b.plan(Selection(fix_damage=True))

    assert b.actions(b.plan(plain)) == []
    assert b.leftover_findings(b.plan(plain)) == {"layer-link-missing app/_layers/v1.layer", "tag-broken app:lost"}
    assert b.actions(mended) == [  # both at the first step, by path
        "layer-link-missing write-link app/_layers/v1.layer/link",
        "tag-broken write-link app:lost/current/link",
    ]
    assert {b.name(a.content) for a in mended.actions} == {"v1.layer", "v2"}
    assert {a.resolves for a in mended.actions} == {layout.LayerLink("app", digest("v1.layer")), layout.TagDir("app", "lost")}
    assert mended.leftover == () and mended.skipped == ()


def test_fix_damage_rewrites_an_invalid_current_link_and_that_settles_its_tag():
    b = Build()
    v1 = b.image("v1")
    b.repo("app").push(v1).bad_current("latest", v1, history=[v1])

    the_plan = b.plan(Selection(fix_damage=True))

    assert b.actions(the_plan) == ["link-invalid write-link app:latest/current/link"]
    assert the_plan.actions[0].content == v1
    assert the_plan.leftover == ()
    # One verdict per item: the tag-broken this rewrite settles is not also skipped.
    assert b.skipped(the_plan) == set()


def test_untagged_with_fix_damage_removes_the_revision_a_rewritten_current_link_names():
    b = Build()
    meant = b.image("meant")
    b.repo("app").push(meant).bad_current("latest", meant)  # its index entry is gone too

    the_plan = b.plan(Selection(untagged=True, fix_damage=True))

    # The rewrite's target is what the damaged link names: never judged untagged, so never removed while
    # the link is rewritten to it; without --fix-damage it stays for a later mend.
    assert b.actions(the_plan) == ["link-invalid write-link app:latest/current/link"]
    assert the_plan.actions[0].content == meant
    assert b.actions(b.plan(Selection(untagged=True))) == []


def test_fix_damage_quarantines_a_corrupt_blob_and_lists_the_tags_that_need_a_repush():
    b = Build()
    v1 = b.image("v1", layers=["base", "v1.app"])
    v2 = b.image("v2", layers=["base"])
    other = b.image("other")
    b.repo("app").push(v1, v2, other).tag("v1", v1).tag("v2", v2).tag("other", other)

    audit = b.audit(corrupt=[digest("base")])
    the_plan = b.plan(Selection(fix_damage=True), audit)

    assert b.findings(audit) == {"blob-digest-mismatch base"}
    assert b.actions(the_plan) == ["blob-digest-mismatch remove base"]
    assert the_plan.needs_repush == ("app:v1", "app:v2")
    assert b.plan(audit=audit).actions == () and b.plan(audit=audit).needs_repush == ()


def test_a_manifest_invalid_blob_other_manifests_use_as_content_is_not_quarantined():
    b = Build()
    junk = b.invalid("junk")
    v1 = b.image("v1", layers=["junk"])  # the same bytes, a layer of v1
    b.repo("app").push(v1).tag("latest", v1).revision(junk)

    the_plan = b.plan(Selection(fix_damage=True))
    forced = b.plan(Selection(fix_damage=True, force=True))

    assert b.actions(the_plan) == []
    assert b.skipped(the_plan) == {(
        "manifest-invalid junk",
        "other manifests use this blob as content: the link naming it as a manifest is wrong, not the blob",
    )}
    # --force overrides the live-registry guards and the uncertain freeze only: never this.
    assert b.actions(forced) == [] and b.skipped(forced) == b.skipped(the_plan)


# --only, --skip


def test_only_acts_on_the_ids_named_and_skip_never_on_those_named():
    b = garbage()

    only = b.plan(Selection(only=ids("blob-orphan", "manifest-untagged")))
    skip = b.plan(Selection(skip=ids("blob-orphan", "layer-link-unused")))

    # manifest-untagged is not acted on without --untagged, even when named; the link to `unused` stays,
    # so its blob does too (the blob guard).
    assert b.actions(only) == ["blob-orphan remove stray"]
    assert b.skipped(only) == {("blob-orphan unused", GUARDED)}
    assert not any(a.startswith(("blob-orphan", "layer-link-unused")) for a in b.actions(skip))
    assert "layer-link-dangling remove app/_layers/gone" in b.actions(skip)
    assert skip.skipped == ()


# --min-age


def test_min_age_skips_young_findings_and_a_young_manifest_keeps_what_it_references():
    b = Build()
    v1 = b.image("v1")
    old, fresh = b.image("old"), b.image("fresh")
    b.repo("app").push(v1, old, fresh).tag("latest", v1)
    b.blob("stray")
    b.blob("new-stray")
    b.young(layout.Revision("app", fresh))
    b.young(layout.Blob(digest("new-stray")))

    the_plan = b.plan(Selection(untagged=True, min_age=timedelta(hours=1)))

    assert set(b.actions(the_plan)) == {
        "manifest-untagged remove app@old",
        "layer-link-unused remove app/_layers/old.config", "layer-link-unused remove app/_layers/old.layer",
        "blob-unreachable remove old", "blob-unreachable remove old.config", "blob-unreachable remove old.layer",
        "blob-orphan remove stray",
    }
    # Everything kept because of --min-age says so: the young manifest, and what it keeps.
    assert b.skipped(the_plan) == {(f, YOUNG) for f in (
        "blob-orphan new-stray", "manifest-untagged app@fresh",
        "blob-unreachable fresh", "blob-unreachable fresh.config", "blob-unreachable fresh.layer",
        "layer-link-unused app/_layers/fresh.config", "layer-link-unused app/_layers/fresh.layer",
    )}
    assert b.leftover_findings(the_plan) == {finding for finding, _ in b.skipped(the_plan)}


def test_min_age_asks_only_about_findings_the_selection_acts_on():
    b = Build()
    v1, fresh = b.image("v1"), b.image("fresh")
    b.repo("app").push(v1, fresh).tag("latest", v1)
    asked = []

    def modified(location):
        asked.append(location)
        return None  # gone since the audit: not young

    plan.prepare(b.audit(), b.inventory, Selection(min_age=timedelta(hours=1)), modified, NOW)

    # Without --untagged neither manifest-untagged nor blob-unreachable is asked about.
    assert {b.where(location) for location in asked} == {
        "app/_layers/fresh.config", "app/_layers/fresh.layer",
    }


# --protect


def test_parse_protection_reads_digests_repo_digests_and_tags():
    protection = plan.parse_protection([
        f"{text('a')}   # a bare digest",
        f"app@{text('b')}",
        f"registry.example.com:5000/team/app@{text('c')}",
        "localhost/app:v1",
        "team/app:latest",
        "",
        "# only a comment",
    ])

    assert protection == plan.Protection(
        frozenset({digest("a")}),
        frozenset({("app", digest("b")), ("team/app", digest("c"))}),
        frozenset({("app", "v1"), ("team/app", "latest")}),
    )


@pytest.mark.parametrize(("line", "message"), [
    ("app@sha256:beef", "line 1: 'app@sha256:beef' has no valid digest"),
    ("app", "line 1: 'app' is not a digest, repo@digest or repo:tag"),
    ("app:bad/tag!", "line 1: 'app:bad/tag!' is not a digest, repo@digest or repo:tag"),
], ids=["short-digest", "no-tag", "invalid-tag"])
def test_parse_protection_refuses_what_is_not_a_reference(line, message):
    with pytest.raises(plan.ProtectError) as raised:
        plan.parse_protection([line])
    assert str(raised.value) == message


def test_protect_keeps_a_manifest_and_what_it_references():
    b = garbage()
    protection = plan.parse_protection([f"app@{text('old')}"])

    the_plan = b.plan(Selection(untagged=True, protect=protection))

    assert not any("old" in a and not a.startswith("tag-index-stale") for a in b.actions(the_plan))
    assert {
        "manifest-untagged app@old", "blob-unreachable old", "blob-unreachable old.config",
        "blob-unreachable old.app", "layer-link-unused app/_layers/old.app", "layer-link-unused app/_layers/old.config",
    } <= b.leftover_findings(the_plan)


def test_protect_a_tag_keeps_its_whole_index_and_skips_its_findings_as_protected():
    b = garbage()

    the_plan = b.plan(Selection(untagged=True, protect=plan.parse_protection(["app:latest"])))

    # Everything kept because of --protect says so: the index entry, the manifest it names, what that keeps.
    assert b.skipped(the_plan) == {(f, "protected") for f in (
        "tag-index-stale app:latest/index/old", "manifest-untagged app@old", "blob-unreachable old",
        "blob-unreachable old.config", "blob-unreachable old.app",
        "layer-link-unused app/_layers/old.config", "layer-link-unused app/_layers/old.app",
    )}
    assert not any("old" in a for a in b.actions(the_plan))


def test_protect_a_bare_digest_keeps_that_blob_wherever_it_is():
    b = garbage()

    the_plan = b.plan(Selection(protect=plan.parse_protection([text("stray")])))

    assert "blob-orphan remove stray" not in b.actions(the_plan)
    assert "blob-orphan remove unused" in b.actions(the_plan)
    assert "blob-orphan stray" in b.leftover_findings(the_plan)


# The blob guard


def test_a_blob_a_remaining_layers_link_names_is_never_removed():
    b = garbage()

    kept_link = b.plan(Selection(skip=ids("layer-link-unused")))
    both = b.plan()

    assert "blob-orphan remove unused" not in b.actions(kept_link)
    assert b.skipped(kept_link) == {("blob-orphan unused", GUARDED)}
    assert {"layer-link-unused remove app/_layers/unused", "blob-orphan remove unused"} <= set(b.actions(both))


def test_the_blob_guard_ignores_links_of_a_repository_the_plan_removes():
    b = Build()
    lone = b.image("lone")
    b.repo("attic").push(lone)

    the_plan = b.plan(Selection(untagged=True, skip=ids("layer-link-unused")))

    assert set(b.actions(the_plan)) == {
        "repo-empty remove attic/",
        "blob-unreachable remove lone", "blob-unreachable remove lone.config", "blob-unreachable remove lone.layer",
    }
    assert the_plan.skipped == ()


# Partial views


def test_on_a_partial_view_only_safe_ids_act_even_when_forced():
    b = garbage()
    b.unknown("repositories/other", "symbolic link (never followed)")

    the_plan = b.plan(Selection(untagged=True))
    forced = b.plan(Selection(untagged=True, force=True))

    assert set(b.actions(the_plan)) == {
        "tag-index-stale remove app:latest/index/old",
        f"upload-stale remove app/_uploads/{upload_id(1)}",
        "tmp-leftover remove repositories/app/_layers/sha256/link.0b5c.tmp",
        "dir-empty remove repositories/app/_manifests/revisions/sha512",
    }
    assert b.skipped(the_plan) == {(f, INCOMPLETE) for f in (
        "manifest-untagged app@old",
        "revision-dangling app@lost",
        "layer-link-unused app/_layers/old.config", "layer-link-unused app/_layers/old.app",
        "layer-link-unused app/_layers/unused",
        "layer-link-dangling app/_layers/gone",
        "blob-unreachable old", "blob-unreachable old.config", "blob-unreachable old.app",
        "blob-orphan unused", "blob-orphan stray",
    )}
    # --force overrides the live-registry guards and the uncertain freeze only.
    assert forced == the_plan


def test_nothing_at_or_under_a_place_not_followed_is_replaced_even_when_forced():
    b = garbage()
    # Whatever put it there (the scan records a symbolic link as not followed): the rule is the path.
    b.unknown(layout.upload_dir("app", upload_id(1)), "symbolic link (never followed)")

    the_plan = b.plan(Selection(force=True))

    assert (
        f"upload-stale app/_uploads/{upload_id(1)}", "a symbolic link or special file is in its place, not followed"
    ) in b.skipped(the_plan)
    assert not any(a.startswith("upload-stale") for a in b.actions(the_plan))


def test_uncertain_blob_verdicts_freeze_blob_removal_unless_forced():
    b = garbage()
    junk = b.invalid("junk")
    b.repo("junkyard").push(junk).tag("junk", junk)

    the_plan = b.plan(Selection(untagged=True))
    forced = b.plan(Selection(untagged=True, force=True))

    assert {a for a in b.actions(the_plan) if a.split()[0] in ("blob-orphan", "blob-unreachable")} == set()
    assert "manifest-untagged remove app@old" in b.actions(the_plan)
    assert b.skipped(the_plan) == {(f, UNPARSED) for f in (
        "blob-unreachable old", "blob-unreachable old.config", "blob-unreachable old.app",
        "blob-orphan unused", "blob-orphan stray",
    )}
    assert {"blob-orphan remove stray", "blob-unreachable remove old"} <= set(b.actions(forced))


# Repositories the plan empties


def test_repositories_the_plan_empties_are_removed_whole():
    b = garbage()
    lone = b.image("lone")
    b.repo("attic").push(lone)
    b.repo("vacant")

    untagged = b.plan(Selection(untagged=True))
    default = b.plan()

    attic = {a for a in b.actions(untagged) if "attic" in a or "lone" in a or "vacant" in a}
    assert attic == {
        "repo-empty remove attic/",
        "repo-empty remove vacant/",
        "blob-unreachable remove lone", "blob-unreachable remove lone.config", "blob-unreachable remove lone.layer",
    }
    assert {a for a in b.actions(default) if "attic" in a or "lone" in a or "vacant" in a} == {
        "repo-empty remove vacant/",
    }
    # What the removed directory held is settled by it: not left over.
    assert not {f for f in b.leftover_findings(untagged) if "attic" in f}


def test_a_repository_with_others_nested_inside_loses_only_its_own_parts():
    b = Build()
    lone, v1 = b.image("lone"), b.image("v1")
    b.repo("a").push(lone)
    b.repo("a/b").push(v1).tag("latest", v1)

    the_plan = b.plan(Selection(untagged=True))

    assert set(b.actions(the_plan)) == {
        "repo-empty remove a/_layers",
        "repo-empty remove a/_manifests",
        "blob-unreachable remove lone", "blob-unreachable remove lone.config", "blob-unreachable remove lone.layer",
    }
    assert {a.resolves for a in the_plan.actions if a.finding is Id.REPO_EMPTY} == {layout.RepositoryDir("a")}
    assert the_plan.leftover == ()


def test_a_repository_the_plan_would_empty_stays_while_it_has_a_young_manifest_or_damage():
    b = Build()
    young, damaged = b.image("young"), b.image("damaged")
    b.repo("fresh").push(young)
    b.young(layout.Revision("fresh", young))
    b.repo("hurt").push(damaged).bad_link(
        LinkKind.INDEX, digest("x"), LinkContent(None, LinkDefect.EMPTY), tag="gone",
    )

    the_plan = b.plan(Selection(untagged=True, min_age=timedelta(hours=1)))

    assert not any(a.finding is Id.REPO_EMPTY for a in the_plan.actions)
    assert "manifest-untagged remove hurt@damaged" in b.actions(the_plan)


def test_actions_inside_a_directory_the_plan_removes_are_dropped():
    b = Build()
    lone, gone = b.image("lone"), b.blob("gone", stored=False)
    attic = b.repo("attic").push(lone)
    attic.upload(1, timedelta(days=30))
    b.empty_dir(layout.layer_link_dir("attic", gone))

    audit = b.audit()
    the_plan = b.plan(Selection(untagged=True), audit)

    assert b.findings(audit, Id.UPLOAD_STALE, Id.DIR_EMPTY, Id.MANIFEST_UNTAGGED, Id.LAYER_LINK_UNUSED) == {
        f"upload-stale attic/_uploads/{upload_id(1)}",
        "dir-empty attic/_layers/gone",
        "manifest-untagged attic@lone",
        "layer-link-unused attic/_layers/lone.config", "layer-link-unused attic/_layers/lone.layer",
    }
    assert b.actions(the_plan)[0] == "repo-empty remove attic/"
    assert sorted(b.actions(the_plan)[1:]) == [
        "blob-unreachable remove lone", "blob-unreachable remove lone.config", "blob-unreachable remove lone.layer",
    ]
    assert the_plan.leftover == ()


# --from


def test_from_report_acts_only_on_what_it_lists_and_what_still_holds():
    b = garbage()
    stray = layout.Blob(digest("stray")).path
    gone_entry = layout.tag_index_dir("app", "latest", digest("older"))
    b.names[digest("older")] = "older"
    old_link = layout.layer_link_dir("app", digest("old.config"))
    listed = frozenset({
        (Id.BLOB_ORPHAN, stray), (Id.TAG_INDEX_STALE, gone_entry), (Id.LAYER_LINK_UNUSED, old_link),
        (Id.MANIFEST_UNTAGGED, layout.revision_dir("app", digest("old"))),  # not acted on without --untagged
    })

    the_plan = b.plan(Selection(from_report=listed))

    assert b.actions(the_plan) == ["blob-orphan remove stray"]
    assert b.skipped(the_plan) == {
        ("tag-index-stale app:latest/index/old", "not in the report"),
        ("layer-link-unused app/_layers/unused", "not in the report"),
        ("blob-orphan unused", "not in the report"),
        ("tag-index-stale app:latest/index/older", "no longer holds in the tree"),
        ("layer-link-unused app/_layers/old.config",
         "still used by what this repair keeps (untagged manifests stay without --untagged)"),
    }
