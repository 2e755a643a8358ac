"""retain's policy on hand-built inventories: rules, the policy file, and which tag each clause keeps (no file
system; the facts the service gathers from the tree are given)."""

from datetime import timedelta

import pytest

from fsck import plan
from fsck.layout import Digest
from fsck.policy import (
    Facts,
    Policy,
    PolicyError,
    decide,
    make_rule,
    parse_created,
    parse_duration,
    parse_policy,
)
from fsck.pulllog import Pulls
from fsck.reach import build_graph
from tests.harness.inventories import NOW, Build, RepoBuild

T = NOW.timestamp()
HOUR = 3600.0


def rule(*repos: str, **clauses) -> Policy:
    return Policy((make_rule(repos or ("app",), **clauses),))


def pushed(repository: str, **ages_in_hours: float) -> dict:
    """Push times: `tag=hours ago`; the names of keyword arguments are tag names (`-`: `_`)."""
    return {(repository, tag.replace("_", "-")): T - hours * HOUR for tag, hours in ages_in_hours.items()}


def verdicts(b: Build, policy: Policy, facts: Facts, pulls: Pulls | None = None,
             protection: plan.Protection = plan.Protection()) -> dict[str, dict[str, str]]:
    """Per repository, each tag's fate: `kept: <clause>` or `removed: <clause>`."""
    decided = decide(policy, b.inventory, build_graph(b.inventory, b.manifests), facts, T, pulls, protection)
    return {
        r.repository: {t.tag: f"{'kept' if t.kept else 'removed'}: {t.clause}" for t in r.tags}
        for r in decided.repositories
    }


def again(b: Build, name: str) -> RepoBuild:
    return RepoBuild(b, b.inventory.repositories[name])


def five_tags(b: Build, repository: str = "app") -> dict:
    """v1 ... v5, each its own image, v5 the newest (pushed 1 h ago, v1 5 h ago)."""
    images = [b.image(f"{repository}.v{n}") for n in range(1, 6)]
    repo = b.repo(repository).push(*images)
    for n, image in enumerate(images, 1):
        repo.tag(f"v{n}", image)
    return {(repository, f"v{n}"): T - (6 - n) * HOUR for n in range(1, 6)}


# Rules as written.


@pytest.mark.parametrize("text, seconds", [("30d", 30 * 86400), ("1h30m", 5400), ("90s", 90), ("2w", 14 * 86400),
                                           ("1.5h", 5400)])
def test_durations(text, seconds):
    assert parse_duration(text).delta == timedelta(seconds=seconds)


@pytest.mark.parametrize("text, message", [
    ("30", "not a duration"), ("3x", "not a duration"), ("", "not a duration"), ("-1d", "not a duration"),
    ("0", "not a duration"), ("0s", "keeps nothing"), ("40000d", "longer than this tool can count"),
])
def test_bad_durations_are_one_line_errors(text, message):
    with pytest.raises(PolicyError, match=message):
        parse_duration(text)


@pytest.mark.parametrize("kwargs, message", [
    ({}, "no keep clause"),
    ({"keep_last_n": 0}, "from 1 to 1000000"),
    ({"keep_last_n": -3}, "from 1 to 1000000"),
    ({"keep_last_n": 10**9}, "from 1 to 1000000"),
    ({"keep_last_n": 2, "by": "pulled"}, "by must be 'pushed' or 'created'"),
    ({"by": "created", "keep_tags": ["latest"]}, "give keep-last too"),
    ({"keep_tags": ["v[1"]}, "unclosed"),
    ({"keep_tags": ["bad tag"]}, "not a tag"),
    ({"keep_within": "soon"}, "not a duration"),
])
def test_a_rule_that_cannot_be_used_is_a_usage_error(kwargs, message):
    with pytest.raises(PolicyError, match=message):
        make_rule(["app"], **kwargs)


def test_a_rule_needs_repositories():
    with pytest.raises(PolicyError, match="no repositories"):
        make_rule([], keep_last_n=1)


@pytest.mark.parametrize("repos", [["Team/App"], ["team//app"], ["team/[a"], [""]])
def test_a_repository_that_is_no_name_nor_pattern_is_refused(repos):
    with pytest.raises(PolicyError):
        make_rule(repos, keep_last_n=1)


def test_protect_entries_are_a_keep_clause():
    assert make_rule(["app"], protecting=True).clauses == ()


# Selection: exact names, anchored globs, first match wins.


@pytest.mark.parametrize("pattern, selected", [
    ("test", {"test"}),
    ("test*", {"test", "testxxx"}),
    ("test/*", {"test/sub"}),
    ("test/**", {"test/sub", "test/sub/deep"}),
    ("**/sub", {"test/sub"}),
    ("*", {"test", "testxxx", "other"}),
    ("**", {"test", "testxxx", "test/sub", "test/sub/deep", "other"}),
])
def test_repositories_are_matched_whole_never_in_part(pattern, selected):
    names = ["test", "testxxx", "test/sub", "test/sub/deep", "other"]
    assert set(rule(pattern, keep_last_n=1).assign(names)) == selected


def test_the_first_rule_that_matches_wins_and_unmatched_repositories_are_untouched():
    policy = parse_policy("""
        [[rule]]
        repos = ["team/special"]
        keep-last = 3
        [[rule]]
        repos = ["team/*"]
        keep-last = 1
    """)
    assigned = policy.assign(["team/special", "team/other", "elsewhere"])
    assert {name: r.label for name, r in assigned.items()} == {"team/other": "rule 2", "team/special": "rule 1"}


# The policy file.


def test_a_policy_file_with_every_clause():
    policy = parse_policy("""
        [[rule]]
        repos = ["team/*", "ci/**"]
        keep-last = 5
        by = "created"
        keep-tags = ["latest", "v*"]
        keep-within = "30d"
        keep-pulled-within = "90d"
    """)
    (only,) = policy.rules
    assert only.clauses == ("keep-last 5 by created", "keep-tags latest", "keep-tags v*", "keep-within 30d",
                            "keep-pulled-within 90d")
    assert policy.reads_pulls and policy.by_created and policy.pull_window == timedelta(days=90)


@pytest.mark.parametrize("text, message", [
    ("[[rule]\n", "not TOML"),
    ('keep-last = 3\n', "unknown key 'keep-last' \\(a policy holds \\[\\[rule\\]\\] tables\\)"),
    ("", "no rules"),
    ("rule = 3\n", "no rules"),
    ('[[rule]]\nrepos = ["a"]\nkeep_last = 3\n', "rule 1: unknown key 'keep_last'"),
    ('[[rule]]\nrepos = "a"\nkeep-last = 3\n', "rule 1: repos must be a list of strings"),
    ('[[rule]]\nrepos = ["a"]\nkeep-last = "3"\n', "rule 1: keep-last must be a whole number, not '3'"),
    ('[[rule]]\nrepos = ["a"]\nkeep-last = 2.5\n', "rule 1: keep-last must be a whole number"),
    ('[[rule]]\nrepos = ["a"]\nkeep-last = true\n', "rule 1: keep-last must be a whole number"),
    ('[[rule]]\nrepos = ["a"]\nkeep-last = 0\n', "rule 1: keep-last 0: give a number from 1"),
    ('[[rule]]\nrepos = ["a"]\nkeep-within = 30\n', "rule 1: keep-within must be a string"),
    ('[[rule]]\nrepos = ["a"]\nkeep-within = "30 days"\n', "rule 1: '30 days' is not a duration"),
    ('[[rule]]\nrepos = ["a"]\nkeep-last = 1\n[[rule]]\nrepos = ["b"]\n', "rule 2: no keep clause"),
    ('[[rule]]\nkeep-last = 1\n', "rule 1: no repositories"),
])
def test_a_bad_policy_file_is_one_line_naming_the_rule(text, message):
    with pytest.raises(PolicyError, match=message) as raised:
        parse_policy(text)
    assert "\n" not in str(raised.value)


# keep-last.


def test_keep_last_keeps_the_newest_pushed_and_names_the_clause_of_each():
    b = Build()
    times = five_tags(b)
    assert verdicts(b, rule(keep_last_n=2), Facts(times)) == {"app": {
        "v5": "kept: keep-last 2", "v4": "kept: keep-last 2",
        "v3": "removed: keep-last 2", "v2": "removed: keep-last 2", "v1": "removed: keep-last 2",
    }}


def test_keep_last_counts_tags_not_digests():
    b = Build()
    old, new = b.image("old"), b.image("new")
    b.repo("app").push(old, new).tag("a", new).tag("b", new).tag("c", old)
    facts = Facts(pushed("app", a=1, b=2, c=3))
    assert verdicts(b, rule(keep_last_n=2), facts)["app"] == {
        "a": "kept: keep-last 2", "b": "kept: keep-last 2", "c": "removed: keep-last 2"
    }


def test_ties_at_the_boundary_are_all_kept_and_said():
    b = Build()
    times = five_tags(b)
    times[("app", "v3")] = times[("app", "v4")]
    decided = decide(rule(keep_last_n=2), b.inventory, build_graph(b.inventory, b.manifests), Facts(times), T)
    (repository,) = decided.repositories
    assert {t.tag for t in repository.kept} == {"v5", "v4", "v3"}
    assert {t.tag: t.note for t in repository.tags if t.note} == {"v4": "tie at the keep-last boundary",
                                                                 "v3": "tie at the keep-last boundary"}
    assert repository.notes == ("keep-last 2: 2 tags tie at the boundary, all kept: v3, v4",)


def test_fewer_tags_than_keep_last_are_all_kept():
    b = Build()
    times = five_tags(b)
    assert set(verdicts(b, rule(keep_last_n=9), Facts(times))["app"].values()) == {"kept: keep-last 9"}


def test_by_created_orders_by_the_image_config_and_a_list_by_its_newest_child():
    b = Build()
    old_image, new_image = b.image("old"), b.image("new")
    amd, arm = b.image("amd"), b.image("arm")
    index = b.index("index", [amd, arm])
    b.repo("app").push(old_image, new_image, index).tag("pushed-last", old_image).tag("built-last", new_image) \
        .tag("multi", index)
    facts = Facts(
        pushed("app", pushed_last=1, built_last=5, multi=9),
        {old_image: T - 100 * HOUR, new_image: T - 2 * HOUR, amd: T - 50 * HOUR, arm: T - 3 * HOUR},
    )
    assert verdicts(b, rule(keep_last_n=2, by="created"), facts)["app"] == {
        "built-last": "kept: keep-last 2 by created", "multi": "kept: keep-last 2 by created",
        "pushed-last": "removed: keep-last 2 by created",
    }
    assert verdicts(b, rule(keep_last_n=2), facts)["app"]["pushed-last"] == "kept: keep-last 2"


def test_a_missing_created_falls_back_to_the_push_time_and_is_noted():
    b = Build()
    a, c = b.image("a"), b.image("c")
    b.repo("app").push(a, c).tag("a", a).tag("c", c)
    facts = Facts(pushed("app", a=1, c=2), {a: None, c: T - 10 * HOUR})
    decided = decide(rule(keep_last_n=1, by="created"), b.inventory, build_graph(b.inventory, b.manifests), facts, T)
    (repository,) = decided.repositories
    assert [t.tag for t in repository.kept] == ["a"]
    assert repository.notes == ("no created in the image config of a: ordered by push time",)
    assert {t.tag: t.note for t in repository.tags} == {"a": "no created: push time used", "c": None}


@pytest.mark.parametrize("raw, created", [
    (b'{"created":"2026-11-26T11:00:00.123456789Z","architecture":"amd64"}', T - HOUR + 0.123456789),
    (b'{"architecture":"amd64"}', None),
    (b'{"created":"last tuesday"}', None),
    (b'{"created":1700000000}', None),
    (b"not json", None),
    (b"[1]", None),
])
def test_created_is_read_from_the_config(raw, created):
    assert parse_created(raw) == (pytest.approx(created) if created is not None else None)


# The other clauses, and any of them keeping.


def test_keep_tags_globs_keep_whatever_the_count():
    b = Build()
    times = five_tags(b)
    assert verdicts(b, rule(keep_last_n=1, keep_tags=["v1", "v[23]"]), Facts(times))["app"] == {
        "v5": "kept: keep-last 1", "v4": "removed: keep-last 1, keep-tags v1, keep-tags v[23]",
        "v3": "kept: keep-tags v[23]", "v2": "kept: keep-tags v[23]", "v1": "kept: keep-tags v1",
    }


def test_a_tag_that_looks_like_a_glob_is_matched_as_written_without_glob_characters():
    b = Build()
    image = b.image("x")
    b.repo("app").push(image).tag("v1.0", image).tag("v1x0", image)
    facts = Facts(pushed("app", **{"v1.0": 1, "v1x0": 1}))
    assert verdicts(b, rule(keep_tags=["v1.0"]), facts)["app"] == {
        "v1.0": "kept: keep-tags v1.0", "v1x0": "removed: keep-tags v1.0"
    }


def test_keep_within_keeps_what_was_pushed_in_the_window():
    b = Build()
    times = five_tags(b)
    assert verdicts(b, rule(keep_within="2h30m"), Facts(times))["app"] == {
        "v5": "kept: keep-within 2h30m", "v4": "kept: keep-within 2h30m",
        "v3": "removed: keep-within 2h30m", "v2": "removed: keep-within 2h30m", "v1": "removed: keep-within 2h30m",
    }


def test_a_tag_kept_by_several_clauses_names_them_all():
    b = Build()
    times = five_tags(b)
    assert verdicts(b, rule(keep_last_n=1, keep_tags=["v5"], keep_within="1h30m"), Facts(times))["app"]["v5"] == (
        "kept: keep-last 1, keep-tags v5, keep-within 1h30m"
    )


def test_keep_pulled_within_by_tag_by_digest_and_through_an_index_child():
    b = Build()
    one, two, three, four = (b.image(n) for n in ("one", "two", "three", "four"))
    amd, arm = b.image("amd"), b.image("arm")
    index = b.index("index", [amd, arm])
    b.repo("app").push(one, two, three, four, index).tag("by-tag", one).tag("by-digest", two) \
        .tag("same-digest", two).tag("long-ago", three).tag("never", four).tag("multi", index)
    b.repo("other").push(four).tag("never", four)
    pulls = Pulls(
        tags={("app", "by-tag"): T - HOUR / 2, ("app", "long-ago"): T - 3 * HOUR, ("other", "never"): T},
        digests={("app", two): T - 10.0, ("app", arm): T - 20.0, ("other", four): T},
        earliest=T - 5 * HOUR,
    )
    facts = Facts(pushed("app", by_tag=9, by_digest=9, same_digest=9, long_ago=9, never=9, multi=9))
    assert verdicts(b, rule(keep_pulled_within="1h"), facts, pulls)["app"] == {
        "by-tag": "kept: keep-pulled-within 1h",
        "by-digest": "kept: keep-pulled-within 1h",
        "same-digest": "kept: keep-pulled-within 1h",
        "multi": "kept: keep-pulled-within 1h",
        "long-ago": "removed: keep-pulled-within 1h",
        "never": "removed: keep-pulled-within 1h",
    }


def test_protect_entries_keep_as_a_clause():
    b = Build()
    times = five_tags(b)
    protection = plan.Protection(tags=frozenset({("app", "v1")}),
                                 in_repository=frozenset({("app", b.digest("app.v2"))}))
    got = verdicts(b, Policy((make_rule(["app"], protecting=True),)), Facts(times), protection=protection)["app"]
    assert got == {"v1": "kept: protect", "v2": "kept: protect", "v3": "removed: protect",
                   "v4": "removed: protect", "v5": "removed: protect"}


# What never counts, and what is never removed.


def cosign(d: Digest, suffix: str = "sig") -> str:
    return f"sha256-{d.hex()}.{suffix}"


def test_signature_tags_do_not_count_and_follow_their_subject():
    b = Build()
    times = five_tags(b)
    v5, v1 = b.digest("app.v5"), b.digest("app.v1")
    sig5, sig1 = b.image("sig5"), b.image("sig1")
    again(b, "app").push(sig5, sig1).tag(cosign(v5), sig5).tag(cosign(v1, "att"), sig1)
    times[("app", cosign(v5))] = T  # newest of all: would take a keep-last place if it counted
    times[("app", cosign(v1, "att"))] = T
    got = verdicts(b, rule(keep_last_n=1), Facts(times))["app"]
    assert got[cosign(v5)] == f"kept: follows its subject sha256:{v5.hex()}"
    assert got[cosign(v1, "att")] == f"removed: follows its subject sha256:{v1.hex()}, which goes"
    assert got["v5"] == "kept: keep-last 1" and got["v4"] == "removed: keep-last 1"


def test_a_tag_naming_a_referrer_follows_its_subject():
    b = Build()
    kept, gone = b.image("kept"), b.image("gone")
    sbom_kept, sbom_gone = b.referrer("sbom.kept", kept), b.referrer("sbom.gone", gone)
    b.repo("app").push(kept, gone, sbom_kept, sbom_gone).tag("new", kept).tag("old", gone) \
        .tag("sbom-new", sbom_kept).tag("sbom-old", sbom_gone)
    facts = Facts(pushed("app", new=2, old=3, sbom_new=0, sbom_old=0))
    got = verdicts(b, rule(keep_last_n=1), facts)["app"]
    assert got == {
        "new": "kept: keep-last 1", "old": "removed: keep-last 1",
        "sbom-new": f"kept: follows its subject sha256:{kept.hex()}",
        "sbom-old": f"removed: follows its subject sha256:{gone.hex()}, which goes",
    }


def test_a_signature_of_a_manifest_untagged_already_stays_with_it():
    b = Build()
    times = five_tags(b)
    untagged, signature = b.image("untagged"), b.image("signature")
    again(b, "app").push(untagged, signature).tag(cosign(untagged), signature)
    assert verdicts(b, rule(keep_last_n=1), Facts(times))["app"][cosign(untagged)].startswith("kept: follows")


def test_a_broken_tag_and_a_tag_whose_push_time_is_unknown_are_never_removed():
    b = Build()
    times = five_tags(b)
    again(b, "app").tag("broken", None, history=[b.digest("app.v1")])
    del times[("app", "v2")]
    got = verdicts(b, rule(keep_last_n=1), Facts(times))["app"]
    assert got["broken"] == "kept: broken tag: never removed by retain"
    assert got["v2"] == "kept: push time unreadable: never removed"
    assert got["v1"] == "removed: keep-last 1"


def test_the_removal_carries_retain_and_the_clause_and_leaves_other_repositories():
    b = Build()
    five_tags(b, "app")
    times = {**five_tags(b, "other"), **{("app", f"v{n}"): T - (6 - n) * HOUR for n in range(1, 6)}}
    decided = decide(rule("app", keep_last_n=3), b.inventory, build_graph(b.inventory, b.manifests), Facts(times), T)
    assert dict(decided.removal().tags) == {("app", "v1"): "retain: keep-last 3", ("app", "v2"): "retain: keep-last 3"}
