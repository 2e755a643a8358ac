"""Slow storage: a read-only FUSE passthrough that delays every request, and the benchmark run through it.

    python benchmarks/slowfs.py bench [--delay-ms 1] [--threads 64] [--tree ROOT | --repos 70] [--rounds 1]
                                      [--fsck-args '--jobs 16'] [--clients 16] [--out DIR] [--json FILE]
    python benchmarks/slowfs.py scaling [--delay-ms 1] [--threads 64] [--tree ROOT | --repos 70]
    python benchmarks/slowfs.py mount SRC MOUNT [--delay-ms 1] [--threads 64]    # foreground; Ctrl-C unmounts
    python benchmarks/slowfs.py read-manifests SRC_V2 MOUNTED_V2                   # fsck's read_manifests timed

The server (libfuse3 through `mfusepy`, multithreaded: up to --threads server threads, all kept
when idle) sleeps --delay-ms in every lookup and getattr (both reach its getattr), opendir,
readdir, readlink, statfs, open and read; release is not delayed. The kernel caches nothing:
entry, attribute and negative timeouts 0, direct_io on every file, no readdir cache. So every
run pays the delay on every request, and since the sleep releases the GIL, requests in flight
overlap: the delay is per request, not a queue. Directory entries carry their type (d_type),
as a network file system's do. The server counts the requests it delayed; the count is read
through the hidden file `/.slowfs-requests` (listed nowhere, neither counted nor delayed).

`bench` mounts a tree (`--tree ROOT`, the registry's rootdirectory; or a synthetic one of
`--repos N`, generated once under --dir), writes a registry config pointing at the mount, and
times in interleaved rounds (best of --rounds; 1 by default, a round takes minutes at 1 ms):

    find        `find MOUNT -type f | wc -l`
    gc          `docker-registry garbage-collect --dry-run CONFIG`
    gc-untagged `docker-registry garbage-collect --dry-run --delete-untagged CONFIG`
    fsck        `registry-fsck audit MOUNT --json --quiet -o FILE` plus --fsck-args

with the requests each made and their rate. Beside the ratios it prints the server's ceiling:
requests per second with --clients parallel `find`s over disjoint subtrees, on a second mount
of the same tree with no delay and on the delayed one. It checks that the blobs the GC's dry
run would delete are the audit's `blob-orphan` findings (exit 1 on a MISMATCH). `scaling`
shows the throughput with 1, 2, 4, ... parallel clients and that a second `find` is as slow as
the first. Missing /dev/fuse, libfuse3 or mfusepy: one line, exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes.util
import errno
import importlib.util
import json
import os
import platform
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import run  # noqa: E402
import synth  # noqa: E402

REQUESTS_FILE = "/.slowfs-requests"
DEFAULT_THREADS = 64
DEFAULT_REPOS = 70
DEFAULT_DIR = "/var/tmp/bench/slowfs"


# ---------------------------------------------------------------------------------------------- the server


class SlowPassthrough:
    """The operations mfusepy calls: a read-only view of `source` that sleeps `delay` s per request.

    Not a subclass of mfusepy.Operations, so that only what is defined here is registered with
    libfuse (the rest answers ENOSYS, and the mount is read-only anyway).
    """

    use_ns = True

    def __init__(self, source: str, delay: float) -> None:
        self.source = source.rstrip("/") or "/"
        self.delay = delay
        self.requests: Counter[str] = Counter()
        self.requests_lock = threading.Lock()
        self.snapshots: dict[int, bytes] = {}
        self.next_snapshot = -1  # negative file handles: the requests file's snapshots

    def _pay(self, operation: str) -> None:
        with self.requests_lock:
            self.requests[operation] += 1
        if self.delay:
            time.sleep(self.delay)  # releases the GIL: the other server threads go on meanwhile

    def _real(self, path: str) -> str:
        return self.source + path

    def init_with_config(self, conn_info, config) -> None:
        if config is None:
            return
        config.entry_timeout = 0.0
        config.attr_timeout = 0.0
        config.negative_timeout = 0.0
        config.direct_io = 1
        config.kernel_cache = 0
        config.auto_cache = 0

    def getattr(self, path: str, fh: int | None = None) -> dict:
        if path == REQUESTS_FILE:
            return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": 1 << 20}
        self._pay("getattr")
        try:
            st = os.lstat(self._real(path))
        except OSError as error:
            raise OSError(error.errno, error.strerror) from None
        return {
            "st_mode": st.st_mode, "st_nlink": st.st_nlink, "st_size": st.st_size, "st_uid": st.st_uid,
            "st_gid": st.st_gid, "st_atime": st.st_atime_ns, "st_mtime": st.st_mtime_ns, "st_ctime": st.st_ctime_ns,
        }

    def readlink(self, path: str) -> str:
        self._pay("readlink")
        return os.readlink(self._real(path))

    def opendir(self, path: str) -> int:
        self._pay("opendir")
        if not os.path.isdir(self._real(path)):
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        return 0

    def readdir(self, path: str, fh: int) -> list:
        self._pay("readdir")
        entries: list = [(".", stat.S_IFDIR, 0), ("..", stat.S_IFDIR, 0)]
        with os.scandir(self._real(path)) as found:
            for entry in found:
                if entry.is_symlink():
                    kind = stat.S_IFLNK
                elif entry.is_dir(follow_symlinks=False):
                    kind = stat.S_IFDIR
                else:
                    kind = stat.S_IFREG
                entries.append((entry.name, kind, 0))
        return entries

    def statfs(self, path: str) -> dict:
        self._pay("statfs")
        st = os.statvfs(self._real(path))
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files", "f_flag", "f_frsize")
        return {key: getattr(st, key) for key in keys} | {"f_namemax": st.f_namemax}

    def open(self, path: str, flags: int) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        if path == REQUESTS_FILE:
            with self.requests_lock:
                snapshot = json.dumps(dict(self.requests)).encode() + b"\n"
                handle = self.next_snapshot
                self.next_snapshot -= 1
                self.snapshots[handle] = snapshot
            return handle & 0xFFFFFFFFFFFFFFFF
        self._pay("open")
        return os.open(self._real(path), os.O_RDONLY)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        snapshot = self.snapshots.get(fh - (1 << 64)) if fh >= 1 << 63 else None
        if snapshot is not None:
            return snapshot[offset:offset + size]
        self._pay("read")
        return os.pread(fh, size, offset)

    def release(self, path: str, fh: int) -> int:
        if fh >= 1 << 63:
            self.snapshots.pop(fh - (1 << 64), None)
        else:
            os.close(fh)
        return 0


def serve(source: str, mountpoint: str, delay: float, threads: int, clone_fd: bool = False) -> None:
    import mfusepy

    options = {"max_threads": threads, "max_idle_threads": threads}
    if clone_fd:
        options["clone_fd"] = True
    mfusepy.FUSE(
        SlowPassthrough(source, delay), mountpoint, foreground=True, nothreads=False, ro=True,
        fsname="slowfs", subtype="slowfs", **options,
    )


def missing_prerequisite() -> str | None:
    """Why no FUSE mount can be made here, in one line; None when it can."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing (no FUSE in this kernel or container)"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not readable and writable by this user"
    if not ctypes.util.find_library("fuse3"):
        return "libfuse3 is missing (Debian: apt-get install fuse3)"
    if importlib.util.find_spec("mfusepy") is None:
        return "mfusepy is missing (pip install -e '.[bench]')"
    if os.geteuid() != 0 and not shutil.which("fusermount3"):
        return "fusermount3 is missing (Debian: apt-get install fuse3)"
    return None


# ---------------------------------------------------------------------------------------------- mounts


@dataclass(frozen=True, slots=True)
class Mounted:
    path: str
    pid: int
    delay: float
    threads: int

    def requests(self) -> Counter[str]:
        with open(self.path + REQUESTS_FILE, "rb") as handle:
            return Counter(json.loads(handle.read()))

    def server_threads(self) -> int:
        try:
            return len(os.listdir(f"/proc/{self.pid}/task"))
        except OSError:
            return 0


def unmount(path: str) -> None:
    tool = shutil.which("fusermount3")
    for lazy in (False, True):
        argv = [tool, "-uz" if lazy else "-u", path] if tool else ["umount", *(["-l"] if lazy else []), path]
        for _ in range(5):
            if not os.path.ismount(path) or subprocess.run(argv, capture_output=True).returncode == 0:
                return
            time.sleep(0.2)


@contextlib.contextmanager
def mounted(
    source: str, mountpoint: str, delay: float, threads: int, log_path: str, clone_fd: bool = False
) -> Iterator[Mounted]:
    """A server in its own session (so a Ctrl-C reaches this process, which unmounts), until the block ends."""
    os.makedirs(mountpoint, exist_ok=True)
    argv = [
        sys.executable, os.path.abspath(__file__), "mount", source, mountpoint,
        "--delay-ms", repr(delay * 1000), "--threads", str(threads), *(["--clone-fd"] if clone_fd else []),
    ]
    with open(log_path, "ab") as log:
        server = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not os.path.ismount(mountpoint):
            if server.poll() is not None or time.monotonic() > deadline:
                with open(log_path, errors="replace") as log:
                    tail = log.read()[-1500:]
                raise RuntimeError(f"the FUSE server did not mount {mountpoint} (exit {server.poll()}):\n{tail}")
            time.sleep(0.05)
        yield Mounted(mountpoint, server.pid, delay, threads)
    finally:
        unmount(mountpoint)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.terminate()
            try:
                server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        with contextlib.suppress(OSError):
            os.rmdir(mountpoint)


# ---------------------------------------------------------------------------------------------- clients


def subtrees(root: str) -> list[str]:
    """Disjoint directories, relative to a registry root, that together hold every file under v2.

    One per blob prefix (blobs/sha256/xx) and per repository's _layers, _manifests and _uploads:
    repositories nest (in namespaces and in other repositories), so one directory above them
    would leave one client with most of the tree.
    """
    v2 = os.path.join("docker", "registry", "v2")
    blobs = os.path.join(v2, "blobs", "sha256")
    found = []
    with contextlib.suppress(FileNotFoundError):
        found += sorted(os.path.join(blobs, name) for name in os.listdir(os.path.join(root, blobs)))
    for directory, dirs, _ in os.walk(os.path.join(root, v2, "repositories")):
        found += sorted(os.path.relpath(os.path.join(directory, name), root) for name in dirs if name.startswith("_"))
        dirs[:] = sorted(name for name in dirs if not name.startswith("_"))
    return found


@dataclass(frozen=True, slots=True)
class Load:
    clients: int
    seconds: float
    requests: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def parallel_finds(mount: Mounted, parts: list[str], clients: int) -> Load:
    """`clients` find processes at once, each over its share of `parts` (round robin)."""
    groups = [parts[index::clients] for index in range(clients)]
    before = sum(mount.requests().values())
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            ["find", *(os.path.join(mount.path, part) for part in group), "-type", "f"],
            stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )
        for group in groups if group
    ]
    codes = [process.wait() for process in processes]
    seconds = time.perf_counter() - started
    if any(codes):
        raise RuntimeError(f"a parallel find failed: exit codes {codes}")
    return Load(clients, seconds, sum(mount.requests().values()) - before)


def warm_source(root: str) -> None:
    """Every file and directory of the source in the page cache, so the delay is what the mount adds."""
    subprocess.run(
        ["sh", "-c", f"find {shlex.quote(root)} -type f -print0 | xargs -0 -r cat > /dev/null"], check=False
    )


# ---------------------------------------------------------------------------------------------- trees


@dataclass(frozen=True, slots=True)
class Tree:
    root: str
    facts: dict | None  # synth.json's, when the tree is a generated one


def tree_from(args) -> Tree:
    if args.tree:
        root = os.path.abspath(args.tree)
        if not os.path.isdir(os.path.join(root, "docker", "registry", "v2")):
            sys.exit(f"--tree {root}: no docker/registry/v2 in it")
        meta = os.path.join(os.path.dirname(root), "synth.json")
        facts = None
        if os.path.isfile(meta):
            with open(meta) as handle:
                facts = json.load(handle)
            if os.path.abspath(facts.get("root", "")) != root:
                facts = None
        return Tree(root, facts)
    params = synth.params_from("default", repos=args.repos)
    directory = os.path.abspath(args.dir or os.path.join(DEFAULT_DIR, f"r{args.repos}"))
    facts = run.ensure_tree(directory, params, None)
    return Tree(os.path.join(directory, "root"), facts)


# ---------------------------------------------------------------------------------------------- scaling


def scaling(args, tree: Tree, work: str) -> int:
    parts = subtrees(tree.root)
    warm_source(tree.root)
    delay = args.delay_ms / 1000
    counts = [n for n in (1, 2, 4, 8, 16, 32, 64) if n <= max(args.threads, 1)]
    print(f"tree {tree.root}: {len(parts)} subtrees; server threads {args.threads}", flush=True)
    with mounted(tree.root, os.path.join(work, "mnt"), delay, args.threads, os.path.join(work, "server.log")) as mnt:
        print(f"\nno kernel cache: `find MOUNT -type f` twice in a row, delay {args.delay_ms:g} ms")
        for attempt in (1, 2):
            before = sum(mnt.requests().values())
            started = time.perf_counter()
            subprocess.run(["find", mnt.path, "-type", "f"], stdout=subprocess.DEVNULL, check=True)
            seconds = time.perf_counter() - started
            print(f"  find #{attempt}: {seconds:7.2f} s, {sum(mnt.requests().values()) - before} requests", flush=True)
        print(f"\nparallel finds over disjoint subtrees, delay {args.delay_ms:g} ms")
        scaling_table(mnt, parts, counts)
        print(f"  server threads alive: {mnt.server_threads()} (of at most {args.threads} serving)")
    with mounted(tree.root, os.path.join(work, "mnt0"), 0.0, args.threads, os.path.join(work, "server0.log")) as mnt:
        print("\nthe same with no delay: the server's own ceiling")
        scaling_table(mnt, parts, [n for n in counts if n <= 16])
    return 0


def scaling_table(mount: Mounted, parts: list[str], counts: list[int]) -> None:
    print(f"  {'clients':>7} {'seconds':>8} {'requests':>9} {'req/s':>8} {'speed-up':>8}")
    first = None
    for clients in counts:
        load = parallel_finds(mount, parts, clients)
        first = first or load
        speedup = first.seconds / load.seconds if load.seconds else 0
        print(f"  {clients:>7} {load.seconds:8.2f} {load.requests:>9} {load.rate:8.0f} {speedup:7.2f}x", flush=True)


# ---------------------------------------------------------------------------------------------- bench


@dataclass
class Timed:
    measurement: run.Measurement
    requests: list[int] = field(default_factory=list)
    by_operation: dict[str, int] = field(default_factory=dict)  # of the best run


def bench(args, tree: Tree, work: str) -> int:
    delay = args.delay_ms / 1000
    out = os.path.abspath(args.out or os.path.join(work, "out"))
    os.makedirs(out, exist_ok=True)
    parts = subtrees(tree.root)
    fsck_extra = shlex.split(args.fsck_args)
    print(f"tree {tree.root}; warming the source's page cache ...", flush=True)
    warm_source(tree.root)

    ceiling: dict[str, Load] = {}
    with mounted(tree.root, os.path.join(work, "mnt0"), 0.0, args.threads, os.path.join(out, "server0.log")) as mnt0:
        parallel_finds(mnt0, parts, args.clients)  # once untimed: the server's threads started
        ceiling["delay 0"] = max((parallel_finds(mnt0, parts, args.clients) for _ in range(3)), key=lambda x: x.rate)
    print(f"server ceiling, delay 0, {args.clients} clients: {ceiling['delay 0'].rate:.0f} requests/s", flush=True)

    mnt_path = os.path.join(work, "mnt")
    with mounted(tree.root, mnt_path, delay, args.threads, os.path.join(out, "server.log")) as mnt:
        parallel_finds(mnt, parts, args.clients)
        ceiling[f"delay {args.delay_ms:g} ms"] = parallel_finds(mnt, parts, args.clients)
        one = parallel_finds(mnt, parts, 1)
        print(
            f"server ceiling, delay {args.delay_ms:g} ms, {args.clients} clients: "
            f"{ceiling[f'delay {args.delay_ms:g} ms'].rate:.0f} requests/s (1 client: {one.rate:.0f})",
            flush=True,
        )
        ceiling[f"delay {args.delay_ms:g} ms, 1 client"] = one

        config = os.path.join(out, "registry.yml")
        with open(config, "w") as handle:  # JSON is YAML
            storage = {"filesystem": {"rootdirectory": mnt.path}}
            json.dump({"version": 0.1, "log": {"level": "error"}, "storage": storage}, handle)
        paths = {name: os.path.join(out, f"{name}.txt") for name in ("find", "gc", "gc-untagged")}
        report = os.path.join(out, "fsck.json")
        base_report = os.path.join(out, "fsck-base.json")
        q = shlex.quote
        plan: list[tuple[str, list[str], str | None]] = [
            ("find", ["sh", "-c", f"find {q(mnt.path)} -type f | wc -l"], paths["find"]),
            ("gc", [run.REGISTRY_BIN, "garbage-collect", "--dry-run", config], paths["gc"]),
            ("gc-untagged", [run.REGISTRY_BIN, "garbage-collect", "--dry-run", "--delete-untagged", config],
             paths["gc-untagged"]),
            ("fsck", [*run.fsck_command(), "audit", mnt.path, "--json", "--quiet", "-o", report, *fsck_extra], None),
        ]
        if args.baseline:
            base = [*package_command(args.baseline), "audit", mnt.path, "--json", "--quiet", "-o", base_report]
            plan.append(("fsck-base", [*base, *shlex.split(args.baseline_args)], None))
        skip = {name.strip() for name in args.skip.split(",") if name.strip()}
        if not os.access(run.REGISTRY_BIN, os.X_OK):
            skip |= {"gc", "gc-untagged"}
        plan = [step for step in plan if step[0] not in skip]
        timed = {
            name: Timed(run.Measurement(name, argv[2] if argv[:2] == ["sh", "-c"] else shlex.join(argv)))
            for name, argv, _ in plan
        }
        started = time.perf_counter()
        print(f"timing: best of {args.rounds} interleaved round(s), no warm-up (the mount caches nothing)", flush=True)
        for round_number in range(1, args.rounds + 1):
            for name, argv, stdout_path in plan:
                before = mnt.requests()
                wall, rss, user, system, code = run.run_child(argv, stdout_path)
                made = mnt.requests() - before
                t = timed[name]
                t.measurement.exit_code = code
                t.measurement.runs.append(wall)
                t.requests.append(sum(made.values()))
                if t.measurement.best == wall:
                    t.measurement.user, t.measurement.system = user, system
                    t.by_operation = dict(made)
                t.measurement.peak_rss_kib = max(t.measurement.peak_rss_kib, rss)
                print(
                    f"  round {round_number} {name:<12} {wall:8.2f} s  {sum(made.values()):>8} requests  exit {code}",
                    flush=True,
                )
        threads_alive = mnt.server_threads()
        total = time.perf_counter() - started
    return report_bench(args, tree, out, timed, ceiling, paths, (report, base_report), threads_alive, total)


def report_bench(
    args, tree: Tree, out: str, timed: dict[str, Timed], ceiling: dict[str, Load], paths: dict[str, str],
    reports: tuple[str, str], threads_alive: int, total: float,
) -> int:
    report, base_report = reports
    best = {name: t.measurement.best for name, t in timed.items()}
    ok = {name for name, t in timed.items() if t.measurement.exit_code in (0, 4)}
    checks: dict[str, str] = {}
    files = tree.facts["files"] if tree.facts else None
    if "find" in ok:
        with open(paths["find"]) as handle:
            counted = int(handle.read().split()[0])
        if files is not None:
            checks["find count = generator files"] = (
                "MATCH" if counted == files else f"MISMATCH (find {counted}, generator {files})"
            )
        files = counted
    orphans = run.report_findings(report, "blob-orphan") if "fsck" in ok else None
    if "fsck" in timed and orphans is None:
        checks["fsck report"] = f"MISMATCH (no readable report; exit {timed['fsck'].measurement.exit_code})"
    eligible = run.gc_eligible(paths["gc"]) if "gc" in ok else None
    if "gc" in timed and eligible is None:
        checks["gc dry run"] = f"MISMATCH (exit {timed['gc'].measurement.exit_code})"
    if eligible is not None and orphans is not None:
        checks["gc eligible = fsck blob-orphan"] = (
            "MATCH" if eligible == orphans
            else f"MISMATCH (gc only: {len(eligible - orphans)}, fsck only: {len(orphans - eligible)})"
        )
    base_orphans = run.report_findings(base_report, "blob-orphan") if "fsck-base" in ok else None
    if "fsck-base" in timed and base_orphans is None:
        checks["fsck-base report"] = f"MISMATCH (no readable report; exit {timed['fsck-base'].measurement.exit_code})"
    if eligible is not None and base_orphans is not None:
        checks["gc eligible = fsck-base blob-orphan"] = (
            "MATCH" if eligible == base_orphans
            else f"MISMATCH (gc only: {len(eligible - base_orphans)}, fsck-base only: {len(base_orphans - eligible)})"
        )
    if eligible is not None and tree.facts:
        expected = set(tree.facts["orphans"])
        checks["gc eligible = generator orphans"] = (
            "MATCH" if eligible == expected else f"MISMATCH ({len(eligible)} vs {len(expected)})"
        )
    ratios = {
        "fsck/gc": run.ratio(best.get("fsck"), best.get("gc")),
        "fsck/gc-untagged": run.ratio(best.get("fsck"), best.get("gc-untagged")),
        "fsck/find": run.ratio(best.get("fsck"), best.get("find")),
        "gc-untagged/gc": run.ratio(best.get("gc-untagged"), best.get("gc")),
    }
    if "fsck-base" in timed:
        ratios |= {
            "fsck-base/gc": run.ratio(best.get("fsck-base"), best.get("gc")),
            "fsck-base/gc-untagged": run.ratio(best.get("fsck-base"), best.get("gc-untagged")),
            "fsck/fsck-base": run.ratio(best.get("fsck"), best.get("fsck-base")),
        }
    zero = ceiling["delay 0"]
    delayed = ceiling[f"delay {args.delay_ms:g} ms"]

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print()
    print(
        f"slow-storage benchmark, {when}, {platform.node() or 'host'}: {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; registry-fsck {package_origin(run.fsck_command())}"
        f"{'; fsck-base ' + package_origin(package_command(args.baseline)) if args.baseline else ''}; "
        f"delay {args.delay_ms:g} ms per request; server threads {args.threads} (alive at the end: {threads_alive})"
    )
    print(f"tree {tree.root}: {files} files; fsck args: {args.fsck_args or '(none: the defaults)'}")
    print()
    print(f"{'command':<12} {'best s':>8} {'runs s':>18} {'requests':>9} {'req/s':>7} {'in flight':>9} {'exit':>4}")
    for name, t in timed.items():
        m = t.measurement
        runs = " ".join(f"{r:.1f}" for r in m.runs)
        index = m.runs.index(m.best)
        rate = t.requests[index] / m.best if m.best else 0
        # Requests in flight on average: how much of the server's parallelism the client used.
        in_flight = rate * args.delay_ms / 1000
        print(
            f"{name:<12} {run.fmt(m.best):>8} {runs:>18} {t.requests[index]:>9} {rate:7.0f} {in_flight:9.1f} "
            f"{m.exit_code:>4}"
        )
    print()
    print(
        f"server ceiling: {zero.rate:.0f} requests/s at delay 0 and {delayed.rate:.0f} at "
        f"{args.delay_ms:g} ms ({args.clients} parallel finds; one find at {args.delay_ms:g} ms: "
        f"{ceiling[f'delay {args.delay_ms:g} ms, 1 client'].rate:.0f})"
    )
    for name, value in ratios.items():
        print(f"{name:<22} {run.fmt(value)}x" if value is not None else f"{name:<22} -")
    print()
    for name, verdict in checks.items():
        print(f"{name:<36} {verdict}")
    print(f"\noutputs in {out}; timing took {total:.0f} s")

    if args.json_path:
        with open(args.json_path, "w") as handle:
            json.dump(
                {
                    "when": when, "registry_fsck": package_origin(run.fsck_command()), "cores": os.cpu_count(),
                    "baseline": package_origin(package_command(args.baseline)) if args.baseline else None,
                    "delay_ms": args.delay_ms, "server_threads": args.threads, "fsck_args": args.fsck_args,
                    "tree": tree.root, "files": files, "rounds": args.rounds,
                    "measurements": {
                        name: {**asdict(t.measurement), "best": t.measurement.best, "requests": t.requests,
                               "requests_by_operation": t.by_operation}
                        for name, t in timed.items()
                    },
                    "ceiling": {name: {**asdict(load), "rate": load.rate} for name, load in ceiling.items()},
                    "ratios": ratios, "checks": checks,
                },
                handle, indent=1,
            )
    return 1 if any(v != "MATCH" for v in checks.values()) else 0


def package_command(directory: str) -> list[str]:
    """registry-fsck run from the package in DIR/fsck, ahead of any installed one (as run.py's --baseline)."""
    directory = os.path.abspath(directory)
    if not os.path.isfile(os.path.join(directory, "fsck", "cli.py")):
        sys.exit(f"--baseline {directory}: no fsck/cli.py in it")
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {directory!r}); from fsck.cli import main; main()"]


def package_origin(command: list[str]) -> str:
    """Where the fsck package that `command` runs comes from, and its commit (+ when fsck/ has local changes)."""
    if command[:2] == [sys.executable, "-c"]:
        where_is = command[2].replace("from fsck.cli import main; main()", "import fsck; print(fsck.__file__)")
        probe = [sys.executable, "-c", where_is]
    else:
        probe = [sys.executable, "-c", "import fsck; print(fsck.__file__)"]
    where = subprocess.run(probe, capture_output=True, text=True, cwd="/").stdout.strip()
    if not where:
        return "unknown"
    checkout = os.path.dirname(os.path.dirname(where))
    commit = subprocess.run(["git", "-C", checkout, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "-C", checkout, "status", "--porcelain", "--", "fsck"], capture_output=True, text=True
    )
    if commit.returncode:
        return checkout
    return f"{checkout} {commit.stdout.strip()}{'+' if dirty.stdout.strip() else ''}"


# ---------------------------------------------------------------------------------------------- read_manifests


def read_manifests(v2: str, mounted_v2: str) -> None:
    from fsck import manifests, scan
    from fsck.store import LocalStore

    inventory = scan.scan(LocalStore(v2))
    named = manifests.named_by_links(inventory)
    for workers in (None, 1):
        extra = {} if workers is None else {"workers": workers}
        started = time.perf_counter()
        parsed = manifests.read_manifests(LocalStore(mounted_v2), named, inventory.blobs, **extra)
        label = "default workers" if workers is None else f"workers={workers}"
        print(f"{label}: {len(parsed)} manifests in {time.perf_counter() - started:.2f} s", flush=True)


# ---------------------------------------------------------------------------------------------- command line


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = top.add_subparsers(dest="command", required=True)

    def server_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--delay-ms", type=float, default=1.0, help="sleep per request (default 1)")
        p.add_argument(
            "--threads", type=int, default=DEFAULT_THREADS, help=f"server threads (default {DEFAULT_THREADS})"
        )

    def tree_options(p: argparse.ArgumentParser) -> None:
        server_options(p)
        which = p.add_mutually_exclusive_group()
        which.add_argument("--tree", metavar="ROOT", help="a registry rootdirectory (holding docker/registry/v2)")
        which.add_argument("--repos", type=int, default=DEFAULT_REPOS, help=f"synthetic tree (default {DEFAULT_REPOS})")
        p.add_argument("--dir", help=f"where the synthetic tree lives (default {DEFAULT_DIR}/rN)")

    mount = commands.add_parser("mount", help="serve SRC at MOUNT in the foreground (Ctrl-C unmounts)")
    mount.add_argument("source")
    mount.add_argument("mountpoint")
    server_options(mount)
    mount.add_argument("--clone-fd", action="store_true", help="one /dev/fuse descriptor per server thread")

    b = commands.add_parser("bench", help="time find, the GC and the audit through the mount")
    tree_options(b)
    b.add_argument("--rounds", type=int, default=1, help="interleaved rounds, best kept (default 1)")
    b.add_argument("--fsck-args", default="", help="extra arguments for registry-fsck audit, e.g. '--jobs 16'")
    b.add_argument("--baseline", metavar="DIR", help="also time the fsck package in DIR/fsck (row fsck-base)")
    b.add_argument("--baseline-args", default="", help="extra arguments for the baseline's audit")
    b.add_argument("--clients", type=int, default=16, help="parallel finds measuring the ceiling (default 16)")
    b.add_argument("--skip", default="", help="comma-separated commands not to run: find,gc,gc-untagged,fsck,fsck-base")
    b.add_argument("--out", help="where reports, GC output and server logs go (default: a temp dir, kept)")
    b.add_argument("--json", dest="json_path", help="write every number to this file")

    s = commands.add_parser("scaling", help="throughput with 1, 2, 4, ... parallel clients; find twice")
    tree_options(s)

    r = commands.add_parser("read-manifests", help="time fsck's read_manifests on a mounted v2")
    r.add_argument("v2")
    r.add_argument("mounted_v2")
    return top


def interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--read-manifests"]:
        argv[0] = "read-manifests"
    args = parser().parse_args(argv)
    if args.command == "read-manifests":
        read_manifests(args.v2, args.mounted_v2)
        return 0
    missing = missing_prerequisite()
    if missing:
        print(f"slowfs: {missing}", file=sys.stderr)
        return 2
    if args.command == "mount":
        serve(os.path.abspath(args.source), os.path.abspath(args.mountpoint), args.delay_ms / 1000, args.threads,
              args.clone_fd)
        return 0
    if args.threads < 1:
        sys.exit("--threads must be at least 1")
    # SIGTERM unwinds like Ctrl-C, through the unmounts in `mounted`.
    signal.signal(signal.SIGTERM, interrupt)
    tree = tree_from(args)
    work = tempfile.mkdtemp(prefix="slowfs-")
    try:
        return bench(args, tree, work) if args.command == "bench" else scaling(args, tree, work)
    except KeyboardInterrupt:
        print("\ninterrupted: unmounted", file=sys.stderr)
        return 130
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(work)


if __name__ == "__main__":
    sys.exit(main())
