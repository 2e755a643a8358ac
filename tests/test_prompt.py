"""The repair prompt on a real terminal: declining leaves the tree alone (exit 4), Ctrl-C too (exit 32)."""

import os

import pytest
from clirun import answer_on_a_terminal

from tests.harness.registry import age_uploads

pytestmark = pytest.mark.registry


def tree_listing(root):
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, ds, fs in os.walk(root) for n in ds + fs)


def answer_prompt(root, keys: bytes | None):
    """Run repair on a terminal, wait for its question, type `keys` (None: Ctrl-C); return (exit code, screen)."""
    return answer_on_a_terminal(["repair", str(root)], b"Carry out", keys)


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
