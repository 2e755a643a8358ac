"""`registry-fsck retain PATH`: a policy decides which tags stay; the rest goes with its cascade, planned,
confirmed and carried out as `rm` does (journaled, undoable)."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, Optional

import typer

from .. import checks, report, service
from ..layout import format_digest
from ..service import ExitCode, Retaining
from .acting import Acting, act

if TYPE_CHECKING:  # imported by the command itself: the other commands do without it
    from .. import policy

from .options import (
    Bars,
    BreakLockOption,
    ConfigOption,
    DeleteOption,
    DryRunOption,
    ForceOption,
    JobsOption,
    LimitOption,
    OutputOption,
    PlanJsonOption,
    ProtectOption,
    QuarantineOption,
    QuietOption,
    YesOption,
    protection,
    quarantine,
    refuse_both,
    target,
    unlock,
    warn,
)


def _usage(message: str) -> NoReturn:
    typer.echo(f"registry-fsck: error: {report.display(message)}", err=True)
    raise typer.Exit(int(ExitCode.USAGE))


def retain(
    path: Optional[Path] = typer.Argument(
        None, metavar="PATH", show_default=False,
        help="The registry's rootdirectory, or its docker/registry/v2 directory.",
    ),
    config: Optional[Path] = ConfigOption,
    repos: Optional[list[str]] = typer.Option(
        None, "--repo", metavar="NAME", show_default=False,
        help="A repository the rule applies to: an exact name, or an anchored glob (team/* within one path "
        "component, team/** at any depth). Repeat for more.",
    ),
    keep_last: Optional[int] = typer.Option(
        None, "--keep-last", metavar="N", help="Keep the N most recently pushed tags (--by created: built)."
    ),
    by: Optional[str] = typer.Option(
        None, "--by", metavar="pushed|created",
        help="What --keep-last orders by: the push (the mtime of the tag's current link; the default) or the image "
        "config's created.",
    ),
    keep_tags: Optional[list[str]] = typer.Option(
        None, "--keep-tags", metavar="GLOB", show_default=False,
        help="Tags never removed: names or globs such as latest, v*, release-* (* is any characters). Repeat for more.",
    ),
    keep_within: Optional[str] = typer.Option(
        None, "--keep-within", metavar="DURATION", help="Keep tags pushed more recently than this (30d, 12h, 1h30m)."
    ),
    keep_pulled_within: Optional[str] = typer.Option(
        None, "--keep-pulled-within", metavar="DURATION",
        help="Keep tags pulled in this window, by tag or by digest, according to the --pull-log files.",
    ),
    policy_file: Optional[Path] = typer.Option(
        None, "--policy", metavar="FILE", help="A TOML policy: [[rule]] tables, in order, the first match wins."
    ),
    pull_logs: Optional[list[Path]] = typer.Option(
        None, "--pull-log", metavar="FILE", show_default=False,
        help="The registry's request log (text, json or logstash formatter) or access log; gzip'd rotated files "
        "too. Repeat for more: together they must reach back over the whole keep-pulled-within window.",
    ),
    protect: Optional[Path] = ProtectOption,
    yes: bool = YesOption,
    dry_run: bool = DryRunOption,
    json_output: bool = PlanJsonOption,
    output: Optional[Path] = OutputOption,
    delete: bool = DeleteOption,
    quarantine_dir: Optional[Path] = QuarantineOption,
    break_lock: Optional[str] = BreakLockOption,
    force: bool = ForceOption,
    limit: int = LimitOption,
    quiet: bool = QuietOption,
    jobs: Optional[int] = JobsOption,
) -> None:
    """Keep the tags a policy keeps; remove the others and what only they kept: plan, confirm, act; undoable."""
    from .. import policy

    refuse_both(dry_run, yes)
    protected = protection(protect)
    protecting = bool(protected.digests or protected.in_repository or protected.tags)
    the_policy = _policy(policy_file, repos, keep_last, by, keep_tags, keep_within, keep_pulled_within, protecting)
    logs = [str(p) for p in pull_logs or ()]
    if the_policy.reads_pulls and not logs:
        raise typer.BadParameter("keep-pulled-within needs the registry's request log: give --pull-log FILE")
    if logs and not the_policy.reads_pulls:
        raise typer.BadParameter("--pull-log is read only for keep-pulled-within, which no rule has")
    now = datetime.now(timezone.utc)
    where = target(path, config)
    pulls = service.pull_record(logs, the_policy.pull_window, now) if logs else None
    kept_in = quarantine(quarantine_dir, where)
    unlock(where, kept_in, break_lock, dry_run)
    if not dry_run:
        service.refuse_if_in_use(where, warn, force=force)
    bars = Bars(quiet)
    loaded = service.load(where, progress=bars, jobs=jobs)
    for rule in the_policy.rules:
        if not any(rule.selects(name) for name in loaded.inventory.repositories):
            warn(f"{rule.describe()} selects no repository")
    retaining = service.plan_retain(loaded, checks.Policy(now=now), the_policy, pulls, protected)
    removing = retaining.removing
    planned = removing.removal
    context = report.Context(where.root, where.v2, now, False)
    elsewhere = [(e.link, e.quarantine) for e in service.quarantines_for(where, kept_in, planned.plan.followed)]
    assert removing.audit.graph is not None
    freed = policy.freed_by_repository(planned, removing.audit.graph)

    def document(applied, code: int) -> dict:
        return {
            **report.plan_document(planned.plan, context, kept_in, applied, code, elsewhere),
            "removal": report.removal_record(planned),
            "retain": _record(retaining, freed, pulls),
        }

    removal_text = report.removal_to_text(
        planned, context, limit, kept_in, delete, elsewhere, "retain", directories=where.s3 is None
    )
    first, _, rest = removal_text.partition("\n")
    act(
        Acting(
            where, kept_in, removing.audit, planned.plan,
            "\n".join([first, *_decision_lines(retaining, freed, limit), rest]),
            document=document,
            code=lambda applied, refused: service.removal_exit_code(removing, applied, refused),
            again="`registry-fsck undo` puts back what was done; `registry-fsck retain` again finishes it",
            doing="removing",
        ),
        now=now, yes=yes, dry_run=dry_run, json_output=json_output, output=output, delete=delete, force=force,
        bars=bars, options={
            "policy": os.path.abspath(policy_file) if policy_file is not None else None,
            "rules": [rule.describe() for rule in the_policy.rules],
            "pull_logs": [os.path.abspath(p) for p in logs],
            "protect": os.path.abspath(protect) if protect is not None else None, "delete": delete, "force": force,
        },
    )


def _policy(
    policy_file: Optional[Path], repos: Optional[list[str]], keep_last: Optional[int], by: Optional[str],
    keep_tags: Optional[list[str]], keep_within: Optional[str], keep_pulled_within: Optional[str], protecting: bool,
) -> policy.Policy:
    """--policy FILE, or the one rule the options give (not both)."""
    from .. import policy

    one_rule = {
        "--repo": repos, "--keep-last": keep_last, "--by": by, "--keep-tags": keep_tags,
        "--keep-within": keep_within, "--keep-pulled-within": keep_pulled_within,
    }
    given = [option for option, value in one_rule.items() if value is not None and value != []]
    if policy_file is not None:
        if given:
            raise typer.BadParameter(f"--policy holds the rules: {', '.join(given)} cannot be given with it")
        try:
            text = policy_file.read_text(encoding="utf-8")
        except OSError as error:
            raise typer.BadParameter(f"--policy {policy_file}: {error.strerror}") from None
        except UnicodeDecodeError:
            _usage(f"{policy_file}: not UTF-8 text")
        try:
            return policy.parse_policy(text, protecting)
        except policy.PolicyError as error:
            _usage(f"{policy_file}: {error}")
    if not given:
        raise typer.BadParameter("give a rule (--repo NAME with --keep-last, --keep-tags, --keep-within, "
                                 "--keep-pulled-within) or --policy FILE")
    try:
        return policy.Policy((policy.make_rule(
            repos or (), keep_last_n=keep_last, by=by, keep_tags=keep_tags or (), keep_within=keep_within,
            keep_pulled_within=keep_pulled_within, protecting=protecting,
        ),))
    except policy.PolicyError as error:
        _usage(str(error).removeprefix("rule 1: "))


def _when(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    # Milliseconds: tags pushed in the same second are still told apart (and a tie is a tie).
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _decision_lines(retaining: Retaining, freed: dict[str, int], limit: int) -> list[str]:
    """Per repository a rule selects: its rule, then each tag kept and removed with the clause that decided it."""
    lines = []
    for decided in retaining.decisions.repositories:
        if not decided.tags:
            continue  # selected, and nothing to decide (JSON lists it)
        kept, removed = decided.kept, decided.removed
        lines.append(
            f"{report.display(decided.repository)}: {decided.rule}: keeps {len(kept)}, removes {len(removed)} "
            f"{'tag' if len(removed) == 1 else 'tags'}; frees {report.size(freed.get(decided.repository, 0))}"
        )
        width = min(max(len(report.display(t.tag)) for t in decided.tags), 24)
        for word, tags in (("kept", kept), ("removed", removed)):
            shown = tags[:limit] if limit > 0 else tags
            for tag in shown:
                when = _when(tag.time) or "-"
                note = f"  [{tag.note}]" if tag.note else ""
                # A tag removed by a rule of several clauses was kept by none of them.
                why = f"none of: {tag.clause}" if not tag.kept and ", " in tag.clause and tag.follows is None \
                    else tag.clause
                lines.append(f"  {word:<8} {report.display(tag.tag):<{width}}  {when:<24}  ({report.display(why)}){note}")
            if len(shown) < len(tags):
                lines.append(f"  ... and {len(tags) - len(shown)} more {word} (--limit 0 shows all)")
        lines.extend(f"  note: {report.display(note)}" for note in decided.notes)
    if retaining.untouched:
        lines.append(f"untouched: {retaining.untouched} {'repository' if retaining.untouched == 1 else 'repositories'}"
                     " no rule selects")
    return lines


def _record(retaining: Retaining, freed: dict[str, int], pulls) -> dict:
    def tag_record(tag: policy.TagDecision) -> dict:
        return {
            "tag": report.display(tag.tag),
            "digest": format_digest(tag.digest) if tag.digest is not None else None,
            "clause": report.display(tag.clause),
            "time": _when(tag.time),
            "note": tag.note,
            "follows": format_digest(tag.follows) if tag.follows is not None else None,
        }

    return {
        "repositories": [
            {
                "repository": report.display(d.repository),
                "rule": report.display(d.rule),
                "kept": [tag_record(t) for t in d.kept],
                "removed": [tag_record(t) for t in d.removed],
                "bytes": freed.get(d.repository, 0),
                "notes": list(d.notes),
            }
            for d in retaining.decisions.repositories
        ],
        "untouched": retaining.untouched,
        "pull_logs": None if pulls is None else {
            "files": [report.display(f) for f in pulls.files], "pulls": pulls.pulls, "earliest": _when(pulls.earliest),
        },
    }
