"""What the commands that change the tree share once their plan is made (`repair`, `rm`, `retain`): the
live-upload guard, the prompt, the run with Ctrl-C deferred, and the report with its exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NoReturn, Optional

import orjson
import typer

from .. import apply, checks, plan, report, service
from ..service import Target
from .options import Bars, emit, interrupts_deferred, warn


@dataclass(frozen=True, slots=True)
class Acting:
    """One command's plan, and how it is shown: `document(applied, code)` is its JSON, `code(applied, refused)` its
    exit code; `again` says, after a Ctrl-C, how to finish or go back."""

    where: Target
    quarantine: str
    audit: checks.Audit
    plan: plan.Plan
    plan_text: str
    document: Callable[[apply.Outcome | None, int], dict]
    code: Callable[[apply.Outcome | None, bool], int]
    again: str
    doing: str  # the progress bar's label


def act(
    acting: Acting, *, now: datetime, yes: bool, dry_run: bool, json_output: bool, output: Optional[Path],
    delete: bool, force: bool, bars: Bars, options: Mapping[str, object],
) -> NoReturn:
    """Print the plan (or stop at it), ask on a terminal, carry it out, report: never returns."""
    the_audit, the_plan, where = acting.audit, acting.plan, acting.where
    elsewhere = [(e.link, e.quarantine) for e in service.quarantines_for(where, acting.quarantine, the_plan.followed)]

    def finish(applied: apply.Outcome | None, text: str, refused: bool = False) -> NoReturn:
        code = int(acting.code(applied, refused))
        data = (
            orjson.dumps(acting.document(applied, code), option=orjson.OPT_INDENT_2) + b"\n"
            if json_output else text.encode("utf-8")
        )
        emit(data, output, where, code)

    if the_audit.recent_uploads:
        looks_live = f"{the_audit.recent_uploads} upload(s) started in the last minutes: the registry looks live"
        if force or dry_run:
            warn(looks_live + ("; going ahead (--force)" if force and not dry_run else ""))
        else:
            typer.echo(
                f"registry-fsck: error: {looks_live}. Stop it first, or wait for the quiet period "
                "(or --force: act although it looks live)", err=True,
            )
        for line in report.recent_upload_lines(the_audit, now):
            typer.echo(f"  {report.display(line)}", err=True)
        if not (force or dry_run):
            finish(None, acting.plan_text, refused=True)
    if dry_run or not the_plan.actions:
        finish(None, acting.plan_text)
    if not yes:
        sys.stderr.write(acting.plan_text)
        if not sys.stdin.isatty():
            raise typer.BadParameter("not on a terminal: give --yes to act, or --dry-run to only see the plan")
        if not typer.confirm(f"Carry out {len(the_plan.actions)} actions?", default=False, err=True):
            finish(None, "declined: nothing changed\n")
    with interrupts_deferred() as interrupted:
        with bars.counter(acting.doing, " actions", total=len(the_plan.actions)) as bar:
            applied = service.carry_out(
                where, the_plan, acting.quarantine, now=now, delete=delete, progress=bar.update,
                stop_requested=interrupted, options=options,
            )
        done_text = report.outcome_to_text(applied, acting.quarantine, elsewhere, directories=where.s3 is None)
        if applied.interrupted:
            left = len(the_plan.actions) - len(applied.done) - len(applied.vanished) - len(applied.failed)
            done_text += f"interrupted: {left} of {len(the_plan.actions)} actions not carried out ({acting.again})\n"
            typer.echo("registry-fsck: interrupted", err=True)
        # At the prompt the plan was shown already (on stderr): say only what was done.
        finish(applied, done_text if not yes else acting.plan_text + "\n" + done_text)
