"""`registry-fsck purge`: free the space quarantined runs hold."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer

from .. import report, service
from .options import ConfigOption, PathArgument, QuarantineOption, parse_duration, quarantine, target


def purge(
    path: Optional[Path] = PathArgument,
    config: Optional[Path] = ConfigOption,
    quarantine_dir: Optional[Path] = QuarantineOption,
    run: Optional[str] = typer.Option(None, "--run", help="Purge this run."),
    all_runs: bool = typer.Option(False, "--all", help="Purge every run."),
    older_than: Optional[str] = typer.Option(None, "--older-than", help="Purge runs older than this (e.g. 30d)."),
) -> None:
    """Delete what runs moved into the quarantine, to free the space. Their journals stay."""
    if sum(x is not None and x is not False for x in (run, all_runs or None, older_than)) != 1:
        raise typer.BadParameter("give exactly one of --run, --all, --older-than")
    age = parse_duration(older_than) if older_than else None
    where = target(path, config)
    now = datetime.now(timezone.utc)

    def choose(known: list) -> list[str]:
        if run is not None:
            return [run]
        if all_runs:
            return [r.run for r in known]
        return [r.run for r in known if now - datetime.fromisoformat(r.started) > age]

    chosen, freed = service.purge(quarantine(quarantine_dir, where), choose)
    typer.echo(f"purged {len(chosen)} run(s), freed {report.size(freed)}")
    raise typer.Exit(0)
