"""`retain`'s policy: which tags stay, rule by rule, and why. Pure: the facts it judges (push times, the
images' `created`, the pulls) are gathered by the service and handed in.

A policy is an ordered list of rules; a repository goes by the first rule whose `repos` matches it, and a
repository no rule matches is untouched (zot's retention policies). A tag is kept if any keep clause of
its rule keeps it:

- `keep-last N`: the N most recently pushed tags (push time: the mtime of the tag's `current` link) or,
  with `by = "created"`, the N with the newest image config `created` (a list/index: its newest child's;
  a missing `created` falls back to the push time, noted). Tags are counted, not digests; ties at the
  boundary are all kept, and said;
- `keep-tags`: tag names or globs (`latest`, `v*`);
- `keep-within DURATION`: pushed more recently than that;
- `keep-pulled-within DURATION`: pulled in that window according to the registry's request log
  (`pulllog`): by tag, by digest (the tags naming it), or a child of a list/index (the tags naming the
  index);
- `--protect` entries keep what they name.

What is not a tag of its own is never counted and follows its subject: cosign-style
`sha256-<hex>.sig/.att/.sbom` tags (the cascade removes them with their subject) and tags naming an
OCI referrer (a manifest with a `subject`). A broken tag (no usable `current`) is never removed, nor a
tag whose push time cannot be read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from . import durations, layout, match
from .layout import Digest
from .manifests import Kind, Role
from .match import Matcher
from .plan import Protection
from .pulllog import Pulls, parse_time
from .reach import Graph, closure
from .removal import Removal, RemovalPlan, cosign_subject
from .scan import Inventory, Repository

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

PUSHED = "pushed"
CREATED = "created"
MAX_KEEP_LAST = 1_000_000
# Far beyond any registry's age, and far enough below timedelta's limit that now - it is a date.



class PolicyError(ValueError):
    """A rule or policy file that cannot be used: one line saying what and where (a usage error)."""


# Rules.


@dataclass(frozen=True, slots=True)
class Duration:
    text: str  # as written, for the clause's name
    delta: timedelta


@dataclass(frozen=True, slots=True)
class Rule:
    repos: tuple[Matcher, ...]
    keep_last: int | None = None
    by: str = PUSHED
    keep_tags: tuple[Matcher, ...] = ()
    keep_within: Duration | None = None
    keep_pulled_within: Duration | None = None
    label: str = "rule 1"

    def selects(self, repository: str) -> bool:
        return any(m.matches(repository) for m in self.repos)

    @property
    def clauses(self) -> tuple[str, ...]:
        """Its keep clauses, named as the plan names them."""
        named = []
        if self.keep_last is not None:
            named.append(f"keep-last {self.keep_last}" + (" by created" if self.by == CREATED else ""))
        named += [f"keep-tags {m.text}" for m in self.keep_tags]
        if self.keep_within is not None:
            named.append(f"keep-within {self.keep_within.text}")
        if self.keep_pulled_within is not None:
            named.append(f"keep-pulled-within {self.keep_pulled_within.text}")
        return tuple(named)

    def describe(self) -> str:
        return f"{self.label} (repos {', '.join(m.text for m in self.repos)}: {', '.join(self.clauses) or 'protect'})"


@dataclass(frozen=True, slots=True)
class Policy:
    rules: tuple[Rule, ...]

    def rule_for(self, repository: str) -> Rule | None:
        """The first rule that selects it (None: untouched)."""
        return next((rule for rule in self.rules if rule.selects(repository)), None)

    def assign(self, names: Iterable[str]) -> dict[str, Rule]:
        """Each repository a rule selects, with its rule, in name order."""
        assigned = {}
        for name in sorted(names):
            rule = self.rule_for(name)
            if rule is not None:
                assigned[name] = rule
        return assigned

    @property
    def reads_pulls(self) -> bool:
        return any(rule.keep_pulled_within is not None for rule in self.rules)

    @property
    def pull_window(self) -> timedelta | None:
        """The longest keep-pulled-within: what the pull logs must cover."""
        windows = [r.keep_pulled_within.delta for r in self.rules if r.keep_pulled_within is not None]
        return max(windows) if windows else None

    @property
    def by_created(self) -> bool:
        return any(rule.by == CREATED and rule.keep_last is not None for rule in self.rules)


def parse_duration(text: str) -> Duration:
    """A duration longer than 0 (zero would keep nothing)."""
    try:
        length = durations.parse_duration(text)
    except durations.DurationError as error:
        raise PolicyError(str(error)) from None
    if length <= timedelta(0):
        raise PolicyError(f"{text!r} keeps nothing: give a duration longer than 0")
    return Duration(text.strip().replace(" ", ""), length)


def repository_pattern(text: str) -> Matcher:
    """An exact repository name, or an anchored glob when it holds `*`, `?` or `[`."""
    glob = match.is_glob(text)
    valid = match.is_repository_pattern(text) if glob else all(
        layout.valid_repository_component(c) for c in text.split("/")
    )
    if not valid:
        raise PolicyError(f"{text!r} is not a repository name or pattern")
    try:
        return match.repository_matcher(text, glob)
    except match.PatternError as error:
        raise PolicyError(str(error)) from None


def tag_pattern(text: str) -> Matcher:
    glob = match.is_glob(text)
    if not (match.is_tag_pattern(text) if glob else layout.valid_tag(text)):
        raise PolicyError(f"{text!r} is not a tag or tag pattern")
    try:
        return match.tag_matcher(text, glob)
    except match.PatternError as error:
        raise PolicyError(str(error)) from None


def keep_last(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError(f"keep-last must be a whole number, not {value!r}")
    if not 1 <= value <= MAX_KEEP_LAST:
        raise PolicyError(f"keep-last {value}: give a number from 1 to {MAX_KEEP_LAST}")
    return value


def make_rule(
    repos: Iterable[str], *, keep_last_n: int | None = None, by: str | None = None, keep_tags: Iterable[str] = (),
    keep_within: str | None = None, keep_pulled_within: str | None = None, label: str = "rule 1",
    protecting: bool = False,
) -> Rule:
    """One rule from its parts as written (the command line's options, a policy file's table). `protecting`:
    --protect entries are given, and act as a keep clause."""
    repos = list(repos)
    if not repos:
        raise PolicyError(f"{label}: no repositories: give repos (names or globs such as team/*)")
    if by is not None and by not in (PUSHED, CREATED):
        raise PolicyError(f"{label}: by must be {PUSHED!r} or {CREATED!r}, not {by!r}")
    if by is not None and keep_last_n is None:
        raise PolicyError(f"{label}: by orders keep-last: give keep-last too")
    rule = Rule(
        tuple(repository_pattern(r) for r in repos),
        keep_last(keep_last_n) if keep_last_n is not None else None,
        by or PUSHED,
        tuple(tag_pattern(t) for t in keep_tags),
        parse_duration(keep_within) if keep_within is not None else None,
        parse_duration(keep_pulled_within) if keep_pulled_within is not None else None,
        label,
    )
    if not rule.clauses and not protecting:
        raise PolicyError(
            f"{label}: no keep clause: give keep-last, keep-tags, keep-within, keep-pulled-within or --protect "
            "(a rule that keeps nothing would remove every tag)"
        )
    return rule


# The policy file.

_RULE_KEYS = {"repos", "keep-last", "by", "keep-tags", "keep-within", "keep-pulled-within"}


def parse_policy(text: str, protecting: bool = False) -> Policy:
    """A TOML policy: `[[rule]]` tables, in order (first match wins). Raises PolicyError, one line."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise PolicyError(f"not TOML: {error}") from None
    unknown = sorted(set(document) - {"rule"})
    if unknown:
        raise PolicyError(f"unknown key {unknown[0]!r} (a policy holds [[rule]] tables)")
    tables = document.get("rule")
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise PolicyError("no rules: a policy holds one or more [[rule]] tables")
    rules = []
    for number, table in enumerate(tables, 1):
        label = f"rule {number}"
        unknown = sorted(set(table) - _RULE_KEYS)
        if unknown:
            raise PolicyError(f"{label}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_RULE_KEYS))})")
        try:
            rules.append(make_rule(
                _strings(table, "repos", label),
                keep_last_n=_typed(table, "keep-last", int, label),
                by=_typed(table, "by", str, label),
                keep_tags=_strings(table, "keep-tags", label),
                keep_within=_typed(table, "keep-within", str, label),
                keep_pulled_within=_typed(table, "keep-pulled-within", str, label),
                label=label,
                protecting=protecting,
            ))
        except PolicyError as error:
            message = str(error)
            raise PolicyError(message if message.startswith(label) else f"{label}: {message}") from None
    return Policy(tuple(rules))


def _strings(table: Mapping[str, object], key: str, label: str) -> list[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{label}: {key} must be a list of strings, such as [\"team/*\"]")
    return list(value)


def _typed(table: Mapping[str, object], key: str, kind: type, label: str):
    value = table.get(key)
    if value is None:
        return None
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        wanted = "a whole number" if kind is int else "a string"
        raise PolicyError(f"{label}: {key} must be {wanted}, not {value!r}")
    return value


# What the decision needs from the tree.


@dataclass(frozen=True, slots=True)
class Facts:
    """Gathered for the repositories a rule selects only."""

    pushed: Mapping[tuple[str, str], float | None]  # (repository, tag) -> mtime of its current link; None: unknown
    created: Mapping[Digest, float | None] = field(default_factory=dict)  # image manifest -> its config's created


def created_sources(assigned: Mapping[str, Rule], inventory: Inventory, graph: Graph) -> dict[Digest, Digest]:
    """For rules ordering keep-last by created: each image manifest whose `created` is needed, with its config."""
    wanted: dict[Digest, Digest] = {}
    for name, rule in assigned.items():
        if rule.keep_last is None or rule.by != CREATED:
            continue
        repository = inventory.repositories[name]
        for tag in repository.tags.values():
            if tag.current is None:
                continue
            for image in _images(graph, repository, tag.current):
                manifest = graph.manifest(image)
                config = next((r.digest for r in manifest.references if r.role is Role.CONFIG), None)
                if config is not None:
                    wanted[image] = config
    return wanted


def parse_created(raw: bytes) -> float | None:
    """The `created` of an image config as seconds since the epoch; None when missing or not a date."""
    try:
        document = json.loads(raw)
    except ValueError:
        return None
    value = document.get("created") if isinstance(document, dict) else None
    return parse_time(value) if isinstance(value, str) else None


def _images(graph: Graph, repository: Repository, digest: Digest) -> list[Digest]:
    """The image manifests `digest` is or holds as children (recursively), stored in the repository."""
    found, seen, pending = [], set(), [digest]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        manifest = graph.manifest(current)
        if manifest is None:
            continue
        if manifest.kind is Kind.INDEX:
            pending.extend(child for child in manifest.child_digests() if child in repository.revisions)
        elif manifest.kind is Kind.IMAGE:
            found.append(current)
    return found


def _children(graph: Graph, repository: Repository, digest: Digest) -> set[Digest]:
    """`digest` and the list/index children it holds, recursively (not its referrers)."""
    seen, pending = set(), [digest]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        manifest = graph.manifest(current)
        if manifest is not None:
            pending.extend(child for child in manifest.child_digests() if child in repository.revisions)
    return seen


# The decision.

KEPT_BROKEN = "broken tag: never removed by retain"
KEPT_UNKNOWN_TIME = "push time unreadable: never removed"
PROTECT = "protect"


@dataclass(frozen=True, slots=True)
class TagDecision:
    tag: str
    digest: Digest | None
    kept: bool
    clause: str  # kept: the clauses keeping it; removed: the rule's clauses, none of which keeps it
    time: float | None = None  # what keep-last ordered it by (push time, or created)
    note: str | None = None  # created missing; a tie at the boundary
    follows: Digest | None = None  # a signature or referrer tag: the subject it follows


@dataclass(frozen=True, slots=True)
class RepositoryDecision:
    repository: str
    rule: str
    tags: tuple[TagDecision, ...]  # newest first; tags that follow a subject last
    notes: tuple[str, ...] = ()

    @property
    def kept(self) -> tuple[TagDecision, ...]:
        return tuple(t for t in self.tags if t.kept)

    @property
    def removed(self) -> tuple[TagDecision, ...]:
        return tuple(t for t in self.tags if not t.kept)


@dataclass(frozen=True, slots=True)
class Decisions:
    repositories: tuple[RepositoryDecision, ...]

    def removal(self) -> Removal:
        """The tags to remove, each with its reason `retain: <clauses>`; their cascade is `removal`'s."""
        return Removal(tags={
            (r.repository, t.tag): f"retain: {t.clause}" for r in self.repositories for t in r.removed
        })


def decide(
    policy: Policy, inventory: Inventory, graph: Graph, facts: Facts, now: float, pulls: Pulls | None = None,
    protection: Protection = Protection(),
) -> Decisions:
    """Per repository a rule selects: which tags stay and which go, each with the clause that decided it."""
    by_repository = _pulls_by_repository(pulls)
    decided = []
    for name, rule in policy.assign(inventory.repositories).items():
        decided.append(_decide_repository(
            rule, inventory.repositories[name], graph, facts, now, by_repository.get(name, _NO_PULLS), protection
        ))
    return Decisions(tuple(decided))


_PulledHere = tuple[dict[str, float], dict[Digest, float]]  # one repository's pulls: by tag, by digest
_NO_PULLS: _PulledHere = ({}, {})


def _pulls_by_repository(pulls: Pulls | None) -> dict[str, _PulledHere]:
    """The pulls grouped once by repository (a log holds every repository's)."""
    grouped: dict[str, _PulledHere] = {}
    if pulls is None:
        return grouped
    for (name, tag), when in pulls.tags.items():
        grouped.setdefault(name, ({}, {}))[0][tag] = when
    for (name, digest), when in pulls.digests.items():
        grouped.setdefault(name, ({}, {}))[1][digest] = when
    return grouped


def _decide_repository(
    rule: Rule, repository: Repository, graph: Graph, facts: Facts, now: float, pulls: _PulledHere,
    protection: Protection,
) -> RepositoryDecision:
    name = repository.name
    notes: list[str] = []
    decided: dict[str, TagDecision] = {}
    followers: dict[str, Digest] = {}
    counted: list[tuple[str, Digest, float]] = []  # (tag, current, push time)
    for tag in sorted(repository.tags.values(), key=lambda t: t.name):
        subject = cosign_subject(tag.name)
        if subject is None and tag.current is not None:
            manifest = graph.manifest(tag.current)
            subject = manifest.subject if manifest is not None else None
        if tag.current is None:
            decided[tag.name] = TagDecision(tag.name, None, True, KEPT_BROKEN)
        elif subject is not None:
            followers[tag.name] = subject
        elif facts.pushed.get((name, tag.name)) is None:
            decided[tag.name] = TagDecision(tag.name, tag.current, True, KEPT_UNKNOWN_TIME)
        else:
            counted.append((tag.name, tag.current, facts.pushed[(name, tag.name)]))

    order_time, created_notes = _order_times(rule, repository, graph, facts, counted)
    notes += created_notes
    last, ties = _keep_last(rule, counted, order_time)
    if ties:
        notes.append(f"{rule.clauses[0]}: {len(ties)} tags tie at the boundary, all kept: {', '.join(sorted(ties))}")
    pulled_tags, pulled_digests = _pulled(rule, pulls, now)
    within = now - rule.keep_within.delta.total_seconds() if rule.keep_within is not None else None
    removed_clause = ", ".join(rule.clauses) or PROTECT
    for tag_name, current, pushed in counted:
        keeping = []
        if tag_name in last:
            keeping.append(rule.clauses[0])
        keeping += [f"keep-tags {m.text}" for m in rule.keep_tags if m.matches(tag_name)]
        if within is not None and pushed >= within:
            keeping.append(f"keep-within {rule.keep_within.text}")
        if rule.keep_pulled_within is not None and (
            tag_name in pulled_tags or _children(graph, repository, current) & pulled_digests
        ):
            keeping.append(f"keep-pulled-within {rule.keep_pulled_within.text}")
        if _protected(protection, name, tag_name, current):
            keeping.append(PROTECT)
        note = "tie at the keep-last boundary" if tag_name in ties else None
        if rule.by == CREATED and order_time.get(tag_name) == pushed and _created_missing(repository, graph, facts, current):
            note = "no created: push time used"
        decided[tag_name] = TagDecision(
            tag_name, current, bool(keeping), ", ".join(keeping) if keeping else removed_clause,
            order_time.get(tag_name, pushed), note,
        )

    stays = _live_after(repository, graph, decided, protection)
    for tag_name, subject in sorted(followers.items()):
        current = repository.tags[tag_name].current
        if _protected(protection, name, tag_name, current):
            decided[tag_name] = TagDecision(tag_name, current, True, PROTECT, follows=subject)
            continue
        kept = subject in stays
        clause = f"follows its subject {layout.format_digest(subject)}" + ("" if kept else ", which goes")
        decided[tag_name] = TagDecision(tag_name, current, kept, clause, follows=subject)
    ordered = sorted(
        decided.values(),
        key=lambda t: (t.follows is not None, -(t.time if t.time is not None else float("inf")), t.tag),
    )
    return RepositoryDecision(name, rule.describe(), tuple(ordered), tuple(notes))


def _protected(protection: Protection, name: str, tag: str, current: Digest | None) -> bool:
    """A `repo:tag` entry, or a digest entry naming its current: --protect acts as a keep clause."""
    return (name, tag) in protection.tags or current in protection.digests or (name, current) in protection.in_repository


def _order_times(
    rule: Rule, repository: Repository, graph: Graph, facts: Facts, counted: list[tuple[str, Digest, float]]
) -> tuple[dict[str, float], list[str]]:
    """What keep-last orders each tag by: its push time, or its image's newest `created`."""
    if rule.by != CREATED or rule.keep_last is None:
        return {tag: pushed for tag, _, pushed in counted}, []
    times, missing = {}, []
    for tag, current, pushed in counted:
        created = [facts.created.get(image) for image in _images(graph, repository, current)]
        known = [c for c in created if c is not None]
        if known:
            times[tag] = max(known)
        else:
            times[tag] = pushed
            missing.append(tag)
    notes = [f"no created in the image config of {', '.join(missing)}: ordered by push time"] if missing else []
    return times, notes


def _created_missing(repository: Repository, graph: Graph, facts: Facts, current: Digest) -> bool:
    return not any(facts.created.get(image) is not None for image in _images(graph, repository, current))


def _keep_last(
    rule: Rule, counted: list[tuple[str, Digest, float]], order_time: Mapping[str, float]
) -> tuple[set[str], set[str]]:
    """The tags keep-last keeps, and those among them kept only because they tie with the N-th."""
    if rule.keep_last is None or not counted:
        return set(), set()
    ordered = sorted(counted, key=lambda c: (-order_time[c[0]], c[0]))
    if len(ordered) <= rule.keep_last:
        return {tag for tag, _, _ in ordered}, set()
    boundary = order_time[ordered[rule.keep_last - 1][0]]
    kept = {tag for tag, _, _ in ordered if order_time[tag] >= boundary}
    tied = {tag for tag in kept if order_time[tag] == boundary}
    return kept, tied if len(kept) > rule.keep_last else set()


def _pulled(rule: Rule, pulls: _PulledHere, now: float) -> tuple[set[str], set[Digest]]:
    if rule.keep_pulled_within is None:
        return set(), set()
    since = now - rule.keep_pulled_within.delta.total_seconds()
    by_tag, by_digest = pulls
    return {t for t, when in by_tag.items() if when >= since}, {d for d, when in by_digest.items() if when >= since}


def _live_after(
    repository: Repository, graph: Graph, decided: Mapping[str, TagDecision], protection: Protection
) -> set[Digest]:
    """The manifests of the repository that stay: what the kept tags, the manifests untagged already, broken
    tags' indexes and --protect keep (as `removal` computes it)."""
    tags = repository.tags.values()
    every_tag = {t.current for t in tags if t.current is not None} | {d for t in tags if t.current is None for d in t.index}
    untagged = repository.revisions - closure(graph, repository.name, every_tag)
    roots = set(untagged)
    for tag in tags:
        decision = decided.get(tag.name)
        if tag.current is None:
            roots.update(tag.index)
        elif decision is not None and decision.kept:
            roots.add(tag.current)
    roots |= {d for d in repository.revisions if d in protection.digests or (repository.name, d) in protection.in_repository}
    return closure(graph, repository.name, roots)


def freed_by_repository(planned: RemovalPlan, graph: Graph) -> dict[str, int]:
    """The bytes the removal frees, per repository: a blob goes to the first repository (by name) one of whose
    removed manifests is or references it."""
    owner: dict[Digest, str] = {}
    for item in planned.manifests:
        if item.digest is None:
            continue
        owner.setdefault(item.digest, item.repository)
        manifest = graph.manifest(item.digest)
        if manifest is not None:
            for referenced in manifest.digests:
                owner.setdefault(referenced, item.repository)
    freed: dict[str, int] = {}
    for action in planned.plan.actions:
        name = action.repository or (owner.get(action.digest) if action.digest is not None else None)
        if name is not None and action.bytes:
            freed[name] = freed.get(name, 0) + action.bytes
    return freed
