"""`registry-fsck ls`: what the registry holds, and what /v2/_catalog gets wrong; never writes to the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .. import service
from .options import (
    Bars,
    ConfigOption,
    EndpointUrlOption,
    JobsOption,
    OutputOption,
    PathArgument,
    QuietOption,
    emit,
    target,
)


def ls(
    path: Optional[Path] = PathArgument,
    repository: Optional[str] = typer.Argument(
        None, help="A repository: list its tags (digest, kind, platforms, size, last push).", show_default=False
    ),
    config: Optional[Path] = ConfigOption,
    json_output: bool = typer.Option(False, "--json", help="Print the listing as one JSON document."),
    output: Optional[Path] = OutputOption,
    quiet: bool = QuietOption,
    jobs: Optional[int] = JobsOption,
    endpoint_url: Optional[str] = EndpointUrlOption,
) -> None:
    """List repositories (with what /v2/_catalog shows wrongly or hides), or one repository's tags."""
    from .. import listing_report  # imported by the command itself: the other commands do without it

    if config is not None and path is not None and repository is None:
        path, repository = None, str(path)  # with --config, the one argument is the repository
    where = target(path, config, endpoint_url)
    listed = service.list_contents(where, repository, progress=Bars(quiet), jobs=jobs)
    code = int(service.ExitCode.OK if listed.complete else service.ExitCode.OPERATIONAL)
    if json_output:
        data = listing_report.to_json(where.root, where.v2, listed.complete, code, listed.repositories, listed.repository)
    elif listed.repository is not None:
        data = listing_report.repository_text(listed.repository, listed.complete).encode()
    else:
        data = listing_report.repositories_text(listed.repositories, listed.complete).encode()
    emit(data, output, where, code)
