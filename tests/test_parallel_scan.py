"""The walk on a pool (`--jobs`): the same inventory and the same report as a walk in one thread, on
real registry trees with damage in them; the store's own choice of pool; Ctrl-C to the whole process
group while walker processes run."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from clirun import DEMO, REPO, run_cli, snapshot

from fsck import manifests, scan
from fsck.store import Concurrency, LocalStore, PoolKind, concurrency_for, file_system_type
from tests.harness import tree

V2 = "docker/registry/v2"


@pytest.fixture(scope="module")
def wide_tree(tmp_path_factory):
    """The real demo tree with every repository copied under 40 namespaces (many repository units), 3,000
    orphan blobs (every blob fan-out directory), and damage of every kind the walk records."""
    root = tree.copy_tree(DEMO, tmp_path_factory.mktemp("wide") / "root")
    repositories = tree.copy_repositories(root, 40, "copy{n:02d}")
    tree.add_orphan_blobs(root, 3000)
    some = sorted(p.parent for p in (repositories / "copy07").rglob("_layers"))[0]
    (some / "_layers" / "stray-file").write_text("not a link directory\n")
    (some / "_manifests" / "tags" / "empty-tag").mkdir()
    links = sorted((some / "_manifests" / "revisions" / "sha256").iterdir())
    (links[0] / "link").write_text("garbage!!\n")
    (links[-1] / "link.0b6c1a2e-0000-4000-8000-000000000000.tmp").write_text("half")
    blob_dirs = sorted((root / V2 / "blobs" / "sha256" / "3f").iterdir())
    (blob_dirs[0] / "unexpected").write_text("x")
    (root / V2 / "blobs" / "sha256" / "zz").mkdir()
    (repositories / "copy11" / "Bad_Name").mkdir()
    return root


def inventory_facts(inventory):
    """Everything the walk recorded, in a form that compares equal when the records are the same."""
    return {
        "blobs": dict(inventory.blobs),
        "repositories": [
            (name, r.parts, r.has_tags_dir, r.layer_links, r.revisions, r.aliases, r.fully_read, r.tags,
             sorted(r.bad_links, key=repr), r.uploads)
            for name, r in inventory.repositories.items()
        ],
        **{what: sorted(getattr(inventory, what), key=repr)
           for what in ("oddities", "unreadable", "unknown", "empty_dirs", "leftovers", "followed")},
        "blobs_dir_readable": inventory.blobs_dir_readable,
    }


@pytest.mark.parametrize("kind, jobs", [(PoolKind.PROCESSES, 2), (PoolKind.PROCESSES, 3), (PoolKind.THREADS, 8)])
def test_the_pool_records_what_one_thread_records_in_the_same_repository_order(wide_tree, kind, jobs):
    store = LocalStore(str(wide_tree / V2))
    alone = scan.scan(store, concurrency=Concurrency(PoolKind.SERIAL, 1, "test"))
    pooled = scan.scan(store, concurrency=Concurrency(kind, jobs, "test"))
    assert len(alone.repositories) > 40 * 2 and len(alone.blobs) > 3000
    assert len(alone.oddities) >= 3 and alone.leftovers and alone.empty_dirs
    assert any(r.bad_links for r in alone.repositories.values())
    assert inventory_facts(pooled) == inventory_facts(alone)
    assert list(pooled.repositories) == list(alone.repositories)


@pytest.mark.parametrize("kind", [PoolKind.PROCESSES, PoolKind.THREADS])
def test_no_more_units_are_handed_to_walker_processes_than_their_window_ahead_of_the_merge(wide_tree, kind, monkeypatch):
    """Parts done ahead of the one being merged wait in this process: for processes, the window bounds
    what they hold; threads (a network store) are handed every unit as it is found."""
    store = LocalStore(str(wide_tree / V2))
    alone = scan.scan(store, concurrency=Concurrency(PoolKind.SERIAL, 1, "test"))
    monkeypatch.setattr(scan, "_WINDOW_PER_JOB", 1)
    monkeypatch.setattr(scan, "_POOL_AFTER_UNITS", 4)
    ahead: list[int] = []
    counts = {"handed": 0, "merged": 0}
    submit, merge = scan._Units._submit, scan._Walker.merge

    def handing(self, unit):
        counts["handed"] += 1
        ahead.append(counts["handed"] - counts["merged"])
        return submit(self, unit)

    def merging(self, part):
        counts["merged"] += 1
        return merge(self, part)

    monkeypatch.setattr(scan._Units, "_submit", handing)
    monkeypatch.setattr(scan._Walker, "merge", merging)
    pooled = scan.scan(store, concurrency=Concurrency(kind, 2, "test"))
    assert inventory_facts(pooled) == inventory_facts(alone)
    assert counts["handed"] == counts["merged"] > 2 * 4  # every unit went to the pool, and many more than the window
    if kind is PoolKind.PROCESSES:
        assert max(ahead) == 2  # the window: two jobs, one unit each
    else:
        assert max(ahead) > 2 * 4


def test_a_small_tree_walks_its_units_in_this_process_and_records_the_same(wide_tree):
    store = LocalStore(str(DEMO / V2))
    alone = scan.scan(store, concurrency=Concurrency(PoolKind.SERIAL, 1, "test"))
    queued = scan.scan(store, concurrency=Concurrency(PoolKind.PROCESSES, 2, "test"))
    assert inventory_facts(queued) == inventory_facts(alone)


def test_a_symbolic_link_inside_a_unit_gives_the_walk_of_one_thread(wide_tree, tmp_path):
    root = tree.copy_tree(wide_tree, tmp_path / "root")
    repositories = root / V2 / "repositories"
    outside = tmp_path / "elsewhere"
    shutil.move(repositories / "copy03", outside)
    (repositories / "copy03").symlink_to(outside)  # a namespace on another disk: walked by the parent
    first = sorted(p.parent for p in (repositories / "copy05").rglob("_layers"))[0]
    layer = sorted((first / "_layers" / "sha256").iterdir())[0]
    (first / "_layers" / "sha256" / ("0" * 64)).symlink_to(layer)  # inside a repository unit: an alias
    store = LocalStore(str(root / V2))
    alone = scan.scan(store, concurrency=Concurrency(PoolKind.SERIAL, 1, "test"))
    pooled = scan.scan(store, concurrency=Concurrency(PoolKind.PROCESSES, 2, "test"))
    assert [f.path for f in alone.followed] == ["repositories/copy03"]
    assert any("alias" in u.reason for u in alone.unknown)
    assert inventory_facts(pooled) == inventory_facts(alone)


def read_while_walking(store, kind=PoolKind.PROCESSES):
    """A walk on a pool with manifests read as it goes: (its inventory, what was read by the end of the
    walk, how many blobs each call saw, what `finish` returns, whether reading during the walk stopped)."""
    early = manifests.WhileWalking(store)
    seen_blobs = []

    def walked(inventory, names):
        seen_blobs.append(len(inventory.blobs))
        early.walked(inventory, names)

    inventory = scan.scan(store, concurrency=Concurrency(kind, 2, "test"), walked=walked)
    during = dict(early.parsed) if early.inventory is inventory else {}
    return inventory, during, seen_blobs, early.finish(inventory), early.stopped


def test_manifests_read_while_the_pool_walks_are_those_read_after_it(wide_tree):
    store = LocalStore(str(wide_tree / V2))
    inventory, during, seen_blobs, parsed, stopped = read_while_walking(store)
    after = manifests.read_manifests(store, manifests.named_by_links(inventory), inventory.blobs)
    assert parsed == after and len(after) > 20
    # Read as repositories were merged, each time with every blob known (a manifest's size is its blob's).
    assert len(during) == len(after)
    assert seen_blobs and set(seen_blobs) == {len(inventory.blobs)} and not stopped


def test_manifests_read_after_a_walk_begun_again_in_one_thread(wide_tree, tmp_path):
    root = tree.copy_tree(wide_tree, tmp_path / "root")
    first = sorted(p.parent for p in (root / V2 / "repositories" / "copy05").rglob("_layers"))[0]
    layer = sorted((first / "_layers" / "sha256").iterdir())[0]
    (first / "_layers" / "sha256" / ("0" * 64)).symlink_to(layer)  # inside a unit: the walk begins again
    store = LocalStore(str(root / V2))
    inventory, during, _, parsed, _ = read_while_walking(store)
    assert parsed == manifests.read_manifests(store, manifests.named_by_links(inventory), inventory.blobs)
    assert during == {}  # what was read of the first walk's inventory is not mixed in


def test_reading_during_the_walk_stops_after_two_slow_batches_and_the_rest_is_read_after(wide_tree, monkeypatch):
    store = LocalStore(str(wide_tree / V2))
    inventory = scan.scan(store, concurrency=Concurrency(PoolKind.SERIAL, 1, "test"))
    monkeypatch.setattr(manifests, "_SLOW_READ", -1.0)  # every read counted slow, as on a network mount
    monkeypatch.setattr(manifests, "_SWITCHING_SHARE", 0.0)
    early = manifests.WhileWalking(store)
    read = [0]
    for name in inventory.repositories:
        early.walked(inventory, [name])
        read.append(len(early.parsed))
    assert sum(after > before for before, after in zip(read, read[1:], strict=False)) == 2 and early.stopped
    assert early.finish(inventory) == manifests.read_manifests(
        store, manifests.named_by_links(inventory), inventory.blobs
    )


def report_without_clock(args):
    result = run_cli("audit", *args, "--json")
    document = orjson.loads(result.stdout)
    document.pop("generated_at")
    return result.returncode, document


def test_the_report_is_the_same_whatever_the_jobs(wide_tree):
    before = snapshot(wide_tree)
    one = report_without_clock([str(wide_tree), "--jobs", "1"])
    assert one[1]["summary"]["by_id"]["blob-orphan"]["count"] >= 3000
    assert report_without_clock([str(wide_tree)]) == one
    assert report_without_clock([str(wide_tree), "-j", "5"]) == one
    assert snapshot(wide_tree) == before


@pytest.mark.parametrize("value", ["0", "-3", "257", "1000000", "many"])
def test_an_absurd_number_of_jobs_is_one_line_and_a_usage_error(value):
    result = run_cli("audit", str(DEMO), "--jobs", value)
    assert result.returncode == 16, result.stderr
    assert "--jobs" in result.stderr and "Traceback" not in result.stderr


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def test_ctrl_c_to_the_process_group_while_walker_processes_run_is_one_line_and_leaves_none(wide_tree):
    process = subprocess.Popen(
        [sys.executable, "-m", "fsck", "audit", str(wide_tree), "--jobs", "2", "--json"], cwd=REPO,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group, as a shell gives a command
    )
    deadline = time.monotonic() + 60
    while not children_of(process.pid) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    walkers = children_of(process.pid)
    if not walkers:
        process.kill()
        pytest.skip("the audit ended before its walker processes could be seen")
    os.killpg(process.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
    stdout, stderr = process.communicate(timeout=60)
    assert (process.returncode, stderr, stdout) == (32, "registry-fsck: interrupted\n", "")
    def running(pid):
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + 10  # ended with the command, not left walking on their own
    while any(running(pid) for pid in walkers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(running(pid) for pid in walkers)


def test_the_store_chooses_processes_on_a_local_disk_and_threads_on_a_network_or_fuse_mount(tmp_path):
    mounts = tmp_path / "mountinfo"
    mounts.write_text(
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
        "40 22 0:35 / /srv/registry rw,relatime shared:2 - nfs4 server:/export rw,vers=4.2\n"
        "41 40 0:36 / /srv/registry/slow\\040disk rw shared:3 - fuse.slowfs slowfs rw\n"
    )
    assert file_system_type("/var/lib", str(mounts)) == "ext4"
    assert file_system_type("/srv/registry/docker", str(mounts)) == "nfs4"
    assert file_system_type("/srv/registry/slow disk/docker", str(mounts)) == "fuse.slowfs"
    assert file_system_type("/srv/registryx", str(mounts)) == "ext4"
    assert concurrency_for("ext4", 2).kind is PoolKind.PROCESSES and concurrency_for("ext4", 2).jobs == 4
    assert concurrency_for("ext4", 1).jobs == 2 and concurrency_for(None, 64).jobs == 32
    for remote in ("nfs4", "fuse.slowfs", "cifs"):
        assert concurrency_for(remote, 2).kind is PoolKind.THREADS and concurrency_for(remote, 2).jobs == 32
    assert file_system_type(str(tmp_path)) is not None
    assert LocalStore(str(tmp_path)).concurrency().kind in (PoolKind.PROCESSES, PoolKind.THREADS)


def test_a_walker_process_killed_from_outside_is_one_line_and_exit_8(wide_tree):
    process = subprocess.Popen(
        [sys.executable, "-m", "fsck", "audit", str(wide_tree), "--jobs", "2", "--json"], cwd=REPO,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not (walkers := children_of(process.pid)) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    if not walkers:
        pytest.skip("the audit ended before its walker processes could be seen")
    os.kill(walkers[0], signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=60)
    if process.returncode == 4:
        pytest.skip("the walker was done before it was killed")
    assert (process.returncode, stdout) == (8, "")
    assert "walker process" in stderr and stderr.count("\n") == 1, stderr


def test_a_walker_part_comes_back_as_the_inventory_it_packed(tmp_path):
    """Sets in order or not (`Digests`, or a plain set as a repository holds while walked), blobs in the
    digests' order with their sizes: every digest one object across the walk, each set asked by bisection."""
    import hashlib

    from fsck import layout, scan
    from fsck.store import LocalStore

    a, b, c, z = (bytes([n]) * 32 for n in (1, 2, 3, 26))
    many = {hashlib.sha256(bytes([n])).digest() for n in range(64)}  # a set's order is not theirs
    repository = scan.Repository(
        "r", layer_links={c, a, b, *many}, revisions=layout.Digests([b, a]),
        tags={"t": scan.Tag("t", a, True, layout.Digests([c, a]))}, aliases=set(),
    )
    packed = scan._pack_inventory(scan.Inventory("v2", blobs={c: 3, a: 1}, repositories={"r": repository}))
    walker = scan._Walker(LocalStore(str(tmp_path)), scan.Inventory("v2"), lambda _n: None)
    assert walker._merge_packed(packed) == ["r"]
    merged = walker.inventory.repositories["r"]
    assert isinstance(walker.inventory.blobs, layout.StoredBlobs)  # the first repository: every blob known
    assert list(walker.inventory.blobs.items()) == [(a, 1), (c, 3)]
    assert list(merged.layer_links) == sorted({a, b, c, *many})
    assert all(digest in merged.layer_links for digest in (a, b, c, *many)) and z not in merged.layer_links
    assert list(merged.revisions) == [a, b] and list(merged.tags["t"].index) == [a, c] and not merged.aliases
    held = {id(digest) for digest in walker.inventory.blobs}
    assert {id(d) for d in (*merged.layer_links, *merged.tags["t"].index) if d in (a, c)} <= held
    assert merged.tags["t"].current is next(d for d in walker.inventory.blobs if d == a)
