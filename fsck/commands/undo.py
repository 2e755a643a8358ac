"""`registry-fsck undo`: put a repair run's changes back."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .. import report, service
from .options import BreakLockOption, ConfigOption, PathArgument, QuarantineOption, quarantine, target, unlock, warn


def undo(
    path: Optional[Path] = PathArgument,
    run: Optional[str] = typer.Argument(None, help="The run to undo (default: the newest with changes left to put back)."),
    config: Optional[Path] = ConfigOption,
    quarantine_dir: Optional[Path] = QuarantineOption,
    break_lock: Optional[str] = BreakLockOption,
    force: bool = typer.Option(False, "--force", help="Undo even if the registry looks live."),
) -> None:
    """Put a repair run's changes back, byte-identical."""
    if config is not None and path is not None and run is None:
        path, run = None, str(path)  # `undo --config c.yml RUN`: the one positional is the run
    where = target(path, config)
    service.refuse_if_in_use(where, warn, force=force)
    kept_in = quarantine(quarantine_dir, where)
    unlock(where, kept_in, break_lock)
    outcome = service.undo(where, kept_in, run)
    typer.echo(f"run {outcome.run}: {outcome.restored} changes undone")
    for relative, why in outcome.skipped:
        typer.echo(f"not restored: {report.display(relative)}: {why}")
    if outcome.skipped:
        typer.echo(
            f"run {outcome.run} is partly undone: {len(outcome.skipped)} left in the quarantine; "
            "`registry-fsck undo` again tries them (the newest run with changes left is the default)"
        )
    raise typer.Exit(int(service.exit_code(outcome)))
