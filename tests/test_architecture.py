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
