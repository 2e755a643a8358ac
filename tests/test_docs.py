"""The README documents what the code does: finding ids, options, exit codes, JSON fields."""

import re
from pathlib import Path

import orjson
import typer.main
from clirun import DEMO, run_cli

from fsck import cli
from fsck.catalogue import CATALOGUE

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_finding_table_matches_catalogue():
    rows = re.findall(r"^\| `([a-z-]+)` \| (damage|garbage|notice) \| (disk|disk, S3) \| (.+) \|$", README, re.M)
    assert rows == [(c.id.value, c.severity.value, c.stores, c.meaning) for c in CATALOGUE]


def test_every_option_of_every_command_is_documented():
    command = typer.main.get_command(cli.app)
    for name, sub in command.commands.items():
        for param in sub.params:
            for opt in param.opts:
                if opt.startswith("--"):
                    assert f"`{opt}" in README, f"{name} {opt} is not in the README"


def test_every_exit_code_is_documented():
    table = dict(re.findall(r"^\| (\d+) \| (.+) \|$", README, re.M))
    for code in cli.ExitCode:
        if code is not cli.ExitCode.OK:
            assert str(code.value) in table, code


def test_json_fields_are_documented():
    result = run_cli("audit", str(DEMO), "--json")
    document = orjson.loads(result.stdout)
    for field in document:
        assert f"`{field}`" in README, field
    for field in document["summary"]:
        assert field in README, field
    for field in document["findings"][0]:
        assert f"`{field}`" in README, field


def test_tests_the_readme_names_exist():
    tests_dir = Path(__file__).parent
    defined = set()
    for path in tests_dir.glob("test_*.py"):
        defined |= set(re.findall(r"^def (test_\w+)", path.read_text(), re.M))
    named = set(re.findall(r"`(test_\w+)`", README))
    assert named and named <= defined, named - defined
