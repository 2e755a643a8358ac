"""The typer application every command registers with."""

from __future__ import annotations

import typer

from .. import __version__

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain help, as click prints it: typer's rich panels label every flag `<bool>` (--help included).
    rich_markup_mode=None,
    help="Audit and repair the filesystem storage of a Docker Distribution (registry:2) registry.",
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"registry-fsck {__version__}")
        raise typer.Exit(0)


@app.callback()
def _commands(
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Audit and repair the filesystem storage of a Docker Distribution (registry:2) registry."""
