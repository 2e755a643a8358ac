"""The console script and `python -m fsck`: Ctrl-C is handled from here on, before the imports
(typer, orjson, tqdm) that take most of the start-up time.

SIGINT raises `Interrupted`, not KeyboardInterrupt: typer turns a KeyboardInterrupt into a silent
exit 130 before any caller sees it, and click's prompts turn it into Abort. Nothing in the
libraries catches `Interrupted`, so every command ends the same way: one line, exit 32.
"""

from __future__ import annotations

import ctypes
import gc
import signal
import sys

INTERRUPTED = 32  # service.ExitCode.INTERRUPTED, which cannot be imported before the handler is in place
# An audit builds millions of objects that live to the end of the run, none of them garbage: at
# Python's default (a collection every 700 new containers) the cycle collector goes over them again and
# again, 5-10% of a large audit's time. Cycles are still collected, a hundred times less often.
COLLECT_AFTER = (100_000, 50, 100)
# glibc serves a block of 128 KiB or more from a mapping of its own, given back when freed, but each
# such block freed raises that threshold to its size (up to 32 MiB): the audit's growing tables then
# land in the heap, and what they leave behind when they grow stays resident (6 MiB of a 300k-file
# tree's 91). Fixed at its default, the threshold stops moving.
M_MMAP_THRESHOLD = -3  # mallopt's parameter, from glibc's malloc.h
MMAP_THRESHOLD_BYTES = 128 * 1024


class Interrupted(BaseException):
    """Ctrl-C (SIGINT). A BaseException, as KeyboardInterrupt: `except Exception` must not swallow it."""


def _interrupt(_signum: int, _frame: object) -> None:
    # Further Ctrl-C while this one unwinds (closing files, releasing the lock, printing) are ignored:
    # the process is on its way out, and a second exception in the middle of that would end in a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise Interrupted


def _interrupted() -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\n")  # off the line the terminal echoed ^C on (a prompt, a progress bar)
    sys.stderr.write("registry-fsck: interrupted\n")
    sys.exit(INTERRUPTED)


def _fix_mmap_threshold() -> None:
    """On glibc; elsewhere (musl, macOS) a no-op or no mallopt at all, and nothing is changed."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def main() -> None:
    _fix_mmap_threshold()
    # During the imports a Ctrl-C waits for them to finish (a few tenths of a second): an exception
    # raised inside a C extension's initialisation can crash the interpreter (orjson 3.8 does).
    received: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, _frame: received.append(signum))
    gc.set_threshold(*COLLECT_AFTER)
    from .cli import main as run

    try:
        signal.signal(signal.SIGINT, _interrupt)
        if received:
            # As `_interrupt` does: the Ctrl-C that keeps coming while this one unwinds must find it ignored.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            raise Interrupted
        run()
    except Interrupted:
        _interrupted()
    finally:
        # The command is over, its output written: a Ctrl-C now must not turn the exit into a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
