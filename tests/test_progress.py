"""Progress goes to stderr only when stderr is a terminal, and never with --quiet."""

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

from clirun import DEMO, REPO


def run_with_terminal_stderr(*args):
    leader, follower = pty.openpty()
    # A new pty is 0x0; a real terminal has a size, and tqdm draws nothing in zero columns.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "fsck", *args], stdout=subprocess.PIPE, stderr=follower,
            stdin=subprocess.DEVNULL, cwd=REPO, timeout=120,
        )
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return result, b"".join(chunks).decode(errors="replace")
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)


def test_progress_on_a_terminal_stderr_only():
    result, stderr = run_with_terminal_stderr("audit", str(DEMO), "--verify")
    assert result.returncode == 4
    assert "scanning" in stderr
    assert "scanning" not in result.stdout.decode()


def test_quiet_silences_progress():
    result, stderr = run_with_terminal_stderr("audit", str(DEMO), "--quiet")
    assert result.returncode == 4
    assert stderr == ""


def test_a_run_off_a_terminal_does_not_load_the_progress_bars():
    # What a run without bars would carry for nothing (2 MiB of tqdm); on a terminal they are loaded.
    probe = (
        "import atexit, sys, runpy\n"
        "atexit.register(lambda: sys.stderr.write('tqdm loaded: %s\\n' % ('tqdm' in sys.modules)))\n"
        "sys.argv = ['registry-fsck', *sys.argv[1:]]\n"
        "runpy.run_module('fsck', run_name='__main__')\n"
    )
    for quiet in ((), ("--quiet",)):
        result = subprocess.run(
            [sys.executable, "-c", probe, "audit", str(DEMO), "--verify", *quiet], capture_output=True, text=True,
            stdin=subprocess.DEVNULL, cwd=REPO, timeout=120,
        )
        assert result.returncode == 4, result.stderr
        assert result.stderr.splitlines()[-1] == "tqdm loaded: False"
    result, stderr = run_with_terminal_stderr("audit", str(DEMO), "--verify")
    assert result.returncode == 4 and "scanning" in stderr
