"""The repair prompt on a real terminal: declining leaves the tree alone (exit 4), Ctrl-C too (exit 32)."""

import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest
from clirun import REPO

from tests.harness.registry import age_uploads

pytestmark = pytest.mark.registry


def tree_listing(root):
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, ds, fs in os.walk(root) for n in ds + fs)


def answer_prompt(root, keys: bytes | None):
    """Run repair with its terminal on a pty, wait for the question, type `keys` (None: press Ctrl-C, that is,
    send SIGINT as the terminal would); return (exit code, screen)."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "fsck", "repair", str(root)],
        stdin=follower, stdout=follower, stderr=follower, cwd=REPO, start_new_session=True,
        preexec_fn=None,
    )
    os.close(follower)
    screen = b""
    deadline = time.monotonic() + 60
    try:
        while b"Carry out" not in screen and time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1)
            if ready:
                screen += os.read(leader, 65536)
        assert b"Carry out" in screen, screen.decode(errors="replace")
        if keys is None:
            time.sleep(0.5)  # as a person would: the program is waiting for the answer by then
            process.send_signal(signal.SIGINT)
        else:
            os.write(leader, keys)
        code = process.wait(timeout=60)
        try:
            while True:
                ready, _, _ = select.select([leader], [], [], 0.2)
                if not ready:
                    break
                screen += os.read(leader, 65536)
        except OSError:
            pass
    finally:
        if process.poll() is None:
            process.kill()
        os.close(leader)
    return code, screen.decode(errors="replace")


def test_declined_prompt_changes_nothing_and_exits_4(demo):
    age_uploads(demo.root)
    before = tree_listing(demo.root)
    code, screen = answer_prompt(demo.root, b"n\r")
    assert code == 4, screen
    assert tree_listing(demo.root) == before


def test_ctrl_c_at_the_prompt_exits_32(demo):
    age_uploads(demo.root)
    before = tree_listing(demo.root)
    code, screen = answer_prompt(demo.root, None)
    assert code == 32, screen
    assert tree_listing(demo.root) == before


def test_after_yes_at_the_prompt_the_plan_is_not_printed_again(demo):
    age_uploads(demo.root)
    code, screen = answer_prompt(demo.root, b"y\r")
    assert code & 1, screen  # repaired
    assert screen.count("plan: ") == 1, screen
    assert "done" in screen.split("Carry out", 1)[1]
