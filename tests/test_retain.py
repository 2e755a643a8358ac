"""retain on real registry trees: what the policy keeps still pulls through the real registry, the rest is gone
with its cascade, every other repository still pulls, no garbage is left behind, and undo brings it all back.
Pull times come from the logs the real registry writes (json and text formatters, the access log)."""

import gzip
import json
import os
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest
from clirun import answer_on_a_terminal, audit_records, run_cli

from tests.harness import images, tree
from tests.harness.registry import Registry
from tests.harness.scenarios import TOPICS, Recorder, Scenario
from tests.test_repair import registry_tree, served_exactly

pytestmark = pytest.mark.registry

HOUR = 3600.0
FIVE = [f"v{n}" for n in range(1, 6)]


def set_pushed(root: Path, repo: str, ages_in_hours: dict[str, float]) -> None:
    """skopeo pushes within a second of each other: the `current` links' mtimes are set hours apart (push
    time is that mtime), `tag: hours ago`."""
    now = time.time()
    for tag, hours in ages_in_hours.items():
        when = now - hours * HOUR
        os.utime(tree.tag_current_link(root, repo, tag), (when, when))


def only(scenario: Scenario, repo: str, kept: set[str]) -> Scenario:
    tags = {r: ({t: d for t, d in named.items() if t in kept} if r == repo else dict(named))
            for r, named in scenario.tags.items()}
    return replace(scenario, tags=tags)


def others(scenario: Scenario, *repos: str) -> Scenario:
    return replace(scenario, tags={r: dict(t) for r, t in scenario.tags.items() if r not in repos},
                   referrers={r: d for r, d in scenario.referrers.items() if r not in repos})


def garbage(root: Path) -> set[tuple[str, str]]:
    return {(r["id"], r["path"]) for r in audit_records(root) if r["severity"] != "notice"}


def retain(root: Path, *args: str):
    return run_cli("retain", str(root), *args)


@pytest.fixture(scope="module")
def built(registry_binaries, tmp_path_factory) -> tuple[Path, Scenario]:
    """Five tags of their own images in lib/app, three in lib/other, and the plain, multi-arch and signed topics."""
    base = tmp_path_factory.mktemp("retain-build")
    with Registry(base / "root", workdir=base / "registry") as registry:
        with tempfile.TemporaryDirectory(dir=registry.workdir, prefix="layouts-") as layouts:
            rec = Recorder(registry, Path(layouts))
            for topic in ("plain_tags", "multiarch", "signatures"):
                TOPICS[topic](rec, 0)
            for tag in FIVE:
                rec.push(images.make_image(f"retain/app/{tag}", layers=2), "lib/app", tag)
            for tag in ("a", "b", "c"):
                rec.push(images.make_image(f"retain/other/{tag}", layers=1), "lib/other", tag)
            rec.push(images.make_image("retain/signed/v2", layers=1), "signed/app", "v2")
            scenario = rec.freeze("retain")
    root = base / "root"
    set_pushed(root, "lib/app", {tag: 6 - n for n, tag in enumerate(FIVE, 1)})  # v1 5 h ago ... v5 1 h ago
    set_pushed(root, "lib/other", {"a": 3, "b": 2, "c": 1})
    signed = scenario.tags["signed/app"]["v1"]
    set_pushed(root, "signed/app", {"v1": 3, "v2": 2, images.cosign_tag(signed): 0.5})  # the signature newest
    return root, scenario


@pytest.fixture
def copy(built, tmp_path) -> tuple[Path, Scenario]:
    root, scenario = built
    return tree.copy_tree(root, tmp_path / "tree"), scenario


def test_retain_keep_last_2_of_five_leaves_the_two_newest_pulling_and_undo_brings_all_five_back(copy, tmp_path):
    root, scenario = copy
    before, garbage_before = registry_tree(root), garbage(root)
    result = retain(root, "--repo", "lib/app", "--keep-last", "2", "--yes", "--json")
    assert result.returncode == 1, result.stderr
    document = orjson.loads(result.stdout)
    assert document["format"] == "registry-fsck/plan/1"
    assert document["outcome"]["done"] == document["summary"]["actions"] > 0
    assert {a["reason"] for a in document["actions"]} == {"retain: keep-last 2"}
    (decided,) = document["retain"]["repositories"]
    assert [t["tag"] for t in decided["kept"]] == ["v5", "v4"]
    assert [t["tag"] for t in decided["removed"]] == ["v3", "v2", "v1"]
    assert {t["clause"] for t in decided["kept"] + decided["removed"]} == {"keep-last 2"}
    assert decided["bytes"] == document["removal"]["bytes"] > 0
    with Registry(root, workdir=tmp_path / "after") as registry:
        assert sorted(registry.tags("lib/app")) == ["v4", "v5"]
        for tag in ("v4", "v5"):
            assert registry.pull_ok("lib/app", tag, all=True), tag
        for tag in ("v1", "v2", "v3"):
            assert not registry.pull_ok("lib/app", scenario.tags["lib/app"][tag], all=True), tag
        assert served_exactly(registry, others(scenario, "lib/app"), deep=True) == []
    assert garbage(root) <= garbage_before  # nothing the removal left behind
    undone = run_cli("undo", str(root))
    assert undone.returncode == 0, undone.stderr
    assert registry_tree(root) == before
    with Registry(root, workdir=tmp_path / "undone") as registry:
        assert sorted(registry.tags("lib/app")) == FIVE
        for tag in FIVE:
            assert registry.pull_ok("lib/app", tag, all=True), tag
        assert served_exactly(registry, scenario) == []


def test_retain_dry_run_prints_each_tag_with_its_clause_and_changes_nothing(copy):
    root, _ = copy
    before = registry_tree(root)
    result = retain(root, "--repo", "lib/*", "--keep-last", "1", "--keep-tags", "v[12]", "--dry-run")
    assert result.returncode == 4, result.stderr
    assert registry_tree(root) == before
    lines = result.stdout.splitlines()
    assert lines[1].startswith("lib/app: rule 1 (repos lib/*: keep-last 1, keep-tags v[12]): keeps 3, removes 2 tags")
    assert [line.split()[:2] for line in lines[2:7]] == [
        ["kept", "v5"], ["kept", "v2"], ["kept", "v1"], ["removed", "v4"], ["removed", "v3"],
    ]
    assert "(keep-tags v[12])" in lines[3] and "(none of: keep-last 1, keep-tags v[12])" in lines[6]
    assert any(line.startswith("lib/other: rule 1") and "keeps 1, removes 2 tags" in line for line in lines)
    assert any(line.startswith("untouched: ") for line in lines)


@pytest.mark.parametrize("keys, code", [(b"n\n", 4), (b"y\n", 1)])
def test_retain_asks_on_a_terminal_and_a_no_changes_nothing(copy, keys, code):
    root, _ = copy
    before = registry_tree(root)
    exit_code, screen = answer_on_a_terminal(["retain", str(root), "--repo", "lib/other", "--keep-last", "1"],
                                             b"Carry out", keys)
    assert exit_code == code, screen
    assert "removed  a" in screen and "removed  b" in screen
    if code == 4:
        assert "declined: nothing changed" in screen and registry_tree(root) == before
    else:
        assert tree.tag_names(root, "lib/other") == {"c"}


def test_a_signature_tag_does_not_count_and_goes_with_its_subject_and_referrers(copy, tmp_path):
    root, scenario = copy
    signed, kept = scenario.tags["signed/app"]["v1"], scenario.tags["signed/app"]["v2"]
    signature_tag = images.cosign_tag(signed)
    (referrer,) = scenario.referrers["signed/app"]
    result = retain(root, "--repo", "signed/app", "--keep-last", "1", "--yes", "--json")
    assert result.returncode == 1, result.stderr
    document = orjson.loads(result.stdout)
    (decided,) = document["retain"]["repositories"]
    assert [(t["tag"], t["clause"]) for t in decided["kept"]] == [("v2", "keep-last 1")]
    assert {t["tag"]: t["follows"] for t in decided["removed"]} == {"v1": None, signature_tag: signed}
    assert {m["digest"] for m in document["removal"]["manifests"]} == {signed, scenario.tags["signed/app"][signature_tag],
                                                                       referrer}
    with Registry(root, workdir=tmp_path / "after") as registry:
        assert registry.tags("signed/app") == ["v2"]
        assert registry.pull_ok("signed/app", "v2", all=True)
        assert registry.manifest_digest("signed/app", "v2") == kept
        media = scenario.manifests[referrer].media_type
        assert registry.request("HEAD", f"/v2/signed/app/manifests/{referrer}", headers={"Accept": media}).status == 404


def test_a_policy_file_with_two_rules_first_match_wins(copy, tmp_path):
    root, scenario = copy
    policy = tmp_path / "retain.toml"
    policy.write_text(
        '# lib/app keeps four; the rest of lib/ one\n'
        '[[rule]]\nrepos = ["lib/app"]\nkeep-last = 4\n\n'
        '[[rule]]\nrepos = ["lib/*"]\nkeep-last = 1\n'
    )
    result = retain(root, "--policy", str(policy), "--yes", "--json")
    assert result.returncode == 1, result.stderr
    document = orjson.loads(result.stdout)
    rules = {r["repository"]: r["rule"] for r in document["retain"]["repositories"]}
    assert rules == {"lib/app": "rule 1 (repos lib/app: keep-last 4)", "lib/other": "rule 2 (repos lib/*: keep-last 1)"}
    with Registry(root, workdir=tmp_path / "after") as registry:
        assert sorted(registry.tags("lib/app")) == ["v2", "v3", "v4", "v5"]
        assert registry.tags("lib/other") == ["c"]
        expected = only(only(scenario, "lib/app", {"v2", "v3", "v4", "v5"}), "lib/other", {"c"})
        assert served_exactly(registry, expected) == []


def test_a_bad_policy_file_is_one_line_and_exit_16(copy, tmp_path):
    root, _ = copy
    policy = tmp_path / "retain.toml"
    policy.write_text('[[rule]]\nrepos = ["lib/*"]\nkeep_last = 1\n')
    result = retain(root, "--policy", str(policy))
    assert result.returncode == 16
    assert result.stderr.splitlines() == [
        f"registry-fsck: error: {policy}: rule 1: unknown key 'keep_last' "
        "(known: by, keep-last, keep-pulled-within, keep-tags, keep-within, repos)"
    ]


@pytest.mark.parametrize("args, message", [
    (["--repo", "lib/app"], "no keep clause"),
    (["--keep-last", "2"], "no repositories"),
    (["--repo", "lib/app", "--keep-last", "0"], "keep-last 0: give a number from 1"),
    (["--repo", "lib/app", "--keep-within", "soon"], "'soon' is not a duration"),
    (["--repo", "lib/app", "--keep-pulled-within", "1h"], "give --pull-log FILE"),
    (["--repo", "Lib/App", "--keep-last", "1"], "'Lib/App' is not a repository name"),
])
def test_a_rule_that_cannot_be_used_changes_nothing_and_exits_16(copy, args, message):
    root, _ = copy
    before = registry_tree(root)
    result = retain(root, *args, "--yes")
    assert result.returncode == 16, result.stderr
    assert message in result.stderr
    assert registry_tree(root) == before


# Pull logs the real registry wrote.


def shifted_back(log_text: str, seconds: float) -> bytes:
    """The registry's json log lines with their time moved back (a rotated log from before the window)."""
    from fsck.pulllog import parse_time

    lines = []
    for line in log_text.splitlines():
        record = json.loads(line)
        when = parse_time(record["time"]) - seconds
        record["time"] = datetime.fromtimestamp(when, timezone.utc).isoformat().replace("+00:00", "Z")
        lines.append(json.dumps(record))
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="module")
def pulled(registry_binaries, tmp_path_factory):
    """lib/pull with six tags (one multi-arch) pushed while the registry logged in json (that log, moved two hours
    back and gzip'd, is the rotated one); then pulls with a json log, and with a text log and the access log."""
    base = tmp_path_factory.mktemp("retain-pulls")
    root = base / "root"
    with Registry(root, workdir=base / "push", log_formatter="json") as registry:
        with tempfile.TemporaryDirectory(dir=registry.workdir, prefix="layouts-") as layouts:
            rec = Recorder(registry, Path(layouts))
            for tag in ("by-tag", "by-digest", "head", "never", "old"):
                rec.push(images.make_image(f"retain/pull/{tag}", layers=1), "lib/pull", tag)
            index = images.make_index("retain/pull/multi", (images.Platform("linux", "amd64"),
                                                             images.Platform("linux", "arm64", "v8")))
            rec.push(index, "lib/pull", "multi", fmt="oci")
            rec.push(images.make_image("retain/pull/else", layers=1), "lib/else", "v1")
            scenario = rec.freeze("retain-pulls")
        registry.stop()
        rotated = base / "registry.log.1.gz"
        rotated.write_bytes(gzip.compress(shifted_back(registry.log_text(), 2 * HOUR)))
    tags = scenario.tags["lib/pull"]
    child = scenario.manifests[tags["multi"]].children[1]
    with Registry(root, workdir=base / "json", log_formatter="json") as registry:
        assert registry.pull_ok("lib/pull", "by-tag", all=True)
        assert registry.pull_ok("lib/pull", tags["by-digest"], all=True)
        json_log = registry.log_path
    with Registry(root, workdir=base / "text", log_formatter="text", access_log=True) as registry:
        assert registry.manifest_digest("lib/pull", "head") == tags["head"]  # a HEAD, as docker pull starts
        assert registry.pull_ok("lib/pull", child, all=False)  # one platform of multi, by digest
        assert registry.pull_ok("lib/else", "v1")
        text_log, access_log = registry.log_path, registry.access_log_path
    assert '"msg":"response completed"' in json_log.read_text()
    assert 'msg="response completed"' in text_log.read_text()
    return root, scenario, rotated, json_log, text_log, access_log


PULLED = {"by-tag", "by-digest", "head", "multi"}


def test_keep_pulled_within_keeps_exactly_the_pulled_tags_from_the_json_and_text_logs(pulled, tmp_path):
    root, scenario, rotated, json_log, text_log, _ = pulled
    copy = tree.copy_tree(root, tmp_path / "tree")
    result = retain(copy, "--repo", "lib/pull", "--keep-pulled-within", "1h", "--pull-log", str(rotated),
                    "--pull-log", str(json_log), "--pull-log", str(text_log), "--yes", "--json")
    assert result.returncode == 1, result.stderr
    document = orjson.loads(result.stdout)
    (decided,) = document["retain"]["repositories"]
    assert {t["tag"] for t in decided["kept"]} == PULLED
    assert {t["tag"] for t in decided["removed"]} == {"never", "old"}  # old: pulled at its push, 2 h ago
    assert document["retain"]["pull_logs"]["pulls"] > 0
    with Registry(copy, workdir=tmp_path / "after") as registry:
        assert sorted(registry.tags("lib/pull")) == sorted(PULLED)
        for tag in PULLED:
            assert registry.pull_ok("lib/pull", tag, all=True), tag
        assert registry.pull_ok("lib/else", "v1")
        assert served_exactly(registry, only(scenario, "lib/pull", PULLED)) == []


def test_the_access_log_tells_the_same_pulls(pulled, tmp_path):
    root, _, rotated, json_log, _, access_log = pulled
    result = retain(root, "--repo", "lib/pull", "--keep-pulled-within", "1h", "--pull-log", str(rotated),
                    "--pull-log", str(json_log), "--pull-log", str(access_log), "--dry-run", "--json")
    assert result.returncode == 4, result.stderr
    (decided,) = orjson.loads(result.stdout)["retain"]["repositories"]
    assert {t["tag"] for t in decided["kept"]} == PULLED


def test_logs_that_do_not_reach_back_over_the_window_are_refused_with_exit_8(pulled):
    root, _, _, json_log, text_log, _ = pulled
    before = registry_tree(root)
    result = retain(root, "--repo", "lib/pull", "--keep-pulled-within", "1h", "--pull-log", str(json_log),
                    "--pull-log", str(text_log), "--yes")
    assert result.returncode == 8
    (line,) = result.stderr.splitlines()
    assert line.startswith("registry-fsck: error: the pull logs do not cover keep-pulled-within: their earliest line")
    assert registry_tree(root) == before


# keep-last by the image config's created.


def created_at(image: images.Image, created: str | None) -> images.Image:
    """The image with its config's `created` set (None: left out, as some builders do)."""
    config = json.loads(image.config.data)
    if created is None:
        del config["created"]
    else:
        config["created"] = created
    blob = images.Blob(image.config.media_type, images.canonical_json(config))
    return replace(image, config=blob, manifest=images.image_manifest(blob, [layer.blob for layer in image.layers]))


def index_of(seed: str, *children: images.Image) -> images.Index:
    body = {
        "schemaVersion": 2,
        "mediaType": images.OCI_INDEX,
        "manifests": [c.manifest.descriptor(platform=c.platform.as_dict()) for c in children],
    }
    return images.Index(children, images.Blob(images.OCI_INDEX, images.canonical_json(body)))


def test_keep_last_by_created_orders_by_the_config_a_list_by_its_newest_child_and_falls_back_to_the_push(
    registry_binaries, tmp_path
):
    root = tmp_path / "root"
    amd, arm = images.Platform("linux", "amd64"), images.Platform("linux", "arm64", "v8")
    with Registry(root, workdir=tmp_path / "push") as registry:
        with tempfile.TemporaryDirectory(dir=registry.workdir, prefix="layouts-") as layouts:
            rec = Recorder(registry, Path(layouts))
            rec.push(created_at(images.make_image("built/new", 1), "2026-01-01T00:00:00Z"), "lib/built", "new-build")
            rec.push(index_of("built/multi",
                              created_at(images.make_image("built/multi.amd", 1, platform=amd), "2019-01-01T00:00:00Z"),
                              created_at(images.make_image("built/multi.arm", 1, platform=arm), "2025-06-01T00:00:00Z")),
                     "lib/built", "multi", fmt="oci")
            rec.push(created_at(images.make_image("built/none", 1), None), "lib/built", "no-created")
            rec.push(created_at(images.make_image("built/old", 1), "2020-01-01T00:00:00Z"), "lib/built", "old-build")
            scenario = rec.freeze("built")
    set_pushed(root, "lib/built", {"new-build": 5, "multi": 4, "no-created": 3, "old-build": 1})
    by_push = orjson.loads(retain(root, "--repo", "lib/built", "--keep-last", "3", "--dry-run", "--json").stdout)
    assert [t["tag"] for t in by_push["retain"]["repositories"][0]["removed"]] == ["new-build"]
    result = retain(root, "--repo", "lib/built", "--keep-last", "3", "--by", "created", "--yes", "--json")
    assert result.returncode == 1, result.stderr
    (decided,) = orjson.loads(result.stdout)["retain"]["repositories"]
    # no-created ordered by its push time (3 h ago): newer than any build date here.
    pushed = os.stat(tree.tag_current_link(root, "lib/built", "no-created")).st_mtime
    assert [(t["tag"], t["time"]) for t in decided["kept"]] == [
        ("no-created", datetime.fromtimestamp(pushed, timezone.utc).isoformat(timespec="milliseconds")[:-6] + "Z"),
        ("new-build", "2026-01-01T00:00:00.000Z"), ("multi", "2025-06-01T00:00:00.000Z"),
    ]
    assert [t["tag"] for t in decided["removed"]] == ["old-build"]
    assert decided["notes"] == ["no created in the image config of no-created: ordered by push time"]
    with Registry(root, workdir=tmp_path / "after") as registry:
        assert sorted(registry.tags("lib/built")) == ["multi", "new-build", "no-created"]
        assert registry.pull_ok("lib/built", "multi", all=True)
        assert served_exactly(registry, only(scenario, "lib/built", {"multi", "new-build", "no-created"})) == []
