"""`registry-fsck runs`: the repair runs kept in the quarantine."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import orjson
import typer

from .. import report, service
from .options import ConfigOption, PathArgument, QuarantineOption, RunsJsonOption, quarantine, target


def runs(
    path: Optional[Path] = PathArgument,
    config: Optional[Path] = ConfigOption,
    quarantine_dir: Optional[Path] = QuarantineOption,
    json_output: bool = RunsJsonOption,
) -> None:
    """List repair runs kept in the quarantine."""
    where = target(path, config)
    found = service.runs(where, quarantine(quarantine_dir, where))
    if json_output:
        records = [
            {"run": r.run, "started": r.started, "committed": r.committed, "purged": r.purged,
             "changes": r.changes, "bytes": r.bytes}
            for r in found
        ]
        sys.stdout.buffer.write(orjson.dumps(records, option=orjson.OPT_INDENT_2) + b"\n")
        raise typer.Exit(0)
    if not found:
        typer.echo("no runs")
    for r in found:
        state = "purged" if r.purged else ("complete" if r.committed else "interrupted")
        typer.echo(f"{r.run}  {r.started}  {state:<11} {r.changes:>7} changes  {report.size(r.bytes)}")
    raise typer.Exit(0)
