"""The shape of the package: its layers, no import cycle, and the linter's rule set."""

import subprocess
import sys
from pathlib import Path

import grimp

REPO = Path(__file__).parent.parent


def test_the_layers_contract_holds():
    result = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"],
        cwd=REPO, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout


def test_no_module_of_the_package_takes_part_in_an_import_cycle():
    graph = grimp.build_graph("fsck")
    modules = sorted(graph.modules)
    imports = {m: graph.find_modules_directly_imported_by(m) for m in modules}
    cycles = []
    for start in modules:
        stack, seen = [(start, (start,))], set()
        while stack:
            module, path = stack.pop()
            for imported in imports.get(module, ()):
                if imported == start:
                    cycles.append(" -> ".join((*path, start)))
                elif imported not in seen:
                    seen.add(imported)
                    stack.append((imported, (*path, imported)))
    assert not cycles, cycles[:5]


def test_every_command_is_a_module_of_its_own():
    import fsck.cli  # noqa: F401  (registers the commands)
    from fsck.commands.app import app

    for command in app.registered_commands:
        assert command.callback.__module__ == f"fsck.commands.{command.callback.__name__}"


def test_ruff_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "fsck", "tests", "benchmarks"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]


def test_a_start_does_without_the_modules_of_other_targets_and_commands():
    """Every run pays for what the CLI imports at start (the peak memory of an audit of a small tree is
    within a few MiB of the registry's GC): the S3 driver, the HTML renderer, retain's policy and ls's
    listing are imported where they are used."""
    deferred = ("fsck.s3", "fsck.html", "fsck.policy", "fsck.listing", "fsck.listing_report", "fsck.pulllog", "boto3")
    result = subprocess.run(
        [sys.executable, "-c", f"import sys, fsck.cli; print([m for m in {deferred!r} if m in sys.modules])"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )
    assert result.stdout.strip() == "[]"
