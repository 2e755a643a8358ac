"""The command line: parses, wires the pipeline stages, and turns outcomes into exit codes."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import IntFlag
from pathlib import Path
from typing import NoReturn, Optional

import typer
from tqdm import tqdm

from . import checks, layout, manifests, report, scan, verify
from .config import ConfigError, load_config
from .catalogue import Id, Severity, UnknownId, parse_ids


class ExitCode(IntFlag):
    """fsck(8)-style bits, combined."""

    OK = 0
    REPAIRED = 1
    PROBLEMS_LEFT = 4
    OPERATIONAL = 8
    USAGE = 16
    INTERRUPTED = 32


class OperationalError(Exception):
    """Stops the run with one line on stderr and exit code 8."""


app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Audit and repair the filesystem storage of a Docker Distribution (registry:2) registry.",
)

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """`168h`, `7d`, `1h30m`, `90s`: the units the registry's own config uses, plus d and w."""
    compact = text.strip().replace(" ", "")
    parts = _DURATION.findall(compact)
    if not compact or "".join(number + unit for number, unit in parts) != compact:
        raise typer.BadParameter(f"{text!r} is not a duration like 168h, 7d or 30m")
    return timedelta(seconds=sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts))


def finding_ids(text: Optional[str], option: str) -> Optional[frozenset[Id]]:
    if text is None:
        return None
    try:
        return parse_ids(text)
    except UnknownId as error:
        raise typer.BadParameter(f"{option}: unknown finding id(s) {error}") from None


@dataclass(frozen=True, slots=True)
class Target:
    root: str  # the rootdirectory
    v2: str
    http_addr: str | None = None  # from --config: where the registry would answer if it is running


def resolve_target(path: Optional[Path], config: Optional[Path]) -> Target:
    if path is not None and config is not None:
        raise typer.BadParameter("give PATH or --config, not both")
    if path is None and config is None:
        raise typer.BadParameter("give the registry's storage PATH or its --config file")
    try:
        registry_config = load_config(str(config)) if config is not None else None
        v2 = layout.find_v2(str(path) if path is not None else registry_config.rootdirectory)
    except (ConfigError, layout.NotARegistry) as error:
        raise OperationalError(str(error)) from None
    v2 = os.path.abspath(v2)
    return Target(layout.rootdirectory_of(v2), v2, registry_config.http_addr if registry_config else None)


class _Progress:
    """tqdm on stderr, only when stderr is a terminal and not --quiet."""

    def __init__(self, quiet: bool) -> None:
        self.enabled = not quiet and sys.stderr.isatty()

    def counter(self, description: str, unit: str, total: int | None = None, scale: bool = False):
        return tqdm(
            total=total, desc=description, unit=unit, unit_scale=scale, file=sys.stderr,
            disable=not self.enabled, leave=False, mininterval=0.25,
        )


@dataclass(frozen=True, slots=True)
class Loaded:
    inventory: scan.Inventory
    manifests: dict
    corrupt: frozenset[layout.Digest]


def load(target: Target, *, verify_blobs: bool, quiet: bool) -> Loaded:
    """Scan, read the manifests and, with --verify, re-hash the blobs: everything judging needs."""
    progress = _Progress(quiet)
    with progress.counter("scanning", " dirs") as bar:
        inventory = scan.scan(target.v2, bar.update)
    named = manifests.named_by_links(inventory)
    with progress.counter("manifests", " manifests", total=len(named)):
        parsed = manifests.read_manifests(target.v2, named, inventory.blobs)
    corrupt: frozenset[layout.Digest] = frozenset()
    if verify_blobs:
        total = sum(inventory.blobs.values())
        with progress.counter("verifying", "B", total=total, scale=True) as bar:
            verification = verify.verify_blobs(target.v2, inventory.blobs, bar.update)
        corrupt = verification.corrupt
        inventory.unreadable.extend(scan.Oddity(path, reason) for path, reason in verification.unreadable)
    return Loaded(inventory, parsed, corrupt)


def run_audit(target: Target, policy: checks.Policy, *, verify_blobs: bool, quiet: bool) -> checks.Audit:
    loaded = load(target, verify_blobs=verify_blobs, quiet=quiet)
    return checks.audit(loaded.inventory, loaded.manifests, policy, loaded.corrupt)


def audit_exit_code(audit: checks.Audit) -> ExitCode:
    code = ExitCode.OK
    if any(f.severity is not Severity.NOTICE for f in audit.findings):
        code |= ExitCode.PROBLEMS_LEFT
    if not audit.complete:
        code |= ExitCode.OPERATIONAL
    return code


def emit(data: bytes, output: Optional[Path], target: Target, code: int) -> NoReturn:
    """Write the report to `output` (or stdout) and exit with `code`."""
    if output is not None:
        _write_output(output, data, target)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    raise typer.Exit(code)


def _write_output(output: Path, data: bytes, target: Target) -> None:
    resolved = os.path.realpath(output)
    root = os.path.realpath(target.root)
    if resolved == root or resolved.startswith(root + os.sep):
        raise typer.BadParameter(f"{output}: refusing to write inside the registry's root {target.root}")
    try:
        with open(output, "wb") as handle:
            handle.write(data)
    except OSError as error:
        raise OperationalError(f"{output}: cannot write: {error.strerror}") from None


PathArgument = typer.Argument(
    None, help="The registry's rootdirectory, or its docker/registry/v2 directory.", show_default=False
)
ConfigOption = typer.Option(
    None, "--config", help="The registry's config.yml: storage.filesystem.rootdirectory is read from it."
)
JsonOption = typer.Option(False, "--json", help="Print the whole report as one JSON document.")
OutputOption = typer.Option(None, "--output", "-o", help="Write the report to FILE instead of stdout.")
VerifyOption = typer.Option(False, "--verify", help="Re-hash every blob against its digest (all cores).")
LimitOption = typer.Option(20, "--limit", min=0, help="Items listed per kind in the text report; 0 for all.")
UploadAgeOption = typer.Option("168h", "--upload-age", help="Uploads older than this are stale.")
QuietOption = typer.Option(False, "--quiet", "-q", help="No progress bars.")


@app.command()
def audit(
    path: Optional[Path] = PathArgument,
    config: Optional[Path] = ConfigOption,
    json_output: bool = JsonOption,
    output: Optional[Path] = OutputOption,
    verify_blobs: bool = VerifyOption,
    limit: int = LimitOption,
    upload_age: str = UploadAgeOption,
    ignore: Optional[str] = typer.Option(
        None, "--ignore", help="Leave these finding ids (comma-separated) out of the report and the exit code."
    ),
    quiet: bool = QuietOption,
) -> None:
    """Report garbage and damage. Never writes to the registry."""
    age = parse_duration(upload_age)
    ignored = finding_ids(ignore, "--ignore")
    target = resolve_target(path, config)
    policy = checks.Policy(now=datetime.now(timezone.utc), upload_age=age)
    result = run_audit(target, policy, verify_blobs=verify_blobs, quiet=quiet)
    if ignored is not None:
        result = checks.ignore(result, ignored)
    code = audit_exit_code(result)
    context = report.Context(target.root, target.v2, policy.now, verify_blobs)
    data = (
        report.to_json(result, context, int(code))
        if json_output
        else report.to_text(result, context, limit).encode("utf-8")
    )
    emit(data, output, target, int(code))


@app.callback()
def _commands() -> None:
    """Audit and repair the filesystem storage of a Docker Distribution (registry:2) registry."""


# typer may vendor its own click: find its UsageError through a public class.
_UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def _error(message: str) -> None:
    typer.echo(f"registry-fsck: error: {report.display(message)}", err=True)


from . import repair_cli  # noqa: E402,F401  (registers repair, undo, runs, purge)


def main(argv: list[str] | None = None, run: Callable[..., object] | None = None) -> None:
    try:
        outcome = (run or app)(args=argv, prog_name="registry-fsck", standalone_mode=False)
    except _UsageError as error:
        error.show()
        sys.exit(ExitCode.USAGE)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("registry-fsck: interrupted", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    except OperationalError as error:
        _error(str(error))
        sys.exit(ExitCode.OPERATIONAL)
    except BrokenPipeError:
        # The reader went away (| head): nothing more to say, and Python must not complain at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(ExitCode.OK)
    except OSError as error:  # one the stages did not expect (a disk gone, a permission changed mid-run)
        _error(str(error))
        sys.exit(ExitCode.OPERATIONAL)
    sys.exit(outcome if isinstance(outcome, int) else ExitCode.OK)
