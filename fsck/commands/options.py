"""What the commands share: options, parsing of durations and id lists, progress bars, output."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO, NoReturn, Optional

import typer

from .. import durations, plan, report, service, verify
from ..catalogue import Id, UnknownId, parse_ids
from ..service import OperationalError, Target
from ..store import MAX_JOBS

# Far beyond any registry's age, and far enough below timedelta's limit that now - it is a date.


def parse_duration(text: str) -> timedelta:
    try:
        return durations.parse_duration(text, bare_zero=True)
    except durations.DurationError as error:
        raise typer.BadParameter(str(error)) from None


def finding_ids(text: Optional[str], option: str) -> Optional[frozenset[Id]]:
    if text is None:
        return None
    try:
        return parse_ids(text)
    except UnknownId as error:
        raise typer.BadParameter(f"{option}: unknown finding id(s) {error}") from None


def target(path: Optional[Path], config: Optional[Path], endpoint_url: Optional[str] = None) -> Target:
    if path is not None and config is not None:
        raise typer.BadParameter("give PATH or --config, not both")
    if path is None and config is None:
        raise typer.BadParameter("give the registry's storage PATH or its --config file")
    return service.resolve_target(
        _address(path) if path is not None else None, str(config) if config is not None else None,
        endpoint_url=endpoint_url,
    )


def _address(path: Path) -> str:
    """PATH as given: a Path folds the `//` of s3://bucket/prefix (a local directory named `s3:` is ./s3:)."""
    text = str(path)
    return "s3://" + text[len("s3:/"):] if text.startswith("s3:/") and not text.startswith("s3://") else text


class Bars:
    """tqdm on stderr, only when stderr is a terminal and not --quiet."""

    def __init__(self, quiet: bool) -> None:
        self.enabled = not quiet and sys.stderr.isatty()

    def counter(self, description: str, unit: str, total: int | None = None, scale: bool = False):
        if not self.enabled:  # tqdm is not even imported: 2 MiB that a run off a terminal would carry for nothing
            return service.Silent().counter(description, unit, total, scale)
        from tqdm import tqdm

        return tqdm(
            total=total, desc=description, unit=unit, unit_scale=scale, file=sys.stderr, leave=False, mininterval=0.25,
        )


@contextmanager
def interrupts_deferred() -> Iterator[Callable[[], bool]]:
    """Within, Ctrl-C (SIGINT, however often) only asks the work to stop (`requested()`): a repair
    stops after the change under way, and says what it did. After a Ctrl-C the process is on its
    way out: further ones are ignored, so that what it did is printed whole."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread receives signals
        yield lambda: False
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: received.append(signum))
    try:
        yield lambda: bool(received)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN if received else previous or signal.SIG_DFL)


def emit(data: bytes | Callable[[BinaryIO], None], output: Optional[Path], where: Target, code: int) -> NoReturn:
    """Write the report to `output` (or stdout) and exit with `code`; `data` may be a function that
    writes it as a stream."""
    if output is not None:
        _write_output(output, data, where)
    elif callable(data):
        data(sys.stdout.buffer)
        sys.stdout.flush()
    else:
        # A signal handled during the write (a Ctrl-C after a repair stopped) makes it write only part:
        # what it took is counted, the rest written after.
        rest = memoryview(data)
        while rest:
            rest = rest[sys.stdout.buffer.write(rest):]
        sys.stdout.flush()
    raise typer.Exit(code)


def _write_output(output: Path, data: bytes | Callable[[BinaryIO], None], where: Target) -> None:
    refuse_inside(output, where.root)
    try:
        with open(output, "wb") as handle:
            data(handle) if callable(data) else handle.write(data)
    except OSError as error:
        raise OperationalError(f"{output}: cannot write: {error.strerror}") from None


def refuse_inside(file: Path, root: str) -> None:
    """A report, a page or a metrics file is never written into the registry's tree."""
    if not root:
        return
    resolved, inside = os.path.realpath(file), os.path.realpath(root)
    if resolved == inside or resolved.startswith(inside + os.sep):
        raise typer.BadParameter(f"{file}: refusing to write inside the registry's root {root}")


def _beside(path: str) -> tuple[int, str]:
    """A new file beside `path`, hidden and `.tmp`, so a reader of `*.prom` or `*.html` passes it over."""
    directory, name = os.path.split(os.path.abspath(path))
    return tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")


def check_writable(path: str) -> None:
    """Raise OSError now, before a long audit, if `path` cannot be written: a probe file made and removed
    (permission bits alone say nothing for root or on a read-only mount)."""
    if os.path.isdir(path):
        raise IsADirectoryError(21, "Is a directory")
    handle, probe = _beside(path)
    os.close(handle)
    os.unlink(probe)


def write_atomically(path: str, data: bytes) -> None:
    """Write, fsync, rename over `path`: a reader sees the old file or the new one whole, never part of
    one. Raises OSError, leaving no temporary file behind."""
    handle, temporary = _beside(path)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide it from a collector running as another user
        os.rename(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    try:
        directory = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(directory)  # the rename itself survives a crash
    except OSError:
        pass
    finally:
        os.close(directory)


def quarantine(option: Optional[Path], where: Target) -> str:
    """Where removed items are kept, for every command that changes the registry or reads its quarantine:
    a directory, or on S3 a prefix of the registry's bucket."""
    return service.quarantine_of(where, str(option) if option is not None else None)


def unlock(where: Target, kept_in: str, run: Optional[str], dry_run: bool = False) -> None:
    """--break-lock RUN: remove the lock a run that died left on a bucket's quarantine, saying so."""
    if run is None:
        return
    if dry_run:
        raise typer.BadParameter("--break-lock changes the bucket: not with --dry-run")
    if service.break_lock(where, kept_in, run):
        typer.echo(f"registry-fsck: removed the lock {run} held on {kept_in}", err=True)
    else:
        warn(f"--break-lock {run}: {kept_in} holds no lock")


def warn(message: str) -> None:
    """One warning line on stderr."""
    typer.echo(f"registry-fsck: warning: {report.display(message)}", err=True)


PathArgument = typer.Argument(
    None, help="The registry's rootdirectory, or its docker/registry/v2 directory; or s3://BUCKET/ROOTDIRECTORY.",
    show_default=False,
)
EndpointUrlOption = typer.Option(
    None, "--endpoint-url", metavar="URL",
    help="The S3 endpoint of an s3:// PATH (default: AWS's, or AWS_ENDPOINT_URL); credentials from the standard "
    "AWS chain (environment, ~/.aws, instance role).",
)
ConfigOption = typer.Option(
    None, "--config", help="The registry's config.yml: its storage.filesystem or storage.s3 is read from it."
)
JsonOption = typer.Option(False, "--json", help="Print the whole report as one JSON document.")
PlanJsonOption = typer.Option(
    False, "--json", help="Print the plan as one JSON document; after acting, with the outcome of the run."
)
RunsJsonOption = typer.Option(
    False, "--json",
    help="Print the runs as one JSON list: each run's id, start, state, changes journaled and carried out, "
    "changes left (not undone), bytes held and repair options.",
)
OutputOption = typer.Option(None, "--output", "-o", help="Write the report to FILE instead of stdout.")
VerifyOption = typer.Option(False, "--verify", help="Re-hash every blob against its digest (all cores).")
VerifySubsetOption = typer.Option(
    None, "--verify-subset", metavar="N/M",
    help="Re-hash only slice N of M (the blobs whose digest modulo M is N-1): run 1/M to M/M on M nights "
    "to cover the whole store. Implies --verify.",
)


def verify_subset(text: Optional[str]) -> Optional[verify.Subset]:
    if text is None:
        return None
    try:
        return verify.Subset.parse(text)
    except ValueError as error:
        raise typer.BadParameter(f"--verify-subset {text!r}: {error}") from None
LimitOption = typer.Option(20, "--limit", min=0, help="Items listed per kind in the text report; 0 for all.")
UploadAgeOption = typer.Option("168h", "--upload-age", help="Uploads older than this are stale.")
QuietOption = typer.Option(False, "--quiet", "-q", help="No progress bars.")


def parse_jobs(value: Optional[int]) -> Optional[int]:
    if value is not None and not 1 <= value <= MAX_JOBS:
        raise typer.BadParameter(f"{value} is not a number of jobs from 1 to {MAX_JOBS}")
    return value


JobsOption = typer.Option(
    None, "--jobs", "-j", callback=parse_jobs, metavar="N",
    help="Storage operations in flight while walking and reading (default: two walker processes a core, at "
    "most 32, on a local disk; 32 threads on a network or FUSE file system).",
)
QuarantineOption = typer.Option(
    None, "--quarantine", help="Where removed items are kept (default: registry-fsck-quarantine beside docker/)."
)


def protection(path: Optional[Path]) -> plan.Protection:
    """The --protect file: references never removed (digest, repo@digest, repo:tag), one a line."""
    if path is None:
        return plan.Protection()
    try:
        with open(path, encoding="utf-8") as handle:
            return plan.parse_protection(handle)
    except OSError as error:
        raise typer.BadParameter(f"--protect {path}: {error.strerror}") from None
    except (plan.ProtectError, UnicodeDecodeError) as error:
        raise typer.BadParameter(f"--protect {path}: {error}") from None


ProtectOption = typer.Option(
    None, "--protect", help="File of references never removed: digest, repo@digest, repo:tag."
)
YesOption = typer.Option(False, "--yes", "-y", help="Act without asking (for scripts).")
DryRunOption = typer.Option(False, "--dry-run", "-n", help="Print the plan and stop.")
DeleteOption = typer.Option(False, "--delete", help="Delete instead of moving into the quarantine (no undo).")


BreakLockOption = typer.Option(
    None, "--break-lock", metavar="RUN",
    help="On S3: first remove the quarantine's lock that RUN (named in the refusal) left when it died.",
)
ForceOption = typer.Option(
    False, "--force", help="Act although the registry looks live, and on blobs although some manifests could not be "
    "parsed (never on what the audit could not read or follow).",
)


def refuse_both(dry_run: bool, yes: bool) -> None:
    if dry_run and yes:
        raise typer.BadParameter("--dry-run and --yes contradict each other")
