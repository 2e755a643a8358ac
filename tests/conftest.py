"""Shared fixtures: the real registry, and the demo tree built through it once per session."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# `tests.harness` is imported from the repository root, also under a bare `pytest`
# (which, unlike `python -m pytest`, does not put the working directory on sys.path).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness.registry import Registry, missing_binaries
from tests.harness.s3_fixtures import built, swift  # noqa: F401  (fixtures of the S3 tests)
from tests.harness.scenarios import Scenario, build_all
from tests.harness.tree import copy_tree


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "registry: needs Debian's docker-registry and skopeo")


def _require_binaries() -> None:
    missing = missing_binaries()
    if not missing:
        return
    message = f"real-registry tests need {', '.join(missing)} on PATH (Debian packages docker-registry, skopeo)"
    # CI must never pass by skipping the tests that matter.
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("registry"):
        _require_binaries()


@pytest.fixture(scope="session")
def registry_binaries() -> None:
    """Fails (under CI) or skips unless docker-registry and skopeo are installed."""
    _require_binaries()


@pytest.fixture
def registry(registry_binaries: None, tmp_path: Path) -> Iterator[Registry]:
    """A started registry over an empty `tmp_path/root`; stopped after the test."""
    with Registry(tmp_path / "root", workdir=tmp_path / "registry") as reg:
        yield reg


@pytest.fixture
def schema1_registry(registry_binaries: None, tmp_path: Path) -> Iterator[Registry]:
    """Like `registry`, with `compatibility.schema1.enabled`."""
    with Registry(tmp_path / "root", schema1=True, workdir=tmp_path / "registry") as reg:
        yield reg


@dataclass(frozen=True, slots=True)
class BuiltTree:
    root: Path
    scenario: Scenario


@pytest.fixture(scope="session")
def demo_build(registry_binaries: None, tmp_path_factory: pytest.TempPathFactory) -> BuiltTree:
    """The demo tree (`build_all`, schema1 included), built once; never modify it: use `demo`."""
    base = tmp_path_factory.mktemp("demo-build")
    with Registry(base / "root", schema1=True, workdir=base / "registry") as reg:
        scenario = build_all(reg)
    return BuiltTree(base / "root", scenario)


@pytest.fixture
def tree_copy(tmp_path: Path) -> Callable[[Path, str], Path]:
    """`tree_copy(src_root, name)`: a fresh copy of a registry root under this test's tmp_path."""

    def copy(src: Path, name: str = "copy") -> Path:
        return copy_tree(src, tmp_path / name)

    return copy


@pytest.fixture
def demo(demo_build: BuiltTree, tree_copy: Callable[[Path, str], Path]) -> BuiltTree:
    """A private copy of the demo tree, free to corrupt, with its expected facts."""
    return BuiltTree(tree_copy(demo_build.root, "demo"), demo_build.scenario)


@pytest.fixture
def demo_registry(registry_binaries: None, demo: BuiltTree, tmp_path: Path) -> Iterator[Registry]:
    """A registry serving this test's copy of the demo tree (`demo.root`)."""
    with Registry(demo.root, schema1=True, workdir=tmp_path / "demo-registry") as reg:
        yield reg
