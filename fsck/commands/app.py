"""The typer application every command registers with."""

from __future__ import annotations

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Audit and repair the filesystem storage of a Docker Distribution (registry:2) registry.",
)


@app.callback()
def _commands() -> None:
    """Audit and repair the filesystem storage of a Docker Distribution (registry:2) registry."""
