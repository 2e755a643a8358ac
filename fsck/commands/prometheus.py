"""`audit --prometheus FILE`: each run recorded for node_exporter's textfile collector, failed runs too.

`on_every_run` wraps the command: it checks FILE can be written before the audit starts, and when
the run ends in an error (not a registry, a usage error, Ctrl-C) it writes the success gauge at 0
before the error goes on to its one line and exit code. `record` writes a finished audit.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer

from .. import layout, metrics
from ..checks import Audit
from ..config import ConfigError, load_config
from ..service import OperationalError, Target
from .options import check_writable, refuse_inside, warn, write_atomically

PrometheusOption = typer.Option(
    None, "--prometheus", metavar="FILE",
    help="Also write the summary as Prometheus metrics to FILE (atomically; on every run, a failed one too), "
    "for node_exporter's textfile collector.",
)
PrometheusRepositoriesOption = typer.Option(
    False, "--prometheus-repositories", help="With --prometheus: add per-repository series (one per repository "
    "with findings).",
)


class NotWritten(OperationalError):
    """FILE could not be written: nothing more to record."""


def _root_label(path: Optional[Path], config: Optional[Path]) -> str:
    """The `root` a run that never found its target is recorded under: the one a success would carry."""
    try:
        if path is not None:
            return layout.rootdirectory_of(os.path.abspath(layout.find_v2(str(path))))
        if config is not None:
            return load_config(str(config)).rootdirectory
    except (layout.NotARegistry, ConfigError, OSError):
        if path is not None:
            return layout.rootdirectory_of(os.path.abspath(path))
    return ""


def _write(file: Path, text: str) -> None:
    try:
        write_atomically(str(file), text.encode())
    except OSError as error:
        raise NotWritten(f"{file}: cannot write the metrics: {error.strerror or error}") from None


def on_every_run(command: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(command)
    def run(**options: object) -> None:
        file, per_repository = options["prometheus_file"], options["prometheus_repositories"]
        if file is None:
            if per_repository:
                raise typer.BadParameter("--prometheus-repositories needs --prometheus FILE")
            return command(**options)
        started = datetime.now(timezone.utc)
        root = _root_label(options["path"], options["config"])
        refuse_inside(file, root)
        try:
            check_writable(str(file))
        except OSError as error:
            raise NotWritten(f"{file}: cannot write the metrics: {error.strerror or error}") from None
        try:
            return command(**options)
        except (typer.Exit, NotWritten):
            raise  # a finished audit (recorded by `record`), or FILE is what failed
        except BaseException:
            elapsed = (datetime.now(timezone.utc) - started).total_seconds()
            try:
                _write(file, metrics.failed(root, started, elapsed))
            except NotWritten as error:
                warn(str(error))
            raise

    return run


def record(
    file: Optional[Path], per_repository: bool, audit: Audit, where: Target, generated_at: datetime, code: int
) -> None:
    """A finished audit: `generated_at` is when it began (its JSON report's), so the duration is its own."""
    if file is None:
        return
    try:
        refuse_inside(file, where.root)
    except typer.BadParameter as refused:
        raise NotWritten(refused.message) from None
    elapsed = (datetime.now(timezone.utc) - generated_at).total_seconds()
    _write(file, metrics.succeeded(audit, where.root, generated_at, elapsed, code, per_repository=per_repository))
