"""Registry 2.8's garbage collector as a small model, the audit's liveness rule beside it,
the differential check that compares both with the real `garbage-collect` and the audit,
and a seeded generator of random registry trees built through the real registry.

The model of 2.8's mark phase (`registry/storage/garbagecollect.go`, 2.8.x):

- only repositories holding `_layers` are enumerated (the catalog walk);
- for each of their revision links whose manifest data is stored: without
  `--delete-untagged` the manifest is marked; with it, a manifest no tag's `current`
  names is *eligible* instead (listed, its revision deleted) and nothing it references
  is marked through it;
- a marked manifest marks itself and its references (config and layers, schema1
  fsLayers, a list/index's children) as blobs, with no recursion: a child is marked
  as a blob, its own config and layers only if the child itself is marked;
- eligible manifests are not filtered against the mark set (3.0 does that); the sweep
  deletes every stored blob that is not marked;
- with `--delete-untagged`, an eligible manifest in a repository without
  `_manifests/tags/` aborts the run ("failed to retrieve tags unknown repository").

The audit's rule (README "What is live"): per repository, a tag's current is live, a
live list/index's children that are revisions of the repository are live, recursively,
and so is a revision whose `subject` names a live manifest. What a live manifest
references is kept.

Everything here reads the tree only through `tree` and the scenario: never `fsck`.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import tree
from .images import (
    OCI_INDEX,
    Blob,
    Platform,
    canonical_json,
    cosign_tag,
    make_artifact,
    make_image,
    make_index,
    make_layer,
)
from .registry import GcReport, Registry, garbage_collect, parse_gc_output, write_config
from .scenarios import Recorder, Scenario

SEED_ENV = "REGISTRY_FSCK_SEED"
OPS_ENV = "REGISTRY_FSCK_OPS"

# -- facts the models work from ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Facts:
    """What the models need to know about a tree.

    Manifest contents, revisions, tags and blobs come from the scenario (what the
    registry answered); `visible` and `tagless` are directory facts read from disk.
    """

    revisions: Mapping[str, frozenset[str]]  # repo -> manifests with a revision link (data stored)
    currents: Mapping[str, frozenset[str]]  # repo -> manifests a tag's current names
    references: Mapping[str, tuple[str, ...]]  # manifest -> what 2.8's References() returns
    children: Mapping[str, tuple[str, ...]]  # manifest -> list/index entries
    subjects: Mapping[str, str | None]  # manifest -> its OCI subject
    blobs: frozenset[str]  # everything under blobs/
    visible: frozenset[str]  # repositories holding _layers: what 2.8 enumerates
    tagless: frozenset[str]  # repositories without _manifests/tags/

    @property
    def repos(self) -> frozenset[str]:
        return frozenset(self.revisions) | self.visible

    def refs(self, manifest: str) -> tuple[str, ...]:
        return self.references.get(manifest, ())


def facts_of(scenario: Scenario, root: Path) -> Facts:
    repos = tree.repositories(root)
    return Facts(
        revisions={repo: frozenset(d) for repo, d in scenario.revisions.items()},
        currents={repo: frozenset(tags.values()) for repo, tags in scenario.tags.items()},
        references={d: m.references for d, m in scenario.manifests.items()},
        children={d: m.children for d, m in scenario.manifests.items()},
        subjects={d: m.subject for d, m in scenario.manifests.items()},
        blobs=frozenset(scenario.blobs),
        visible=frozenset(r for r in repos if (tree.repo_dir(root, r) / "_layers").is_dir()),
        tagless=frozenset(
            r
            for r in repos
            if (tree.repo_dir(root, r) / "_manifests").is_dir()
            and not (tree.repo_dir(root, r) / "_manifests" / "tags").is_dir()
        ),
    )


def disagreements_with_disk(facts: Facts, root: Path) -> list[str]:
    """Where the facts are not what the tree holds (a harness bug, not a finding)."""
    problems = []
    if tree.blob_digests(root) != facts.blobs:
        problems.append(f"blobs: disk-only {sorted(tree.blob_digests(root) - facts.blobs)}, "
                        f"facts-only {sorted(facts.blobs - tree.blob_digests(root))}")
    for repo in sorted(tree.repositories(root) | set(facts.revisions)):
        on_disk = tree.revision_links(root, repo)
        if on_disk != facts.revisions.get(repo, frozenset()):
            problems.append(f"{repo}: revision links {sorted(on_disk)} != {sorted(facts.revisions.get(repo, ()))}")
        currents = frozenset(tree.tag_current(root, repo, t) for t in tree.tag_names(root, repo))
        if currents != facts.currents.get(repo, frozenset()):
            problems.append(f"{repo}: tag currents {sorted(currents)} != {sorted(facts.currents.get(repo, ()))}")
    return problems


# -- registry 2.8's garbage collector, modelled ---------------------------------------


@dataclass(frozen=True, slots=True)
class GcModel:
    marked_manifests: Mapping[str, frozenset[str]]
    marked_blobs: Mapping[str, frozenset[str]]
    eligible_manifests: Mapping[str, frozenset[str]]
    eligible_blobs: frozenset[str]
    summary: tuple[int, int, int]  # blobs marked, blobs eligible, manifests eligible (repo, digest) pairs
    aborts_in: frozenset[str]  # repositories whose eligible manifests abort the run (no tags/)
    blobs_marked: frozenset[str]  # the whole mark set


def gc_model(facts: Facts, delete_untagged: bool) -> GcModel:
    marked: set[str] = set()
    marked_manifests: dict[str, set[str]] = {}
    marked_blobs: dict[str, set[str]] = {}
    eligible: dict[str, set[str]] = {}
    for repo in sorted(facts.visible):
        for digest in sorted(facts.revisions.get(repo, ())):
            if delete_untagged and digest not in facts.currents.get(repo, ()):
                eligible.setdefault(repo, set()).add(digest)
                continue
            marked.add(digest)
            marked_manifests.setdefault(repo, set()).add(digest)
            refs = facts.refs(digest)
            marked.update(refs)
            if refs:
                marked_blobs.setdefault(repo, set()).update(refs)
    eligible_blobs = facts.blobs - marked

    def freeze(d: dict[str, set[str]]) -> dict[str, frozenset[str]]:
        return {k: frozenset(v) for k, v in d.items()}

    return GcModel(
        marked_manifests=freeze(marked_manifests),
        marked_blobs=freeze(marked_blobs),
        eligible_manifests=freeze(eligible),
        eligible_blobs=frozenset(eligible_blobs),
        summary=(len(marked), len(eligible_blobs), sum(len(v) for v in eligible.values())),
        aborts_in=frozenset(r for r in eligible if r in facts.tagless),
        blobs_marked=frozenset(marked),
    )


# -- the audit's rule, modelled ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditModel:
    live: Mapping[str, frozenset[str]]  # repo -> live manifests
    untagged: Mapping[str, frozenset[str]]  # repo -> manifest-untagged
    kept: frozenset[str]  # blobs live manifests are or reference
    marked: frozenset[str]  # blobs any revision of any repository is or references
    orphans: frozenset[str]  # blob-orphan
    unreachable: frozenset[str]  # blob-unreachable

    def through_index_or_subject(self, facts: Facts) -> dict[str, frozenset[str]]:
        """Live manifests no tag names: kept only because a live index lists them or their subject is live."""
        out = {}
        for repo, live in self.live.items():
            extra = live - facts.currents.get(repo, frozenset())
            if extra:
                out[repo] = frozenset(extra)
        return out


def live_closure(facts: Facts, repo: str) -> frozenset[str]:
    revisions = facts.revisions.get(repo, frozenset())
    referrers: dict[str, list[str]] = {}
    for digest in revisions:
        subject = facts.subjects.get(digest)
        if subject:
            referrers.setdefault(subject, []).append(digest)
    live: set[str] = set()
    pending = list(facts.currents.get(repo, ()))
    while pending:
        digest = pending.pop()
        if digest in live:
            continue
        live.add(digest)
        pending.extend(referrers.get(digest, ()))
        pending.extend(c for c in facts.children.get(digest, ()) if c in revisions)
    return frozenset(live)


def audit_model(facts: Facts) -> AuditModel:
    every_revision = {d for digests in facts.revisions.values() for d in digests}
    live = {repo: live_closure(facts, repo) for repo in sorted(facts.repos)}
    kept: set[str] = set()
    for manifests in live.values():
        for digest in manifests:
            kept.add(digest)
            if digest in every_revision:
                kept.update(facts.refs(digest))
    marked = set(every_revision)
    for digest in every_revision:
        marked.update(facts.refs(digest))
    untagged = {
        repo: frozenset(facts.revisions.get(repo, frozenset()) - live[repo])
        for repo in live
        if facts.revisions.get(repo, frozenset()) - live[repo]
    }
    return AuditModel(
        live=live,
        untagged=untagged,
        kept=frozenset(kept),
        marked=frozenset(marked),
        orphans=frozenset(facts.blobs - marked),
        unreachable=frozenset((facts.blobs & marked) - kept),
    )


# -- the differential check ---------------------------------------------------------------


def record_digests(records: Iterable[dict], finding_id: str, repository: str | None = None) -> frozenset[str]:
    return frozenset(
        r["digest"] for r in records if r["id"] == finding_id and (repository is None or r["repository"] == repository)
    )


def record_repos(records: Iterable[dict], finding_id: str) -> frozenset[str]:
    return frozenset(r["repository"] for r in records if r["id"] == finding_id)


def gc_report_of(report) -> dict:
    """A parsed GC report as comparable plain data."""
    return {
        "marked_manifests": {k: set(v) for k, v in report.marked_manifests.items()},
        "marked_blobs": {k: set(v) for k, v in report.marked_blobs.items()},
        "eligible_manifests": {k: set(v) for k, v in report.eligible_manifests.items()},
        "eligible_blobs": set(report.eligible_blobs),
        "summary": report.summary,
    }


def model_report(model: GcModel) -> dict:
    return {
        "marked_manifests": {k: set(v) for k, v in model.marked_manifests.items()},
        "marked_blobs": {k: set(v) for k, v in model.marked_blobs.items()},
        "eligible_manifests": {k: set(v) for k, v in model.eligible_manifests.items()},
        "eligible_blobs": set(model.eligible_blobs),
        "summary": model.summary,
    }


def add_missing_tag_dirs(root: Path, facts: Facts) -> list[str]:
    """Give every repository without `_manifests/tags/` an empty one (as a tag deleted
    through the API leaves behind): the least change after which 2.8's -m runs.
    Tags, revisions and blobs stay as they were. Returns the repositories changed."""
    changed = []
    for repo in sorted(facts.tagless):
        (tree.repo_dir(root, repo) / "_manifests" / "tags").mkdir()
        changed.append(repo)
    return changed


@dataclass(frozen=True, slots=True)
class GcRuns:
    """Both dry runs of the real `garbage-collect` on one tree, parsed."""

    plain: GcReport
    untagged: GcReport  # on the tree, or on its copy with tags/ added when the tree aborts -m
    untagged_aborted: subprocess.CompletedProcess | None  # the aborted -m run on the tree as given
    untagged_facts: Facts  # the facts of the tree -m ran on


def run_gc_dry_runs(root: Path, facts: Facts, workdir: Path, where: str = "") -> GcRuns:
    """`--dry-run`, then `--dry-run --delete-untagged`; where -m aborts on a repository with
    revisions but no tags/, -m runs again on a copy with empty tags/ directories added."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_config(root, workdir / "gc.yml")
    plain = garbage_collect(config, dry_run=True)
    assert plain.returncode == 0, f"plain dry run failed: {plain.stderr}{where}"
    untagged_facts, aborted = facts, None
    result = garbage_collect(config, dry_run=True, delete_untagged=True)
    if result.returncode != 0 and "failed to retrieve tags unknown repository" in result.stderr and facts.tagless:
        aborted = result
        processable = tree.copy_tree(root, workdir / "with-tags-dirs")
        add_missing_tag_dirs(processable, facts)
        untagged_facts = replace(facts, tagless=frozenset())
        result = garbage_collect(write_config(processable, workdir / "gc-with-tags-dirs.yml"), dry_run=True,
                                 delete_untagged=True)
    assert result.returncode == 0, f"-m dry run failed: {result.stderr}{where}"
    return GcRuns(parse_gc_output(plain.stdout), parse_gc_output(result.stdout), aborted, untagged_facts)


def check_gc_against_model(facts: Facts, runs: GcRuns, where: str = "") -> tuple[GcModel, GcModel]:
    """Both dry runs print exactly what the 2.8 model predicts, and -m aborts exactly where it says."""
    plain_model = gc_model(facts, delete_untagged=False)
    assert plain_model.eligible_manifests == {} and not plain_model.aborts_in
    assert gc_report_of(runs.plain) == model_report(plain_model), (
        f"garbage-collect --dry-run differs from the 2.8 model{where}"
    )
    predicted_abort = gc_model(facts, delete_untagged=True).aborts_in
    assert bool(predicted_abort) == (runs.untagged_aborted is not None), (
        f"-m abort predicted in {sorted(predicted_abort)}, real run aborted: {runs.untagged_aborted is not None}{where}"
    )
    if runs.untagged_aborted is not None:
        # 2.8 stops at the first such repository it enumerates.
        assert any(f"unknown repository name={r}" in runs.untagged_aborted.stderr for r in predicted_abort), (
            runs.untagged_aborted.stderr + where
        )
    untagged_model = gc_model(runs.untagged_facts, delete_untagged=True)
    assert not untagged_model.aborts_in
    assert gc_report_of(runs.untagged) == model_report(untagged_model), (
        f"garbage-collect --dry-run --delete-untagged differs from the 2.8 model{where}"
    )
    return plain_model, untagged_model


def invisible_repos(facts: Facts) -> frozenset[str]:
    """Repositories holding revisions that 2.8 does not enumerate (no _layers)."""
    return frozenset(r for r, d in facts.revisions.items() if d and r not in facts.visible)


def check_blob_orphans(facts: Facts, runs: GcRuns, records: list[dict], where: str = "") -> frozenset[str]:
    """blob-orphan is exactly what the plain dry run deletes, except the blobs only
    repositories 2.8 cannot see reference (named, returned: `repo-invisible`)."""
    every_repo_seen = gc_model(replace(facts, visible=facts.repos), delete_untagged=False)
    invisible_loss = frozenset(runs.plain.eligible_blobs - every_repo_seen.eligible_blobs)
    orphans = record_digests(records, "blob-orphan")
    assert orphans == audit_model(facts).orphans, f"blob-orphan differs from the audit rule{where}"
    assert orphans == runs.plain.eligible_blobs - invisible_loss, (
        f"blob-orphan is not what the plain dry run deletes (minus invisible repositories' blobs){where}"
    )
    assert not invisible_loss or invisible_repos(facts), f"only invisible repositories lose blobs{where}"
    return invisible_loss


@dataclass(frozen=True, slots=True)
class UntaggedDifference:
    """Where the audit keeps what `garbage-collect --delete-untagged` (2.8) deletes."""

    through_index_or_subject: Mapping[str, frozenset[str]]  # manifests -m lists that a live index or subject keeps
    children_loss: frozenset[str]  # blobs -m deletes that those manifests are or reference
    invisible_loss: frozenset[str]  # blobs -m deletes that live manifests of invisible repositories use


def check_audit_against_delete_untagged(
    facts: Facts, runs: GcRuns, records: list[dict], where: str = ""
) -> UntaggedDifference:
    """manifest-untagged and blob-orphan ∪ blob-unreachable are what the -m dry run deletes,
    minus the named differences, each derived from the facts."""
    audit = audit_model(facts)
    marked = gc_model(runs.untagged_facts, delete_untagged=True).blobs_marked
    through = {r: d for r, d in audit.through_index_or_subject(facts).items() if r in facts.visible}
    children_loss: set[str] = set()
    for manifests in through.values():
        for digest in manifests:
            children_loss.add(digest)
            children_loss.update(facts.refs(digest))
    invisible = invisible_repos(facts)
    invisible_loss: set[str] = set()
    for repo in invisible:
        for digest in audit.live.get(repo, ()):
            invisible_loss.add(digest)
            invisible_loss.update(facts.refs(digest))

    for repo in sorted(facts.repos):
        flagged = record_digests(records, "manifest-untagged", repo)
        assert flagged == audit.untagged.get(repo, frozenset()), f"{repo}: manifest-untagged differs from the rule{where}"
        if repo not in facts.visible:
            assert repo not in runs.untagged.eligible_manifests
            continue
        listed = runs.untagged.eligible_manifests.get(repo, frozenset())
        kept_here = through.get(repo, frozenset())
        assert kept_here <= listed, f"{repo}: 2.8 -m does not list every index child and referrer{where}"
        assert flagged == listed - kept_here, (
            f"{repo}: manifest-untagged != -m eligible manifests minus index children and referrers{where}"
        )
    assert record_digests(records, "manifest-untagged") == frozenset().union(*audit.untagged.values()), (
        f"manifest-untagged outside the known repositories{where}"
    )
    garbage = record_digests(records, "blob-orphan") | record_digests(records, "blob-unreachable")
    assert garbage == audit.orphans | audit.unreachable, f"blob garbage differs from the audit rule{where}"
    assert garbage == runs.untagged.eligible_blobs - children_loss - invisible_loss, (
        f"blob-orphan ∪ blob-unreachable != -m eligible blobs minus the named differences{where}"
    )
    reported_invisible = record_repos(records, "repo-invisible")
    assert invisible <= reported_invisible <= facts.repos - facts.visible, (
        f"repo-invisible {sorted(reported_invisible)} vs repositories 2.8 cannot see {sorted(invisible)}{where}"
    )
    return UntaggedDifference(
        through_index_or_subject=through,
        children_loss=frozenset(children_loss - marked),
        invisible_loss=frozenset(invisible_loss - marked),
    )


@dataclass(frozen=True, slots=True)
class Differential:
    runs: GcRuns
    invisible_plain_loss: frozenset[str]
    untagged: UntaggedDifference


def check_differential(root: Path, facts: Facts, records: list[dict], workdir: Path, context: str = "") -> Differential:
    """The whole differential on one tree: facts == disk, GC == model, audit == GC minus
    the named differences. `records`: the audit's JSON finding records for `root`;
    `context` (e.g. the seed and the operations) goes into every assertion message."""
    where = f"\n{context}" if context else ""
    problems = disagreements_with_disk(facts, root)
    assert not problems, "harness facts differ from the tree:\n" + "\n".join(problems) + where
    runs = run_gc_dry_runs(root, facts, workdir, where)
    check_gc_against_model(facts, runs, where)
    invisible_plain_loss = check_blob_orphans(facts, runs, records, where)
    untagged = check_audit_against_delete_untagged(facts, runs, records, where)
    return Differential(runs, invisible_plain_loss, untagged)


# -- pushes the skopeo-based Recorder does not do ---------------------------------------------


def push_nested_index(rec: Recorder, repo: str, tag: str, seed: str) -> str:
    """An OCI index whose entries are another index (two platforms) and an image; by HTTP,
    children first (2.8 checks that every entry exists). Returns the outer digest."""
    inner = make_index(f"{seed}/inner")
    leaf = make_image(f"{seed}/leaf", layers=1, platform=Platform("linux", "riscv64"))
    for image in (*inner.images, leaf):
        rec.upload_blobs(repo, (image.config, *(layer.blob for layer in image.layers)))
        rec.put_manifest(repo, image.digest, image.manifest)
    rec.put_manifest(repo, inner.digest, inner.manifest)
    outer = Blob(
        OCI_INDEX,
        canonical_json({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [inner.manifest.descriptor(), leaf.manifest.descriptor(platform=leaf.platform.as_dict())],
        }),
    )
    return rec.put_manifest(repo, tag, outer)


def push_by_digest(rec: Recorder, repo: str, seed: str) -> str:
    image = make_image(seed, layers=1)
    rec.upload_blobs(repo, (image.config, *(layer.blob for layer in image.layers)))
    return rec.put_manifest(repo, image.digest, image.manifest)


def push_referrer(rec: Recorder, repo: str, subject: str, seed: str, tag: str | None = None) -> str:
    """An OCI artifact whose `subject` is `subject`, PUT by digest (or under `tag`)."""
    served = rec.registry.get_manifest(repo, subject)
    config, layer, manifest = make_artifact(
        seed, artifact_type="application/spdx+json", subject=Blob(served.media_type, served.body),
        layer_media_type="application/spdx+json",
    )
    rec.upload_blobs(repo, (config, layer))
    return rec.put_manifest(repo, tag or manifest.digest, manifest)


# -- the random generator -----------------------------------------------------------------------

REPOS = ("app", "lib", "lib/base")
UPLOAD_ONLY_REPO = "scratch/pending"
DIGEST_ONLY_REPO = "digest/only"  # pushed to by digest only: no tags/, so 2.8 -m aborts
TAGS = ("latest", "v1", "v2")
# (operation, weight)
OPERATIONS = (
    ("push_image", 5),
    ("push_index", 2),
    ("repush_tag", 3),
    ("push_referrer", 2),
    ("sign", 1),
    ("delete", 2),
    ("orphan_blob", 1),
    ("start_upload", 1),
    ("push_by_digest", 2),
    ("push_nested", 1),
)


# After the operations, offline: `_layers` of one repository removed (as in a tree 3.x
# wrote, or a partial copy): a repository 2.8's GC cannot see.
FINAL_STEPS = ("drop_layers",)
DROP_LAYERS_CHANCE = 0.3


def short(digest: str) -> str:
    return digest.split(":", 1)[1][:12]


@dataclass(slots=True)
class RandomRun:
    seed: int
    ops: int
    log: list[str] = field(default_factory=list)
    truncated: bool = False

    def context(self) -> str:
        lines = [f"seed {self.seed}, {self.ops} ops (replay: {SEED_ENV}={self.seed} {OPS_ENV}={self.ops})"]
        lines += [f"  {i:2}. {entry}" for i, entry in enumerate(self.log, 1)]
        if self.truncated:
            lines.append("  (time budget exhausted: later operations skipped)")
        return "\n".join(lines)


class Generator:
    """Random registry operations through the real registry, from one seed."""

    def __init__(self, rec: Recorder, run: RandomRun) -> None:
        self.rec = rec
        self.run = run
        self.rng = random.Random(f"registry-fsck/random/{run.seed}")
        self.counter = 0
        self.base = make_layer(f"rand/{run.seed}/base", size=1024)

    def _name(self, kind: str) -> str:
        self.counter += 1
        return f"rand/{self.run.seed}/{kind}{self.counter}"

    def _image(self):
        k = self.rng.randrange(6)
        shared = (self.base,) if k % 3 == 0 else ()
        return k, make_image(f"rand/{self.run.seed}/img{k}", layers=1 + k % 2, shared=shared)

    def _with_revisions(self) -> list[str]:
        return [r for r in REPOS if self.rec.revisions.get(r)]

    def _tagged(self) -> list[tuple[str, str]]:
        return sorted((r, t) for r, tags in self.rec.tags.items() for t in tags)

    def step(self) -> str:
        names = [name for name, _ in OPERATIONS]
        weights = [w for _, w in OPERATIONS]
        op = self.rng.choices(names, weights)[0]
        if op == "repush_tag" and not self._tagged():
            op = "push_image"
        if op in ("push_referrer", "sign", "delete") and not self._with_revisions():
            op = "push_image"
        return getattr(self, op)()

    def push_image(self) -> str:
        repo, tag, fmt = self.rng.choice(REPOS), self.rng.choice(TAGS), self.rng.choice(("oci", "v2s2"))
        k, image = self._image()
        digest = self.rec.push(image, repo, tag, fmt=fmt)
        return f"push_image img{k} {fmt} -> {repo}:{tag} = {short(digest)}"

    def repush_tag(self) -> str:
        repo, tag = self.rng.choice(self._tagged())
        fmt = self.rng.choice(("oci", "v2s2"))
        k, image = self._image()
        before = self.rec.tags[repo][tag]
        digest = self.rec.push(image, repo, tag, fmt=fmt)
        return f"repush_tag img{k} {fmt} -> {repo}:{tag} = {short(digest)} (was {short(before)})"

    def push_index(self) -> str:
        repo, tag, fmt = self.rng.choice(REPOS), self.rng.choice(TAGS), self.rng.choice(("oci", "v2s2"))
        k = self.rng.randrange(3)
        index = make_index(f"rand/{self.run.seed}/idx{k}")
        digest = self.rec.push(index, repo, tag, fmt=fmt)
        return f"push_index idx{k} {fmt} -> {repo}:{tag} = {short(digest)}"

    def push_nested(self) -> str:
        repo, tag = self.rng.choice(REPOS), self.rng.choice(TAGS)
        digest = push_nested_index(self.rec, repo, tag, self._name("nested"))
        return f"push_nested -> {repo}:{tag} = {short(digest)}"

    def push_referrer(self) -> str:
        repo = self.rng.choice(self._with_revisions())
        subject = self.rng.choice(sorted(self.rec.revisions[repo]))
        digest = push_referrer(self.rec, repo, subject, self._name("ref"))
        return f"push_referrer {repo}@{short(digest)} subject {short(subject)}"

    def sign(self) -> str:
        repo = self.rng.choice(self._with_revisions())
        subject = self.rng.choice(sorted(self.rec.revisions[repo]))
        config, layer, signature = make_artifact(self._name("sig"))
        self.rec.upload_blobs(repo, (config, layer))
        digest = self.rec.put_manifest(repo, cosign_tag(subject), signature)
        return f"sign {repo}:{cosign_tag(subject)[:19]}... = {short(digest)}"

    def delete(self) -> str:
        repo = self.rng.choice(self._with_revisions())
        digest = self.rng.choice(sorted(self.rec.revisions[repo]))
        self.rec.delete(repo, digest)
        return f"delete {repo}@{short(digest)}"

    def drop_layers(self) -> str | None:
        candidates = sorted(r for r, d in self.rec.revisions.items() if d)
        if not candidates or self.rng.random() >= DROP_LAYERS_CHANCE:
            return None
        repo = self.rng.choice(candidates)
        shutil.rmtree(tree.repo_dir(self.rec.registry.root, repo) / "_layers")
        return f"drop_layers {repo} (offline)"

    def orphan_blob(self) -> str:
        repo = self.rng.choice(REPOS)
        digest = self.rec.upload_blob(repo, make_layer(self._name("orphan"), size=512).blob.data)
        return f"orphan_blob {repo} {short(digest)}"

    def start_upload(self) -> str:
        repo = self.rng.choice((*REPOS, UPLOAD_ONLY_REPO))
        stale = self.rng.random() < 0.5
        self.rec.start_upload(repo, stale=stale)
        return f"start_upload {repo}{' (stale)' if stale else ''}"

    def push_by_digest(self) -> str:
        # Mostly into a repository that already has tags/: 2.8 -m aborts on revisions
        # without tags/ (check_differential asserts the abort, then runs -m with tags/ added).
        with_tags = [r for r in REPOS if (tree.repo_dir(self.rec.registry.root, r) / "_manifests" / "tags").is_dir()]
        repo = self.rng.choice(with_tags or list(REPOS))
        if self.rng.random() < 0.2:
            repo = DIGEST_ONLY_REPO
        digest = push_by_digest(self.rec, repo, self._name("bydigest"))
        return f"push_by_digest {repo}@{short(digest)}"


def replay_seed() -> int | None:
    value = os.environ.get(SEED_ENV)
    return int(value) if value else None


def replay_ops(default: int) -> int:
    value = os.environ.get(OPS_ENV)
    return int(value) if value else default


def generate(registry: Registry, seed: int, ops: int, budget: float = 60.0) -> tuple[Scenario, RandomRun]:
    """Run `ops` random operations (fewer if `budget` seconds run out) against `registry`."""
    run = RandomRun(seed, ops)
    deadline = time.monotonic() + budget
    with tempfile.TemporaryDirectory(dir=registry.workdir, prefix="layouts-") as layouts:
        rec = Recorder(registry, Path(layouts))
        gen = Generator(rec, run)
        for _ in range(ops):
            if time.monotonic() > deadline:
                run.truncated = True
                break
            try:
                run.log.append(gen.step())
            except Exception as error:
                raise AssertionError(f"operation failed: {error}\n{run.context()}") from error
        if not run.truncated and (dropped := gen.drop_layers()):
            run.log.append(dropped)
        return rec.freeze(f"random-{seed}"), run
