"""The commands that change the tree: repair, undo, and the quarantine's runs and purge."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import orjson
import typer

from . import apply, checks, guards, plan, report
from .cli import (
    ConfigOption, ExitCode, JsonOption, LimitOption, OperationalError, OutputOption, PathArgument, QuietOption,
    Target, UploadAgeOption, finding_ids, VerifyOption, _Progress, app, emit, load, parse_duration, resolve_target,
)
from .catalogue import Id


def _protection(path: Optional[Path]) -> plan.Protection:
    if path is None:
        return plan.Protection()
    try:
        with open(path, encoding="utf-8") as handle:
            return plan.parse_protection(handle)
    except OSError as error:
        raise typer.BadParameter(f"--protect {path}: {error.strerror}") from None
    except (plan.ProtectError, UnicodeDecodeError) as error:
        raise typer.BadParameter(f"--protect {path}: {error}") from None


def _from_report(path: Optional[Path], target: Target) -> Optional[frozenset[tuple[str, str]]]:
    if path is None:
        return None
    try:
        document = orjson.loads(Path(path).read_bytes())
        if document.get("format") != report.FORMAT:
            raise ValueError("not a registry-fsck audit report")
        if os.path.realpath(document.get("v2", "")) != os.path.realpath(target.v2):
            raise ValueError(f"the report is of {document.get('v2')}, not of {target.v2}")
        known = {i.value: i for i in Id}
        # An id this version does not know can match nothing: it is left out.
        return frozenset((known[f["id"]], f["path"]) for f in document["findings"] if f["id"] in known)
    except OSError as error:
        raise typer.BadParameter(f"--from {path}: {error.strerror}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise typer.BadParameter(f"--from {path}: {error}") from None


def _quarantine(option: Optional[Path], target: Target) -> str:
    return os.path.abspath(str(option)) if option is not None else apply.default_quarantine(target.v2)


QuarantineOption = typer.Option(
    None, "--quarantine", help="Where removed items are kept (default: registry-fsck-quarantine beside docker/)."
)


@app.command()
def repair(
    path: Optional[Path] = PathArgument,
    config: Optional[Path] = ConfigOption,
    yes: bool = typer.Option(False, "--yes", "-y", help="Act without asking (for scripts)."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Print the plan and stop."),
    json_output: bool = JsonOption,
    output: Optional[Path] = OutputOption,
    untagged: bool = typer.Option(False, "--untagged", help="Also remove untagged manifests and the blobs they free."),
    fix_damage: bool = typer.Option(False, "--fix-damage", help="Also mend damage: rewrite links, quarantine corrupt blobs."),
    protect: Optional[Path] = typer.Option(None, "--protect", help="File of references never removed: digest, repo@digest, repo:tag."),
    only: Optional[str] = typer.Option(None, "--only", help="Act only on these finding ids (comma-separated)."),
    skip: Optional[str] = typer.Option(None, "--skip", help="Never act on these finding ids (comma-separated)."),
    from_report: Optional[Path] = typer.Option(None, "--from", help="Repair exactly what this saved audit --json report lists."),
    min_age: Optional[str] = typer.Option(None, "--min-age", help="Leave objects younger than this alone (e.g. 24h)."),
    upload_age: str = UploadAgeOption,
    delete: bool = typer.Option(False, "--delete", help="Delete instead of moving into the quarantine (no undo)."),
    quarantine: Optional[Path] = QuarantineOption,
    force: bool = typer.Option(False, "--force", help="Run even if the registry looks live or the audit is incomplete."),
    verify_blobs: bool = VerifyOption,
    limit: int = LimitOption,
    quiet: bool = QuietOption,
) -> None:
    """Remove garbage (and with --fix-damage mend damage): plan, confirm, act; undoable."""
    if dry_run and yes:
        raise typer.BadParameter("--dry-run and --yes contradict each other")
    selection = plan.Selection(
        untagged=untagged, fix_damage=fix_damage, only=finding_ids(only, "--only"), skip=finding_ids(skip, "--skip") or frozenset(),
        force=force, protect=_protection(protect), min_age=parse_duration(min_age) if min_age else None,
    )
    policy = checks.Policy(now=datetime.now(timezone.utc), upload_age=parse_duration(upload_age))
    target = resolve_target(path, config)
    selection = replace(selection, from_report=_from_report(from_report, target))
    where = _quarantine(quarantine, target)
    if target.http_addr and not force and not dry_run and guards.registry_answers(target.http_addr):
        raise OperationalError(
            f"the registry answers at {guards.describe_address(target.http_addr)}: stop it first (or --force)"
        )
    loaded = load(target, verify_blobs=verify_blobs, quiet=quiet)

    def modified(relative: str) -> Optional[datetime]:
        newest = None
        for candidate in (relative, f"{relative}/link", f"{relative}/data", f"{relative}/startedat"):
            try:
                moment = os.lstat(os.path.join(target.v2, candidate)).st_mtime
            except OSError:
                continue
            newest = moment if newest is None else max(newest, moment)
        return datetime.fromtimestamp(newest, timezone.utc) if newest is not None else None

    audit = checks.audit(loaded.inventory, loaded.manifests, policy, loaded.corrupt)
    the_plan = plan.prepare(audit, loaded.inventory, selection, lambda location: modified(location.path), policy.now)
    context = report.Context(target.root, target.v2, policy.now, verify_blobs)
    live = audit.recent_uploads and not force

    def finish(outcome: Optional[apply.Outcome], code: ExitCode, text: str) -> None:
        code |= unread
        data = (
            orjson.dumps(report.plan_document(the_plan, context, where, outcome, int(code)), option=orjson.OPT_INDENT_2) + b"\n"
            if json_output else text.encode("utf-8")
        )
        emit(data, output, target, int(code))

    unread = ExitCode.OK if audit.complete else ExitCode.OPERATIONAL  # as for audit: a partial view is said
    left = ExitCode.PROBLEMS_LEFT if the_plan.leftover else ExitCode.OK
    plan_text = report.plan_to_text(the_plan, context, limit, where, delete)
    if live and not dry_run:
        typer.echo(
            f"registry-fsck: error: {audit.recent_uploads} upload(s) started in the last minutes: "
            "the registry looks live. Stop it first (or --force)", err=True,
        )
        finish(None, ExitCode.OPERATIONAL | left | (ExitCode.PROBLEMS_LEFT if the_plan.actions else 0), plan_text)
    if dry_run or not the_plan.actions:
        pending = ExitCode.PROBLEMS_LEFT if the_plan.actions else ExitCode.OK
        finish(None, left | pending, plan_text)
    if not yes:
        if not sys.stdin.isatty():
            sys.stderr.write(plan_text)
            raise typer.BadParameter("not on a terminal: give --yes to act, or --dry-run to only see the plan")
        sys.stderr.write(plan_text)
        if not typer.confirm(f"Carry out {len(the_plan.actions)} actions?", default=False, err=True):
            finish(None, ExitCode.PROBLEMS_LEFT, "declined: nothing changed\n")
    try:
        apply.check_quarantine(where, target.v2)
        with apply.locked(where):
            progress = _Progress(quiet)
            with progress.counter("repairing", " actions", total=len(the_plan.actions)) as bar:
                outcome = apply.apply(the_plan, target.v2, where, now=policy.now, delete=delete, progress=bar.update)
    except apply.ApplyError as error:
        raise OperationalError(str(error)) from None
    code = ExitCode.OK
    if outcome.done:
        code |= ExitCode.REPAIRED
    if the_plan.leftover or outcome.failed:
        code |= ExitCode.PROBLEMS_LEFT
    if outcome.failed:
        code |= ExitCode.OPERATIONAL
    finish(outcome, code, plan_text + "\n" + report.outcome_to_text(outcome, where))


@app.command()
def undo(
    path: Optional[Path] = PathArgument,
    run: Optional[str] = typer.Argument(None, help="The run to undo (default: the last one not purged)."),
    config: Optional[Path] = ConfigOption,
    quarantine: Optional[Path] = QuarantineOption,
) -> None:
    """Put a repair run's changes back, byte-identical."""
    if config is not None and path is not None and run is None:
        path, run = None, str(path)  # `undo --config c.yml RUN`: the one positional is the run
    target = resolve_target(path, config)
    where = _quarantine(quarantine, target)
    try:
        with apply.locked(where):
            outcome = apply.undo(where, target.v2, run)
    except apply.ApplyError as error:
        raise OperationalError(str(error)) from None
    typer.echo(f"run {outcome.run}: {outcome.restored} changes undone")
    for relative, why in outcome.skipped:
        typer.echo(f"not restored: {report.display(relative)}: {why}")
    raise typer.Exit(int(ExitCode.PROBLEMS_LEFT if outcome.skipped else ExitCode.OK))


@app.command()
def runs(
    path: Optional[Path] = PathArgument,
    config: Optional[Path] = ConfigOption,
    quarantine: Optional[Path] = QuarantineOption,
    json_output: bool = JsonOption,
) -> None:
    """List repair runs kept in the quarantine."""
    target = resolve_target(path, config)
    found = apply.list_runs(_quarantine(quarantine, target))
    if json_output:
        records = [
            {"run": r.run, "started": r.started, "committed": r.committed, "purged": r.purged,
             "changes": r.changes, "bytes": r.bytes}
            for r in found
        ]
        sys.stdout.buffer.write(orjson.dumps(records, option=orjson.OPT_INDENT_2) + b"\n")
    elif not found:
        typer.echo("no runs")
    for r in found if not json_output else ():
        state = "purged" if r.purged else ("complete" if r.committed else "interrupted")
        typer.echo(f"{r.run}  {r.started}  {state:<11} {r.changes:>7} changes  {report.size(r.bytes)}")
    raise typer.Exit(0)


@app.command()
def purge(
    path: Optional[Path] = PathArgument,
    config: Optional[Path] = ConfigOption,
    quarantine: Optional[Path] = QuarantineOption,
    run: Optional[str] = typer.Option(None, "--run", help="Purge this run."),
    all_runs: bool = typer.Option(False, "--all", help="Purge every run."),
    older_than: Optional[str] = typer.Option(None, "--older-than", help="Purge runs older than this (e.g. 30d)."),
) -> None:
    """Delete what runs moved into the quarantine, to free the space. Their journals stay."""
    if sum(x is not None and x is not False for x in (run, all_runs or None, older_than)) != 1:
        raise typer.BadParameter("give exactly one of --run, --all, --older-than")
    age = parse_duration(older_than) if older_than else None
    target = resolve_target(path, config)
    where = _quarantine(quarantine, target)
    now = datetime.now(timezone.utc)
    try:
        with apply.locked(where):
            known = [r for r in apply.list_runs(where) if not r.purged]
            if run is not None:
                chosen = [run]
            elif all_runs:
                chosen = [r.run for r in known]
            else:
                chosen = [r.run for r in known if now - datetime.fromisoformat(r.started) > age]
            freed = apply.purge(where, chosen)
    except apply.ApplyError as error:
        raise OperationalError(str(error)) from None
    typer.echo(f"purged {len(chosen)} run(s), freed {report.size(freed)}")
    raise typer.Exit(0)
