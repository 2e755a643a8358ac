"""`registry-fsck du`: where the space goes, per repository; never writes to the registry."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer

from .. import checks, layout, report, service, usage_report
from ..usage import SortKey, select, unknown_names
from .options import (
    Bars,
    ConfigOption,
    EndpointUrlOption,
    JobsOption,
    OutputOption,
    QuietOption,
    UploadAgeOption,
    emit,
    parse_duration,
    target,
)


def du(
    path: Optional[Path] = typer.Argument(
        None, help="The registry's rootdirectory, or its docker/registry/v2 directory.", show_default=False
    ),
    repositories: Optional[list[str]] = typer.Argument(
        None, metavar="REPO",
        help="Only these repositories; a prefix ending with / (team/) adds a subtotal row for its namespace.",
        show_default=False,
    ),
    config: Optional[Path] = ConfigOption,
    sort: SortKey = typer.Option(SortKey.EXCLUSIVE, "--sort", help="Order of the rows: by name, or biggest first."),
    top: int = typer.Option(0, "--top", min=0, metavar="N", help="Only the first N rows (0: all)."),
    json_output: bool = typer.Option(False, "--json", help="Print the usage as one JSON document."),
    csv_output: bool = typer.Option(False, "--csv", help="Print the rows as CSV, bytes as integers."),
    output: Optional[Path] = OutputOption,
    upload_age: str = UploadAgeOption,
    quiet: bool = QuietOption,
    jobs: Optional[int] = JobsOption,
    endpoint_url: Optional[str] = EndpointUrlOption,
) -> None:
    """Where the space goes: per repository its tags, manifests, referenced, exclusive and shared bytes,
    its garbage, and what removing it would free. Never writes to the registry."""
    if json_output and csv_output:
        raise typer.BadParameter("give --json or --csv, not both")
    names = list(repositories or [])
    if config is not None and path is not None:
        names.insert(0, str(path))  # with --config, every positional is a REPO
        path = None
    for name in names:
        _check_name(name)
    age = parse_duration(upload_age)
    where = target(path, config, endpoint_url)
    policy = checks.Policy(now=datetime.now(timezone.utc), upload_age=age)

    def refuse_unknown(known: list[str]) -> None:
        missing = unknown_names(known, names)
        if missing:
            what = "; ".join(
                f"no repository {'under' if n.endswith('/') else 'named'} {report.display(n)}" for n in missing
            )
            raise typer.BadParameter(f"{what} in {report.display(where.v2)}")

    result, usage = service.audit_and_usage(
        where, policy, namespaces=tuple(n for n in names if n.endswith("/")), progress=Bars(quiet), jobs=jobs,
        names_check=refuse_unknown,
    )
    code = int(service.ExitCode.OPERATIONAL if not result.complete else service.ExitCode.OK)
    shown = select(usage, names, sort, top)
    context = report.Context(where.root, where.v2, policy.now, False)
    if json_output:
        data = usage_report.to_json(usage, shown, context, code)
    elif csv_output:
        data = usage_report.to_csv(shown).encode()
    else:
        data = usage_report.to_text(usage, shown, context).encode()
    emit(data, output, where, code)


def _check_name(name: str) -> None:
    """A repository name (`a/b/c`, the registry's grammar) or a prefix of whole components (`team/`)."""
    components = name[:-1].split("/") if name.endswith("/") else name.split("/")
    if not name or not all(layout.valid_repository_component(c) for c in components):
        raise typer.BadParameter(
            f"{report.display(name)!r} is not a repository name (lowercase components like team/app) "
            "or a namespace prefix ending with / (team/)"
        )
