"""The slow-storage mount of benchmarks/slowfs.py: a faithful, read-only view that the kernel never caches.

Run at delay 0: these check what the mount shows and which requests reach the server, not time.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import run  # noqa: E402
import slowfs  # noqa: E402
import synth  # noqa: E402

pytestmark = pytest.mark.skipif(slowfs.missing_prerequisite() is not None, reason=str(slowfs.missing_prerequisite()))


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("slowfs") / "root"
    facts = synth.generate(str(root), synth.PRESETS["smoke"], 1)
    return root, facts


def listing(top: Path) -> dict[str, tuple[str, bytes | None]]:
    seen = {}
    for directory, dirs, files in os.walk(top):
        for name in dirs:
            seen[os.path.relpath(os.path.join(directory, name), top)] = ("dir", None)
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as handle:
                seen[os.path.relpath(path, top)] = ("file", handle.read())
    return seen


def test_the_mount_shows_the_source_byte_for_byte_and_hides_its_requests_file(tree, tmp_path):
    root, facts = tree
    with slowfs.mounted(str(root), str(tmp_path / "mnt"), 0.0, 4, str(tmp_path / "server.log")) as mount:
        shown = listing(Path(mount.path))
        assert shown == listing(root)
        assert sum(kind == "file" for kind, _ in shown.values()) == facts["files"]
        assert slowfs.REQUESTS_FILE.lstrip("/") not in os.listdir(mount.path)


def test_the_mount_is_read_only(tree, tmp_path):
    root, _ = tree
    with slowfs.mounted(str(root), str(tmp_path / "mnt"), 0.0, 4, str(tmp_path / "server.log")) as mount:
        with pytest.raises(OSError) as refused:
            open(os.path.join(mount.path, "docker", "new"), "wb")
        assert refused.value.errno == errno.EROFS
    assert not (root / "docker" / "new").exists()


def test_the_kernel_caches_nothing_so_every_walk_and_read_reaches_the_server(tree, tmp_path):
    root, _ = tree
    with slowfs.mounted(str(root), str(tmp_path / "mnt"), 0.0, 4, str(tmp_path / "server.log")) as mount:
        walks = []
        for _ in range(2):
            before = mount.requests()
            subprocess.run(["find", mount.path, "-type", "f"], stdout=subprocess.DEVNULL, check=True)
            walks.append(mount.requests() - before)
        assert walks[0]["readdir"] > 0 and walks[0]["getattr"] > 0
        assert walks[1] == walks[0]

        blob = next(path for path in Path(mount.path).rglob("data"))
        reads = []
        for _ in range(2):
            before = mount.requests()
            blob.read_bytes()
            reads.append(mount.requests() - before)
        assert reads[0]["open"] == reads[1]["open"] == 1
        assert reads[0]["read"] >= 1 and reads[1]["read"] == reads[0]["read"]


def test_the_mount_is_gone_when_the_block_ends_even_by_an_exception(tree, tmp_path):
    root, _ = tree
    where = tmp_path / "mnt"
    with pytest.raises(KeyboardInterrupt):
        with slowfs.mounted(str(root), str(where), 0.0, 4, str(tmp_path / "server.log")) as mount:
            assert os.path.ismount(mount.path)
            raise KeyboardInterrupt
    assert not os.path.ismount(where)
    with open("/proc/mounts") as mounts:
        assert str(where) not in mounts.read()


@pytest.mark.registry
def test_through_the_mount_the_gc_would_delete_exactly_the_audits_orphan_blobs(tree, tmp_path):
    root, facts = tree
    with slowfs.mounted(str(root), str(tmp_path / "mnt"), 0.0, 8, str(tmp_path / "server.log")) as mount:
        config = tmp_path / "registry.yml"
        storage = {"filesystem": {"rootdirectory": mount.path}}
        config.write_text(json.dumps({"version": 0.1, "log": {"level": "error"}, "storage": storage}))
        gc_out = tmp_path / "gc.txt"
        with open(gc_out, "wb") as handle:
            subprocess.run([run.REGISTRY_BIN, "garbage-collect", "--dry-run", str(config)], stdout=handle, check=True)
        report = tmp_path / "fsck.json"
        audit = subprocess.run([*run.fsck_command(), "audit", mount.path, "--json", "--quiet", "-o", str(report)])
        assert audit.returncode in (0, 4)
    orphans = run.report_findings(str(report), "blob-orphan")
    assert orphans == set(facts["orphans"]) != set()
    assert run.gc_eligible(str(gc_out)) == orphans
