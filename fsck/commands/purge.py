"""`registry-fsck purge`: free the space quarantined runs hold (for good: no undo afterwards)."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer

from .. import report, service
from .options import (
    BreakLockOption,
    ConfigOption,
    PathArgument,
    QuarantineOption,
    parse_duration,
    quarantine,
    target,
    unlock,
)


def purge(
    path: Optional[Path] = PathArgument,
    config: Optional[Path] = ConfigOption,
    quarantine_dir: Optional[Path] = QuarantineOption,
    break_lock: Optional[str] = BreakLockOption,
    run: Optional[str] = typer.Option(None, "--run", help="Purge this run."),
    all_runs: bool = typer.Option(False, "--all", help="Purge every run."),
    older_than: Optional[str] = typer.Option(None, "--older-than", help="Purge runs older than this (e.g. 30d)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Purge without asking (for scripts)."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Say what would be purged, and how much, and stop."),
) -> None:
    """Delete what runs moved into the quarantine, to free the space. Their journals stay; undo no longer can."""
    if dry_run and yes:
        raise typer.BadParameter("--dry-run and --yes contradict each other")
    if sum(x is not None and x is not False for x in (run, all_runs or None, older_than)) != 1:
        raise typer.BadParameter("give exactly one of --run, --all, --older-than")
    age = parse_duration(older_than) if older_than else None
    where = target(path, config)
    kept_in = quarantine(quarantine_dir, where)
    unlock(where, kept_in, break_lock, dry_run)
    now = datetime.now(timezone.utc)

    def choose(known: list) -> list[str]:
        if run is not None:
            return [run]
        holding = [r for r in known if r.holding]
        if all_runs:
            return [r.run for r in holding]
        return [r.run for r in holding if now - datetime.fromisoformat(r.started) > age]

    planned = service.purge_plan(where, kept_in, choose)
    to_free = [(r, held) for r, held in planned if r.holding]
    plan_text = _plan_text(planned)
    if dry_run:
        typer.echo(plan_text + ("" if to_free else "nothing to purge\n") + "dry run: nothing purged")
        raise typer.Exit(0)
    if not to_free:
        typer.echo(plan_text + f"purged 0 run(s), freed {report.size(0)}")
        raise typer.Exit(0)
    if not yes:
        sys.stderr.write(plan_text)
        if not sys.stdin.isatty():
            raise typer.BadParameter("not on a terminal: give --yes to purge, or --dry-run to see what would be purged")
        total = report.size(sum(held for _, held in to_free))
        if not typer.confirm(f"Purge {len(to_free)} run(s), deleting {total} for good?", default=False, err=True):
            typer.echo("declined: nothing purged")
            raise typer.Exit(0)
    done = [p for p in service.purge(where, kept_in, [r.run for r, _ in to_free]) if p.bytes is not None]
    typer.echo(f"purged {len(done)} run(s), freed {report.size(sum(p.bytes for p in done))}")
    raise typer.Exit(0)


def _plan_text(planned: list) -> str:
    """What a purge of these runs frees, one line each; a run with nothing left to free is said so."""
    holding = [(r, held) for r, held in planned if r.holding]
    lines = []
    if holding:
        total = report.size(sum(held for _, held in holding))
        lines.append(f"purge: {len(holding)} run(s), {total} deleted for good (no undo afterwards)")
        lines.extend(f"  {r.run}  {r.state.value:<17} {report.size(held):>10}" for r, held in holding)
    for r, _ in planned:
        if not r.holding:
            lines.append(f"run {r.run} is {r.state.value}: nothing left to free")
    return "".join(line + "\n" for line in lines)
