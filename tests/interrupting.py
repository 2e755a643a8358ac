"""Run the real command line and send it a real SIGINT at a chosen point, as a Ctrl-C arriving there.

    python tests/interrupting.py POINT MARK [--entry-point] -- ARGS...

POINT is `import:MODULE` (when MODULE starts to be imported: in the middle of start-up) or
`after:METHOD:N[:TIMES]` (TIMES SIGINTs, default 1, right after the N-th call of
fsck.store.LocalStore.METHOD returns, in the command's process or in one of the walker processes it
forks, which count on from the calls made before the fork; the first process to get there sends them,
always to the command's own process, as a Ctrl-C reaches the process a shell started). Each SIGINT sent
appends a line to the file MARK, so a test knows the point was reached. The command runs as `python -m fsck` runs it, or, with --entry-point,
through the console script pyproject.toml declares. Nothing of the program is replaced: the store's
method still does its work, and the signal goes through the program's own handlers.
"""

import argparse
import importlib
import os
import re
import runpy
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's fsck, as `python -m fsck` run from it imports


def _sender(mark: str, times: int):
    command = os.getpid()

    def send() -> None:
        try:  # one sender, whichever process gets to the point first
            os.close(os.open(mark + ".sending", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        for _ in range(times):
            with open(mark, "a") as handle:
                handle.write("SIGINT\n")
            os.kill(command, signal.SIGINT)  # in the command's process, the handler runs before kill() returns

    return send


class _SignalOnImport:
    """A finder that finds nothing: it only notices the import starting."""

    def __init__(self, module: str, send) -> None:
        self.module, self.send, self.sent = module, send, False

    def find_spec(self, name, path=None, target=None):
        if name == self.module and not self.sent:
            self.sent = True
            self.send()
        return None


def _signal_after(method: str, nth: int, send) -> None:
    from fsck.store import LocalStore

    real = getattr(LocalStore, method)
    calls = 0

    def counted(*args, **kwargs):
        nonlocal calls
        result = real(*args, **kwargs)
        calls += 1
        if calls == nth:
            send()
        return result

    setattr(LocalStore, method, counted)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("point")
    parser.add_argument("mark")
    parser.add_argument("--entry-point", action="store_true")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    options = parser.parse_args()
    args = options.args[1:] if options.args[:1] == ["--"] else options.args
    kind, _, spec = options.point.partition(":")
    if kind == "import":
        sys.meta_path.insert(0, _SignalOnImport(spec, _sender(options.mark, 1)))
    else:
        method, nth, *times = spec.split(":")
        _signal_after(method, int(nth), _sender(options.mark, int(times[0]) if times else 1))
    if options.entry_point:
        declared = re.search(r'^registry-fsck = "(.+):(.+)"$', (REPO / "pyproject.toml").read_text(), re.MULTILINE)
        module, function = declared.groups()
        sys.argv = ["registry-fsck", *args]
        getattr(importlib.import_module(module), function)()
    else:
        sys.argv = ["fsck", *args]
        runpy.run_module("fsck", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
