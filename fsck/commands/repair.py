"""`registry-fsck repair`: plan, confirm, act; every change journaled and undoable."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import orjson
import typer

from .. import checks, plan, report, service
from ..catalogue import BY_ID, Id, Repair
from ..service import RepairOutcome, Target
from .acting import Acting, act
from .options import (
    Bars,
    BreakLockOption,
    ConfigOption,
    ForceOption,
    JobsOption,
    LimitOption,
    OutputOption,
    PathArgument,
    PlanJsonOption,
    QuarantineOption,
    QuietOption,
    UploadAgeOption,
    VerifyOption,
    finding_ids,
    parse_duration,
    protection,
    quarantine,
    refuse_both,
    target,
    unlock,
    warn,
)


def _check_selection(selection: plan.Selection) -> None:
    """--only and --skip that can select nothing are a usage error, said before any work."""
    both = sorted(i.value for i in (selection.only or frozenset()) & selection.skip)
    if both:
        raise typer.BadParameter(f"--only and --skip both name {', '.join(both)}")
    needs = {Repair.UNTAGGED: "--untagged", Repair.DAMAGE: "--fix-damage"}
    for finding_id in sorted(selection.only or (), key=lambda i: i.value):
        row = BY_ID[finding_id]
        if row.repair is Repair.NEVER:
            raise typer.BadParameter(f"--only {finding_id.value}: repair never acts on it")
        if finding_id not in selection.ids() and row.repair in needs:
            raise typer.BadParameter(f"--only {finding_id.value}: give {needs[row.repair]} too")


def _from_report(path: Optional[Path], where: Target) -> Optional[frozenset[tuple[Id, str]]]:
    if path is None:
        return None
    try:
        document = orjson.loads(Path(path).read_bytes())
        if document.get("format") != report.FORMAT:
            raise ValueError("not a registry-fsck audit report")
        if os.path.realpath(document.get("v2", "")) != os.path.realpath(where.v2):
            raise ValueError(f"the report is of {document.get('v2')}, not of {where.v2}")
        known = {i.value: i for i in Id}
        # An id this version does not know can match nothing: it is left out.
        return frozenset((known[f["id"]], f["path"]) for f in document["findings"] if f["id"] in known)
    except OSError as error:
        raise typer.BadParameter(f"--from {path}: {error.strerror}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise typer.BadParameter(f"--from {path}: {error}") from None


def repair(
    path: Optional[Path] = PathArgument,
    config: Optional[Path] = ConfigOption,
    yes: bool = typer.Option(False, "--yes", "-y", help="Act without asking (for scripts)."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Print the plan and stop."),
    json_output: bool = PlanJsonOption,
    output: Optional[Path] = OutputOption,
    untagged: bool = typer.Option(False, "--untagged", help="Also remove untagged manifests and the blobs they free."),
    fix_damage: bool = typer.Option(
        False, "--fix-damage", help="Also mend damage: rewrite links, quarantine corrupt blobs."
    ),
    protect: Optional[Path] = typer.Option(
        None, "--protect", help="File of references never removed: digest, repo@digest, repo:tag."
    ),
    only: Optional[str] = typer.Option(None, "--only", help="Act only on these finding ids (comma-separated)."),
    skip: Optional[str] = typer.Option(None, "--skip", help="Never act on these finding ids (comma-separated)."),
    from_report: Optional[Path] = typer.Option(
        None, "--from", help="Repair exactly what this saved audit --json report lists."
    ),
    min_age: Optional[str] = typer.Option(None, "--min-age", help="Leave objects younger than this alone (e.g. 24h)."),
    upload_age: str = UploadAgeOption,
    delete: bool = typer.Option(False, "--delete", help="Delete instead of moving into the quarantine (no undo)."),
    quarantine_dir: Optional[Path] = QuarantineOption,
    break_lock: Optional[str] = BreakLockOption,
    force: bool = ForceOption,
    verify_blobs: bool = VerifyOption,
    limit: int = LimitOption,
    quiet: bool = QuietOption,
    jobs: Optional[int] = JobsOption,
) -> None:
    """Remove garbage (and with --fix-damage mend damage): plan, confirm, act; undoable."""
    refuse_both(dry_run, yes)
    selection = plan.Selection(
        untagged=untagged, fix_damage=fix_damage, only=finding_ids(only, "--only"),
        skip=finding_ids(skip, "--skip") or frozenset(), force=force, protect=protection(protect),
        min_age=parse_duration(min_age) if min_age else None,
    )
    _check_selection(selection)
    policy = checks.Policy(now=datetime.now(timezone.utc), upload_age=parse_duration(upload_age))
    where = target(path, config)
    selection = replace(selection, from_report=_from_report(from_report, where))
    kept_in = quarantine(quarantine_dir, where)
    unlock(where, kept_in, break_lock, dry_run)
    if not dry_run:
        service.refuse_if_in_use(where, warn, force=force)
    bars = Bars(quiet)
    planned = service.plan_repair(service.load(where, verify_blobs=verify_blobs, progress=bars, jobs=jobs), policy, selection)
    the_audit, the_plan = planned.audit, planned.plan
    context = report.Context(where.root, where.v2, policy.now, verify_blobs)
    elsewhere = [(e.link, e.quarantine) for e in service.quarantines_for(where, kept_in, the_plan.followed)]
    act(
        Acting(
            where, kept_in, the_audit, the_plan, report.plan_to_text(
                the_plan, context, limit, kept_in, delete, elsewhere, directories=where.s3 is None
            ),
            document=lambda applied, code: report.plan_document(the_plan, context, kept_in, applied, code, elsewhere),
            code=lambda applied, refused: service.exit_code(RepairOutcome(the_audit, the_plan, applied, refused)),
            again="`registry-fsck repair` again finishes the job, `registry-fsck undo` puts back what was done",
            doing="repairing",
        ),
        now=policy.now, yes=yes, dry_run=dry_run, json_output=json_output, output=output, delete=delete, force=force,
        bars=bars, options={
            "untagged": untagged, "fix_damage": fix_damage,
            "only": sorted(i.value for i in selection.only) if selection.only is not None else None,
            "skip": sorted(i.value for i in selection.skip), "min_age": min_age, "upload_age": upload_age,
            "protect": os.path.abspath(protect) if protect is not None else None,
            "from": os.path.abspath(from_report) if from_report is not None else None,
            "verify": verify_blobs, "delete": delete, "force": force,
        },
    )
