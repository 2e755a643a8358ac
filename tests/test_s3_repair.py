"""Repair, undo, runs and purge on S3: a real object store (Swift with s3api) that the registry's own s3
driver wrote (tests/harness/s3_fixtures.py). Each test works on its own copy of a scenario's keys (a
server-side copy into a new rootdirectory), and a registry on the bucket proves what is served: after a
repair every tag that was intact still pulls with its digest, a new audit finds no garbage, and `undo`
puts every key back byte for byte (the listings, with their ETags, are equal)."""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest
from clirun import REPO, run_cli

from tests.harness.registry import Registry, S3Storage, write_config
from tests.harness.s3_fixtures import BUCKET, Built, Pushed, storage_of
from tests.test_repair import served_exactly

pytestmark = pytest.mark.registry

QUARANTINE = "registry-fsck-quarantine"
GARBAGE = {"blob-orphan", "blob-unreachable", "manifest-untagged", "layer-link-unused"}


class Copy:
    """A scenario's keys copied into a rootdirectory of their own, with a registry config on it."""

    def __init__(self, built: Built, pushed: Pushed, workdir: Path) -> None:
        self.built, self.pushed = built, pushed
        self.rootdirectory = f"repair/{pushed.topic}-{secrets.token_hex(3)}"
        self.storage: S3Storage = storage_of(built.swift, "/" + self.rootdirectory)
        client = built.swift.client()
        source = pushed.storage.rootdirectory.strip("/") + "/"
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda key: client.copy_object(
                Bucket=BUCKET, Key=f"{self.rootdirectory}/{key[len(source):]}", CopySource={"Bucket": BUCKET, "Key": key},
            ), built.swift.keys(BUCKET, source)))
        self.workdir = workdir / self.rootdirectory.rpartition("/")[2]
        self.workdir.mkdir(parents=True)
        self.config = write_config(self.workdir / "unused-root", self.workdir / "config.yml", s3=self.storage)

    def keys(self, below: str = "docker/") -> dict[str, tuple[int, str]]:
        return self.built.swift.keys(BUCKET, f"{self.rootdirectory}/{below}")

    def contents(self) -> dict[str, tuple[int, str, str]]:
        """Every key of the registry's tree: its size, ETag and the SHA-256 of its bytes."""
        client = self.built.swift.client()
        return {
            key: (size, etag, hashlib.sha256(client.get_object(Bucket=BUCKET, Key=key)["Body"].read()).hexdigest())
            for key, (size, etag) in self.keys().items()
        }

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return run_cli(*args, "--config", str(self.config), env={"PYTHONPATH": str(REPO)})

    def audit_ids(self) -> list[str]:
        result = self.cli("audit", "--json")
        assert result.returncode in (0, 1, 4), result.stderr
        return [f["id"] for f in orjson.loads(result.stdout)["findings"]]

    def served(self, name: str, deep: bool = True) -> list[str]:
        with Registry(self.workdir / "unused-root", workdir=self.workdir / name, s3=self.storage) as registry:
            return served_exactly(registry, self.pushed.scenario, deep)


def assert_restored(now: dict[str, tuple[int, str, str]], before: dict[str, tuple[int, str, str]]) -> None:
    """Byte for byte: the same keys, sizes and contents; the same ETag but where a multipart upload's ("-N")
    was copied back (a copy's ETag is its MD5)."""
    assert set(now) == set(before)
    for key, (size, etag, digest) in before.items():
        assert now[key][0] == size and now[key][2] == digest, key
        assert now[key][1] == etag or "-" in etag, key


@pytest.fixture
def copy_of(built: Built, tmp_path: Path):
    return lambda topic: Copy(built, built(topic), tmp_path)


@pytest.mark.parametrize("topic", ["deleted_manifests", "repushed_tag", "orphans"])
def test_repair_untagged_serves_every_tag_leaves_no_garbage_and_undo_restores_every_key(copy_of, topic: str) -> None:
    copy = copy_of(topic)
    before = copy.keys()
    contents = copy.contents()
    assert copy.served("before", deep=False) == []
    assert GARBAGE & set(copy.audit_ids()), "the scenario has garbage to remove"
    repaired = copy.cli("repair", "--yes", "--untagged")
    assert repaired.returncode in (0, 1), repaired.stdout + repaired.stderr
    assert "done" in repaired.stdout and "director" not in repaired.stdout  # a bucket has none
    after = copy.keys()
    assert set(after) < set(before) and all(after[key] == before[key] for key in after)
    assert not GARBAGE & set(copy.audit_ids())
    assert copy.served("after-repair") == []
    quarantined = copy.keys(f"{QUARANTINE}/")
    moved = {key for key in before if key not in after}
    held = {key.split("/files/", 1)[1] for key in quarantined if "/files/" in key}
    assert {key[len(copy.rootdirectory) + 1:].removeprefix("docker/registry/v2/") for key in moved} == held

    undone = copy.cli("undo")
    assert undone.returncode == 0, undone.stdout + undone.stderr
    assert_restored(copy.contents(), contents)
    assert copy.served("after-undo", deep=False) == []
    runs = copy.cli("runs", "--json")
    assert runs.returncode == 0, runs.stderr
    assert [r["state"] for r in orjson.loads(runs.stdout)] == ["undone"]
    assert not [key for key in copy.keys(f"{QUARANTINE}/") if "/files/" in key]


def test_repair_delete_frees_the_keys_and_purge_keeps_only_journals(copy_of) -> None:
    copy = copy_of("orphans")
    before = copy.keys()
    repaired = copy.cli("repair", "--yes", "--untagged")
    assert repaired.returncode in (0, 1), repaired.stderr
    assert [key for key in copy.keys(f"{QUARANTINE}/") if "/files/" in key]
    dry = copy.cli("purge", "--all", "--dry-run")
    assert dry.returncode == 0 and "purge: 1 run(s)" in dry.stdout, dry.stdout + dry.stderr
    purged = copy.cli("purge", "--all", "--yes")
    assert purged.returncode == 0, purged.stderr
    left = copy.keys(f"{QUARANTINE}/")
    assert left and all("/journal.jsonl/" in key for key in left)
    assert copy.served("after-purge") == []
    assert len(copy.keys()) < len(before)


def test_a_live_registry_on_the_bucket_refuses_the_repair(copy_of) -> None:
    copy = copy_of("orphans")
    before = copy.built.swift.keys(BUCKET, copy.rootdirectory + "/")
    with Registry(copy.workdir / "unused-root", workdir=copy.workdir / "live", s3=copy.storage):
        refused = copy.cli("repair", "--yes", "--untagged")
    assert refused.returncode == 8, refused.stderr
    assert "serving s3://" in refused.stderr and "stop it first (or --force)" in refused.stderr
    assert copy.built.swift.keys(BUCKET, copy.rootdirectory + "/") == before


def test_the_lock_says_the_store_cannot_make_it_exclusive_and_a_stale_one_refuses_until_broken(copy_of) -> None:
    """Swift's s3api answers conditional PUTs with 501: the lock is looked for, then written, and the run says so.
    A lock left by a run that died refuses with who held it and how long ago; --break-lock RUN removes it."""
    copy = copy_of("orphans")
    client = copy.built.swift.client()
    stale = {"run": "lock-0badc0de", "host": "elsewhere", "pid": 4242, "since": "2026-01-01T00:00:00Z"}
    lock_key = f"{copy.rootdirectory}/{QUARANTINE}/lock"
    client.put_object(Bucket=BUCKET, Key=lock_key, Body=orjson.dumps(stale))
    refused = copy.cli("repair", "--yes", "--untagged")
    assert refused.returncode == 8, refused.stderr
    assert "does not honour conditional PUTs" in refused.stderr
    error = [line for line in refused.stderr.splitlines() if line.startswith("registry-fsck: error: ")]
    assert len(error) == 1 and "holds the lock (held by lock-0badc0de (host elsewhere, pid 4242) since" in error[0]
    assert " d ago; if that run is gone: --break-lock lock-0badc0de" in error[0]
    assert copy.audit_ids() and copy.keys(f"{QUARANTINE}/") == {lock_key: copy.keys(f"{QUARANTINE}/")[lock_key]}
    wrong = copy.cli("repair", "--yes", "--untagged", "--break-lock", "lock-other")
    assert wrong.returncode == 8 and "held by lock-0badc0de, not lock-other" in wrong.stderr
    broken = copy.cli("repair", "--yes", "--untagged", "--break-lock", "lock-0badc0de")
    assert broken.returncode in (0, 1), broken.stderr
    assert "removed the lock lock-0badc0de" in broken.stderr
    assert lock_key not in copy.keys(f"{QUARANTINE}/")  # and this run's own lock is gone with it
    assert copy.served("after") == []


CRASH = """
import os, sys
sys.path.insert(0, {repo!r})
from datetime import datetime, timezone
from fsck import checks, plan, service
target = service.resolve_target(None, {config!r})
now = datetime.now(timezone.utc)
repair = service.plan_repair(service.load(target), checks.Policy(now=now), plan.Selection(untagged=True))
changes = []
def crash(kind):
    changes.append(kind)
    if len(changes) == {k}:
        os._exit(137)
service.carry_out(target, repair.plan, service.quarantine_of(target, None), now=now, after_change=crash)
print("finished", len(changes), ",".join(changes).replace(" ", "-"))
"""


def _crash_after(copy: Copy, k: int) -> subprocess.CompletedProcess:
    code = CRASH.format(repo=str(REPO), config=str(copy.config), k=k)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.slow
def test_killed_after_each_change_it_still_serves_a_new_repair_finishes_and_undo_restores(copy_of) -> None:
    """Every copy, delete batch and journal part is a change; killed right after the k-th, for every k."""
    first = copy_of("orphans")
    pristine = first.contents()
    whole = _crash_after(first, 10**6)
    assert whole.returncode == 0 and whole.stdout.startswith("finished"), whole.stderr
    changes = int(whole.stdout.split()[1])
    kinds = whole.stdout.split()[2].split(",")
    assert {"journal", "copy", "delete-batch"} <= set(kinds) and changes >= 5
    with ThreadPoolExecutor(3) as pool:  # each k on its own copy; the time is the store's and the processes'
        list(pool.map(lambda k: _crash_and_recover(copy_of("orphans"), k, pristine), range(1, changes)))


def _crash_and_recover(copy: Copy, k: int, pristine: dict[str, tuple[int, str, str]]) -> None:
    killed = _crash_after(copy, k)
    assert killed.returncode == 137, killed.stderr
    assert copy.served(f"crashed-{k}", deep=False) == [], f"after {k} changes"
    refused = copy.cli("undo")  # the killed run's lock stays, and says its process is gone
    assert refused.returncode == 8 and "(gone: no such process here)" in refused.stderr, f"after {k}: {refused.stderr}"
    stale = orjson.loads(copy.built.swift.client().get_object(
        Bucket=BUCKET, Key=f"{copy.rootdirectory}/{QUARANTINE}/lock")["Body"].read())
    again = copy.cli("repair", "--yes", "--untagged", "--break-lock", stale["run"])
    assert again.returncode in (0, 1), f"after {k}: {again.stderr}"
    while True:  # the newest run first, then the killed one
        undone = copy.cli("undo")
        if undone.returncode != 0:
            assert "nothing to undo" in undone.stderr, f"after {k}: {undone.stdout}{undone.stderr}"
            break
    assert_restored(copy.contents(), {f"{copy.rootdirectory}/{key.split('/', 2)[2]}": value
                                      for key, value in pristine.items()})
