"""`registry-fsck runs`: the repair runs kept in the quarantine."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import orjson
import typer

from .. import report, service
from .options import ConfigOption, PathArgument, QuarantineOption, RunsJsonOption, UploadAgeOption, quarantine, target

_HEADINGS = ("RUN", "STARTED", "STATE", "CHANGES", "LEFT", "HELD", "OPTIONS")
_NUMERIC = {"CHANGES", "LEFT", "HELD"}


def runs(
    path: Optional[Path] = PathArgument,
    config: Optional[Path] = ConfigOption,
    quarantine_dir: Optional[Path] = QuarantineOption,
    json_output: bool = RunsJsonOption,
) -> None:
    """List repair runs kept in the quarantine: what each carried out, what became of it, its options."""
    where = target(path, config)
    found = service.runs(where, quarantine(quarantine_dir, where))
    if json_output:
        records = [
            {"run": r.run, "started": r.started, "state": r.state.value, "committed": r.committed,
             "purged": r.purged, "journaled": r.journaled, "changes": r.changes, "left": r.left, "bytes": r.bytes,
             "options": r.options}
            for r in found
        ]
        sys.stdout.buffer.write(orjson.dumps(records, option=orjson.OPT_INDENT_2) + b"\n")
        raise typer.Exit(0)
    if not found:
        typer.echo("no runs")
        raise typer.Exit(0)
    rows = [
        (r.run, r.started, r.state.value, str(r.changes), "?" if r.left is None else str(r.left),
         report.size(r.bytes), options_text(r.options))
        for r in found
    ]
    widths = [max(len(row[i]) for row in [_HEADINGS, *rows]) for i in range(len(_HEADINGS))]
    for row in [_HEADINGS, *rows]:
        cells = [
            cell.rjust(width) if heading in _NUMERIC else cell.ljust(width)
            for cell, width, heading in zip(row, widths, _HEADINGS, strict=True)
        ]
        typer.echo("  ".join(cells).rstrip())
    raise typer.Exit(0)


def options_text(options: Optional[dict]) -> str:
    """A run's repair options as the flags that give them; `-` for a run from before they were kept."""
    if options is None:
        return "-"
    flags = []
    for key, value in options.items():
        flag = f"--{key.replace('_', '-')}"
        if value is True:
            flags.append(flag)
        elif value in (None, False, [], "") or (key == "upload_age" and value == UploadAgeOption.default):
            continue
        elif isinstance(value, list):
            flags.append(f"{flag} {','.join(str(v) for v in value)}")
        else:
            flags.append(f"{flag} {report.display(str(value))}")
    return " ".join(flags) or "(defaults)"
