"""The commands, and how every error ends (one line, an fsck(8) exit code). Started by `entry`,
which handles Ctrl-C from before these imports."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import typer

from . import report
from .commands import audit, du, ls, purge, repair, retain, rm, runs, undo
from .commands.app import app
from .service import ExitCode, OperationalError

for _command in (audit.audit, du.du, ls.ls, repair.repair, rm.rm, retain.retain, undo.undo, runs.runs, purge.purge):  # in the order --help lists them
    app.command()(_command)

# typer may vendor its own click: find its UsageError through a public class.
_UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def _error(message: str) -> None:
    typer.echo(f"registry-fsck: error: {report.display(message)}", err=True)


def main(argv: list[str] | None = None, run: Callable[..., object] | None = None) -> None:
    try:
        outcome = (run or app)(args=argv, prog_name="registry-fsck", standalone_mode=False)
    except _UsageError as error:
        error.show()
        sys.exit(ExitCode.USAGE)
    except typer.Abort:  # end of input at a prompt (Ctrl-D); Ctrl-C is `entry.Interrupted`, handled there
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
