"""`registry-fsck rm PATH REF...`: remove tags, manifests or repositories with their cascade; plan, confirm,
act, as `repair` does (journaled, undoable)."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import NoReturn, Optional

import typer

from .. import checks, removal, report, service
from ..service import ExitCode
from .acting import Acting, act
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


def _usage(lines: list[str]) -> NoReturn:
    """A REF that names nothing or cannot be removed: one line each, exit 16, nothing changed."""
    for line in lines:
        typer.echo(f"registry-fsck: error: {report.display(line)}", err=True)
    raise typer.Exit(int(ExitCode.USAGE))


def rm(
    path: Optional[str] = typer.Argument(
        None, metavar="PATH", show_default=False,
        help="The registry's rootdirectory, or its docker/registry/v2 directory (with --config: the first REF).",
    ),
    refs: Optional[list[str]] = typer.Argument(
        None, metavar="REF", show_default=False,
        help="What to remove: repo:tag (that tag; its manifest too when nothing else keeps it), repo@sha256:... "
        "(that manifest and the tags naming it), repo (the repository).",
    ),
    config: Optional[Path] = ConfigOption,
    untag_only: bool = typer.Option(
        False, "--untag-only", help="Remove only the tags: their manifests stay, pullable by digest."
    ),
    glob: bool = typer.Option(
        False, "--glob", help="REFs are anchored shell patterns: in names * stays within a path component and ** "
        "crosses them; in tags * is any characters (never in digests)."
    ),
    recursive: bool = typer.Option(
        False, "--recursive", "-r", help="A bare repo takes the repositories nested in it (repo/child) too."
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
    """Remove tags, manifests or repositories and what only they kept: plan, confirm, act; undoable."""
    refuse_both(dry_run, yes)
    refs = list(refs or ())
    if config is not None and path is not None:
        path, refs = None, [path, *refs]  # `rm --config c.yml REF...`: every positional is a REF
    if not refs:
        raise typer.BadParameter("give at least one REF: repo:tag, repo@sha256:... or repo")
    try:
        parsed = [removal.parse_ref(text, glob) for text in refs]
    except removal.RefError as error:
        _usage([str(error)])
    protected = protection(protect)
    policy = checks.Policy(now=datetime.now(timezone.utc))
    where = target(Path(path) if path is not None else None, config)
    kept_in = quarantine(quarantine_dir, where)
    unlock(where, kept_in, break_lock, dry_run)
    if not dry_run:
        service.refuse_if_in_use(where, warn, force=force)
    bars = Bars(quiet)
    loaded = service.load(where, progress=bars, jobs=jobs)
    wanted, unmatched = removal.resolve(parsed, loaded.inventory, recursive=recursive, untag_only=untag_only, force=force)
    if unmatched:
        _usage(unmatched)
    removing = service.plan_rm(loaded, policy, wanted, protected)
    planned = removing.removal
    if planned.refused:
        _usage([refusal.message for refusal in planned.refused])
    context = report.Context(where.root, where.v2, policy.now, False)
    elsewhere = [(e.link, e.quarantine) for e in service.quarantines_for(where, kept_in, planned.plan.followed)]

    def document(applied, code: int) -> dict:
        return {
            **report.plan_document(planned.plan, context, kept_in, applied, code, elsewhere),
            "removal": report.removal_record(planned),
        }

    act(
        Acting(
            where, kept_in, removing.audit, planned.plan,
            report.removal_to_text(
                planned, context, limit, kept_in, delete, elsewhere, "rm", directories=where.s3 is None
            ),
            document=document,
            code=lambda applied, refused: service.removal_exit_code(removing, applied, refused),
            again="`registry-fsck undo` puts back what was done; what is left is garbage `registry-fsck repair "
            "--untagged` removes",
            doing="removing",
        ),
        now=policy.now, yes=yes, dry_run=dry_run, json_output=json_output, output=output, delete=delete, force=force,
        bars=bars, options={
            "refs": list(refs), "glob": glob, "recursive": recursive, "untag_only": untag_only,
            "protect": os.path.abspath(protect) if protect is not None else None, "delete": delete, "force": force,
        },
    )
