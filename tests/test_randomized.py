"""Random registry histories, driven through the real registry, through the differential check.

Each seed runs a fixed number of random operations (push image or multi-arch, OCI or
Docker v2s2, nested index, referrer, cosign-style signature tag, re-push of a tag, API
delete by digest, orphan blob, unfinished upload, push by digest) against a fresh
`docker-registry`; the tree then goes through both `garbage-collect` dry runs, the 2.8
model and the audit (`tests/harness/randomized.py`). Every assertion message carries the
seed and the operations. Replay one seed:

    REGISTRY_FSCK_SEED=7 python3 -m pytest -q tests/test_randomized.py -m slow
    REGISTRY_FSCK_SEED=7 REGISTRY_FSCK_OPS=20 ...    # with another number of operations
"""

from __future__ import annotations

from pathlib import Path

import pytest
from clirun import audit_records

from tests.harness.randomized import (
    FINAL_STEPS,
    OPERATIONS,
    RandomRun,
    check_differential,
    facts_of,
    generate,
    replay_ops,
    replay_seed,
)
from tests.harness.registry import Registry

pytestmark = pytest.mark.registry

SEEDS = tuple(range(1, 11))
OPS = 14
QUICK_SEED, QUICK_OPS = 0, 10
BUDGET = 45.0  # seconds of operations per seed at most; a slow machine runs fewer


def differential_for(seed: int, ops: int, tmp_path: Path) -> RandomRun:
    with Registry(tmp_path / "root", workdir=tmp_path / "registry") as reg:
        scenario, run = generate(reg, seed, ops, budget=BUDGET)
    root = tmp_path / "root"
    context = run.context()
    records = audit_records(root)
    assert not [r for r in records if r["id"] in ("unexpected", "dir-unreadable", "link-invalid", "link-mismatch")], context
    check_differential(root, facts_of(scenario, root), records, tmp_path / "work", context)
    return run


@pytest.mark.slow
@pytest.mark.parametrize("seed", [replay_seed()] if replay_seed() is not None else SEEDS)
def test_random_histories_agree_with_gc_up_to_the_named_differences(seed: int, tmp_path: Path) -> None:
    differential_for(seed, replay_ops(OPS), tmp_path)


def test_one_random_history_agrees_with_gc(tmp_path: Path) -> None:
    """The fast subset: one seed, fewer operations, in every run."""
    run = differential_for(QUICK_SEED, QUICK_OPS, tmp_path)
    assert len(run.log) >= QUICK_OPS and not run.truncated


def test_the_generator_is_seeded(tmp_path: Path) -> None:
    """Same seed, same operations and same digests: what makes a printed seed replayable."""
    logs = []
    for attempt in range(2):
        with Registry(tmp_path / f"root{attempt}", workdir=tmp_path / f"registry{attempt}") as reg:
            scenario, run = generate(reg, 3, 6)
        logs.append((run.log, scenario.to_json()))
    assert logs[0] == logs[1]
    assert {entry.split()[0] for entry in logs[0][0]} <= {name for name, _ in OPERATIONS} | set(FINAL_STEPS)

