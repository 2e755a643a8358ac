"""Benchmark `registry-fsck audit` against references measured in the same run.

    python benchmarks/run.py                          # default scale (~166k files), in a temp dir
    python benchmarks/run.py --smoke                  # a few hundred files, seconds: for CI
    python benchmarks/run.py --scale large --repeat 1 --dir /var/tmp/bench-large
    python benchmarks/run.py --repos 500 --tags 8 --dir /tmp/b --keep

Generates (or reuses, under --dir) a synthetic registry tree (`synth.py`), then times, with
caches warmed equally (every command runs once untimed, then the best of --repeat rounds):

    find        `find ROOT -type f | wc -l`: the floor for a tree walk (names only)
    find-stat   `find ROOT -type f -printf '%s\\n' | wc -l`: a walk that stats every file
    find-cat    `find ROOT -name link -type f -print0 | xargs -0 cat | wc -c`: a walk that also
                reads every link file, the least any auditor must do
    gc          `docker-registry garbage-collect --dry-run CONFIG`: the registry's own mark+sweep
    fsck        `registry-fsck audit ROOT --json --quiet -o FILE`
    sha256sum   every blob data file through `sha256sum`, one process per core (xargs -P)
    openssl     the same through `openssl dgst -sha256`: OpenSSL, like Python's hashlib, uses the
                CPU's SHA instructions where coreutils' sha256sum does not (when installed)
    verify      `registry-fsck audit ROOT --json --quiet --verify -o FILE`
    import      `python -c "import fsck.cli"`: the interpreter and imports alone
    fsck-base, verify-base
                with `--baseline DIR`: the same two commands run by another copy of the
                package (`DIR/fsck`, e.g. `git archive HEAD fsck | tar -x -C DIR`; DIR first
                on sys.path), interleaved with the others: before/after under the same load

Wall seconds come from the parent's clock, peak RSS and CPU seconds from GNU time (the
largest process of a pipeline; `wait4()` when /usr/bin/time is missing). It prints a table and the ratios, checks that the blobs
garbage-collect would delete are exactly registry-fsck's `blob-orphan` findings (and the
generator's orphans), and exits 1 on a MISMATCH. `--json FILE` keeps every number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import synth  # noqa: E402

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"


@dataclass
class Measurement:
    name: str
    command: str
    runs: list[float] = field(default_factory=list)  # timed wall seconds
    peak_rss_kib: int = 0
    user: float = 0.0
    system: float = 0.0
    exit_code: int | None = None
    skipped: str | None = None

    @property
    def best(self) -> float | None:
        return min(self.runs) if self.runs else None


TIME_BIN = "/usr/bin/time"  # GNU time: its own small fork gives a true peak RSS for the child


def run_child(argv: list[str], stdout_path: str | None = None) -> tuple[float, int, float, float, int]:
    """(wall seconds, peak RSS KiB, user s, system s, exit code) of one child.

    Wall time is the parent's clock. The rusage comes from GNU time when installed: a child
    forked straight from this Python process would report at least this process's own RSS
    (Linux keeps the pre-exec high-water mark), so `wait4()` is only the fallback.
    """
    use_time = os.access(TIME_BIN, os.X_OK)
    with tempfile.NamedTemporaryFile("r", suffix=".time") as usage_file:
        full = [TIME_BIN, "-q", "-f", "%M %U %S %x", "-o", usage_file.name, *argv] if use_time else argv
        stdout = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL
        try:
            started = time.perf_counter()
            process = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.PIPE)
            stderr = process.stderr.read()  # drained while it runs; children here print little there
            _, status, usage = os.wait4(process.pid, 0)
            wall = time.perf_counter() - started
        finally:
            if stdout_path:
                stdout.close()
        code = os.waitstatus_to_exitcode(status)
        rss, user, system = usage.ru_maxrss, usage.ru_utime, usage.ru_stime
        if use_time:
            fields = usage_file.read().split()
            if len(fields) >= 4:
                rss, user, system, code = int(fields[-4]), float(fields[-3]), float(fields[-2]), int(fields[-1])
    if code not in (0, 4):
        sys.stderr.write(stderr.decode(errors="replace")[-2000:])
    return wall, rss, user, system, code


class Bench:
    def __init__(self, repeat: int, verbose: bool) -> None:
        self.repeat = repeat
        self.verbose = verbose
        self.measurements: dict[str, Measurement] = {}
        self.plan: list[tuple[str, list[str], str | None]] = []

    def add(self, name: str, argv: list[str], stdout_path: str | None = None) -> None:
        command = argv[2] if argv[:2] == ["sh", "-c"] else shlex.join(argv)
        self.measurements[name] = Measurement(name, command)
        self.plan.append((name, argv, stdout_path))

    def skip(self, name: str, why: str) -> None:
        self.measurements[name] = Measurement(name, "", skipped=why)

    def run(self) -> None:
        # One untimed round warms the caches for every command alike; then rounds interleave
        # the commands, so a burst of load elsewhere on the machine does not hit one alone.
        for round_number in range(self.repeat + 1):
            for name, argv, stdout_path in self.plan:
                wall, rss, user, system, code = run_child(argv, stdout_path)
                m = self.measurements[name]
                m.exit_code = code
                if round_number > 0:
                    m.runs.append(wall)
                    if m.best == wall:
                        m.user, m.system = user, system
                m.peak_rss_kib = max(m.peak_rss_kib, rss)
                if self.verbose:
                    label = "warm-up" if round_number == 0 else f"round {round_number}"
                    print(f"  {label:>8} {name:<10} {wall:8.2f} s  {rss / 1024:7.1f} MiB  exit {code}", flush=True)


def ensure_tree(directory: str, params: synth.Params, jobs: int | None) -> dict:
    root = os.path.join(directory, "root")
    meta = os.path.join(directory, "synth.json")
    if os.path.exists(meta) and os.path.isdir(root):
        with open(meta) as handle:
            facts = json.load(handle)
        if facts.get("params") == asdict(params):
            print(f"reusing {root} ({facts['files']} files)", flush=True)
            return facts
        sys.exit(f"{directory} holds a tree of other parameters; give another --dir or remove it")
    if os.path.exists(root):
        sys.exit(f"{root} exists without {meta}; give another --dir or remove it")
    os.makedirs(directory, exist_ok=True)
    print(f"generating {root} ...", flush=True)
    facts = synth.generate(root, params, jobs, meta)
    print(
        f"  {facts['files']} files, {facts['dirs']} dirs, {facts['blobs']} blobs "
        f"({facts['blob_bytes'] / 2**20:.1f} MiB) in {facts['seconds']} s",
        flush=True,
    )
    return facts


def fsck_command() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "registry-fsck")
    return [script] if os.access(script, os.X_OK) else [sys.executable, "-m", "fsck"]


def gc_eligible(path: str) -> set[str]:
    prefix = "blob eligible for deletion: "
    with open(path, errors="replace") as handle:
        return {line[len(prefix):].strip() for line in handle if line.startswith(prefix)}


def report_findings(path: str, finding_id: str) -> set[str] | None:
    try:
        with open(path, "rb") as handle:
            document = json.load(handle)
    except (OSError, ValueError):
        return None
    return {f["digest"] for f in document.get("findings", []) if f.get("id") == finding_id}


def same_report(path: str, other: str) -> str:
    """MATCH when two JSON reports say the same (their generated_at aside)."""
    documents = []
    for report in (path, other):
        try:
            with open(report, "rb") as handle:
                document = json.load(handle)
        except (OSError, ValueError) as error:
            return f"MISMATCH ({report}: {error})"
        document.pop("generated_at", None)
        documents.append(document)
    if documents[0] == documents[1]:
        return "MATCH"
    findings = [{json.dumps(f, sort_keys=True) for f in d.get("findings", [])} for d in documents]
    return (
        f"MISMATCH (findings only here: {len(findings[0] - findings[1])}, "
        f"only in the baseline's: {len(findings[1] - findings[0])})"
    )


def package_version() -> str:
    """The registry-fsck commit measured: the checkout this file sits in (with + when it has local changes)."""
    repo = os.path.dirname(HERE)
    try:
        commit = subprocess.run(
            ["git", "-C", repo, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", repo, "status", "--porcelain", "--", "fsck"], capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+" if dirty else "")


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def fmt(value: float | None, pattern: str = "{:.2f}") -> str:
    return "-" if value is None else pattern.format(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(synth.PRESETS), default="default")
    parser.add_argument("--smoke", action="store_true", help="the smoke scale (a few hundred files), one round")
    parser.add_argument("--repos", type=int)
    parser.add_argument("--tags", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--layer-max", type=int, help="largest layer in bytes (default 4096)")
    parser.add_argument("--dir", help="generate into DIR/root, or reuse the tree there (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (always kept with --dir)")
    parser.add_argument("--repeat", type=int, help="timed rounds after the warm-up (default 3; 1 with --smoke)")
    parser.add_argument("--jobs", type=int, help="generator processes (default: all cores)")
    parser.add_argument("--skip", default="", help="comma-separated commands not to run, e.g. gc,verify")
    parser.add_argument("--stages", action="store_true", help="also time fsck's stages in-process")
    parser.add_argument(
        "--baseline", metavar="DIR",
        help="also time the fsck package in DIR/fsck (e.g. an older commit's) as fsck-base and verify-base",
    )
    parser.add_argument("--json", dest="json_path", help="write every number to this file")
    parser.add_argument("--quiet", "-q", action="store_true", help="no per-run lines")
    args = parser.parse_args(argv)

    scale = "smoke" if args.smoke else args.scale
    params = synth.params_from(scale, repos=args.repos, tags=args.tags, seed=args.seed, layer_max=args.layer_max)
    if params != synth.PRESETS[scale]:
        scale = f"{scale}, customised"
    repeat = args.repeat if args.repeat is not None else (1 if args.smoke else 3)
    skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    temporary = args.dir is None
    directory = os.path.abspath(args.dir or tempfile.mkdtemp(prefix="registry-fsck-bench-"))
    try:
        return benchmark(args, scale, params, repeat, skip, directory)
    finally:
        if temporary and not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
        elif temporary:
            print(f"kept {directory}")


def benchmark(args, scale: str, params: synth.Params, repeat: int, skip: set[str], directory: str) -> int:
    facts = ensure_tree(directory, params, args.jobs)
    root = os.path.join(directory, "root")
    v2 = os.path.join(root, "docker", "registry", "v2")
    out = os.path.join(directory, "out")
    os.makedirs(out, exist_ok=True)
    config = os.path.join(directory, "registry.yml")
    with open(config, "w") as handle:  # JSON is YAML
        json.dump({"version": 0.1, "log": {"level": "error"}, "storage": {"filesystem": {"rootdirectory": root}}}, handle)
    cores = os.cpu_count() or 1
    q = shlex.quote
    fsck = fsck_command()
    report_path = os.path.join(out, "fsck.json")
    verify_path = os.path.join(out, "verify.json")
    base_report_path = os.path.join(out, "fsck-base.json")
    base_verify_path = os.path.join(out, "verify-base.json")
    baseline = os.path.abspath(args.baseline) if args.baseline else None
    if baseline and not os.path.isfile(os.path.join(baseline, "fsck", "cli.py")):
        sys.exit(f"--baseline {baseline}: no fsck/cli.py in it")
    # DIR goes first on sys.path, ahead of the working directory (which `python -m` and
    # `-c` put ahead of PYTHONPATH) and of an installed or editable fsck.
    boot = f"import sys; sys.path.insert(0, {baseline!r}); from fsck.cli import main; main()"
    base_fsck = [sys.executable, "-c", boot] if baseline else []
    if baseline:
        where = subprocess.run(
            [sys.executable, "-c", boot.replace("from fsck.cli import main; main()", "import fsck; print(fsck.__file__)")],
            capture_output=True, text=True,
        ).stdout.strip()
        if not where.startswith(os.path.join(baseline, "fsck") + os.sep):
            sys.exit(f"--baseline {baseline}: imports fsck from {where or 'nowhere'}, not from there")
    gc_path = os.path.join(out, "gc.txt")

    bench = Bench(repeat, verbose=not args.quiet)
    commands: list[tuple[str, list[str], str | None]] = [
        ("import", [sys.executable, "-c", "import fsck.cli"], None),
        ("find", ["sh", "-c", f"find {q(root)} -type f | wc -l"], os.path.join(out, "find.txt")),
        ("find-stat", ["sh", "-c", f"find {q(root)} -type f -printf '%s\\n' | wc -l"], None),
        ("find-cat", ["sh", "-c", f"find {q(root)} -name link -type f -print0 | xargs -0 cat | wc -c"], None),
        ("gc", [REGISTRY_BIN, "garbage-collect", "--dry-run", config], gc_path),
        ("fsck", [*fsck, "audit", root, "--json", "--quiet", "-o", report_path], None),
        ("fsck-base", [*base_fsck, "audit", root, "--json", "--quiet", "-o", base_report_path], None),
        (
            "sha256sum",
            ["sh", "-c", f"find {q(v2)}/blobs -name data -type f -print0 | xargs -0 -n 2048 -P {cores} sha256sum"],
            None,
        ),
        (
            "openssl",
            [
                "sh", "-c",
                f"find {q(v2)}/blobs -name data -type f -print0 | xargs -0 -n 2048 -P {cores} openssl dgst -sha256",
            ],
            None,
        ),
        ("verify", [*fsck, "audit", root, "--json", "--quiet", "--verify", "-o", verify_path], None),
        ("verify-base", [*base_fsck, "audit", root, "--json", "--quiet", "--verify", "-o", base_verify_path], None),
    ]
    for name, argv, stdout_path in commands:
        if name.endswith("-base") and not baseline:
            continue
        if name in skip or (name.endswith("-base") and name[: -len("-base")] in skip):
            bench.skip(name, "--skip")
        elif name == "gc" and not os.access(REGISTRY_BIN, os.X_OK):
            bench.skip(name, f"{REGISTRY_BIN} not found")
        elif name == "openssl" and not shutil.which("openssl"):
            bench.skip(name, "openssl not found")
        else:
            bench.add(name, argv, stdout_path)
    started = time.perf_counter()
    print(f"timing: 1 warm-up round + best of {repeat}", flush=True)
    bench.run()

    stages = None
    if args.stages:
        script = os.path.join(HERE, "profile_audit.py")
        done = subprocess.run([sys.executable, script, root], capture_output=True, text=True)
        stages = json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr[-500:]}

    m = bench.measurements
    files = facts["files"]
    best = {name: meas.best for name, meas in m.items()}

    def mib(name: str) -> float | None:
        return m[name].peak_rss_kib / 1024 if name in m and m[name].runs else None

    # Correctness, cheaply: who would delete what.
    checks: dict[str, str] = {}
    if "find" in bench.measurements and m["find"].runs:
        with open(os.path.join(out, "find.txt")) as handle:
            counted = int(handle.read().split()[0])
        checks["files"] = "MATCH" if counted == files else f"MISMATCH (find {counted}, generator {files})"
    expected = set(facts["orphans"])
    orphans = report_findings(report_path, "blob-orphan") if m["fsck"].runs else None
    if orphans is not None:
        checks["fsck blob-orphan = generator orphans"] = (
            "MATCH" if orphans == expected else f"MISMATCH ({len(orphans)} vs {len(expected)})"
        )
    if m["gc"].runs:
        eligible = gc_eligible(gc_path)
        checks["gc eligible = generator orphans"] = (
            "MATCH" if eligible == expected else f"MISMATCH ({len(eligible)} vs {len(expected)})"
        )
        if orphans is not None:
            checks["gc eligible = fsck blob-orphan"] = (
                "MATCH" if eligible == orphans
                else f"MISMATCH (gc only: {len(eligible - orphans)}, fsck only: {len(orphans - eligible)})"
            )
    if m["verify"].runs:
        corrupt = report_findings(verify_path, "blob-digest-mismatch")
        checks["verify: no blob-digest-mismatch"] = "MATCH" if corrupt == set() else f"MISMATCH ({corrupt})"
    if baseline and "fsck-base" in m and m["fsck-base"].runs and m["fsck"].runs:
        checks["fsck report = fsck-base report"] = same_report(report_path, base_report_path)
    if baseline and "verify-base" in m and m["verify-base"].runs and m["verify"].runs:
        checks["verify report = verify-base report"] = same_report(verify_path, base_verify_path)

    fsck_marginal = (
        (m["fsck"].peak_rss_kib - m["import"].peak_rss_kib) * 1024 / files
        if m["fsck"].runs and m["import"].runs else None
    )
    hashing = (best["verify"] - best["fsck"]) if best.get("verify") and best.get("fsck") else None
    ratios = {
        "fsck/find": ratio(best.get("fsck"), best.get("find")),
        "fsck/find-cat": ratio(best.get("fsck"), best.get("find-cat")),
        "fsck/gc": ratio(best.get("fsck"), best.get("gc")),
        "verify/sha256sum": ratio(best.get("verify"), best.get("sha256sum")),
        "(verify-fsck)/sha256sum": ratio(hashing, best.get("sha256sum")),
        "verify/openssl": ratio(best.get("verify"), best.get("openssl")),
        "(verify-fsck)/openssl": ratio(hashing, best.get("openssl")),
        "fsck RSS bytes/file": m["fsck"].peak_rss_kib * 1024 / files if m["fsck"].runs else None,
        "fsck RSS bytes/file over import": fsck_marginal,
    }
    if baseline:
        ran = lambda name: name in m and bool(m[name].runs)  # noqa: E731
        ratios.update(
            {
                "fsck/fsck-base": ratio(best.get("fsck"), best.get("fsck-base")),
                "verify/verify-base": ratio(best.get("verify"), best.get("verify-base")),
                "fsck-base/find": ratio(best.get("fsck-base"), best.get("find")),
                "fsck-base/gc": ratio(best.get("fsck-base"), best.get("gc")),
                "verify-base/sha256sum": ratio(best.get("verify-base"), best.get("sha256sum")),
                "fsck-base RSS bytes/file": m["fsck-base"].peak_rss_kib * 1024 / files if ran("fsck-base") else None,
            }
        )

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print()
    print(
        f"registry-fsck benchmark, {when}, {platform.node() or 'host'}: {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; registry-fsck {package_version()}; scale {scale} "
        f"(repos {params.repos}, tags {params.tags}, seed {params.seed}, layers up to {params.layer_max} B)"
    )
    print(
        f"tree: {files} files, {facts['dirs']} dirs, {facts['repositories']} repositories, {facts['tags']} tags, "
        f"{facts['revisions']} revisions, {facts['blobs']} blobs ({facts['blob_bytes'] / 2**20:.1f} MiB), "
        f"{len(expected)} orphans"
    )
    print()
    print(f"{'command':<10} {'best s':>8} {'runs s':>24} {'user s':>7} {'sys s':>7} {'peak MiB':>9}")
    for name, meas in m.items():
        if meas.skipped:
            print(f"{name:<10} {'skipped: ' + meas.skipped:>8}")
            continue
        runs = " ".join(f"{r:.2f}" for r in meas.runs)
        print(
            f"{name:<10} {fmt(meas.best):>8} {runs:>24} {meas.user:7.2f} {meas.system:7.2f} "
            f"{fmt(mib(name), '{:.1f}'):>9}"
        )
    print()
    for name, value in ratios.items():
        unit = "" if "bytes" in name or value is None else "x"
        print(f"{name:<32} {fmt(value, '{:.0f}' if 'bytes' in name else '{:.2f}')}{unit}")
    if stages:
        print(f"{'fsck stages (in-process)':<32} {stages.get('seconds', stages)}")
    print()
    for name, verdict in checks.items():
        print(f"{name:<40} {verdict}")
    print(f"\nbenchmark took {time.perf_counter() - started:.0f} s (generation {facts['seconds']} s)")

    if args.json_path:
        with open(args.json_path, "w") as handle:
            json.dump(
                {
                    "when": when,
                    "registry_fsck": package_version(),
                    "cores": os.cpu_count(),
                    "python": platform.python_version(),
                    "scale": scale,
                    "params": asdict(params),
                    "tree": {k: v for k, v in facts.items() if k != "orphans"},
                    "orphans": len(expected),
                    "repeat": repeat,
                    "measurements": {name: {**asdict(meas), "best": meas.best} for name, meas in m.items()},
                    "ratios": ratios,
                    "stages": stages,
                    "checks": checks,
                },
                handle,
                indent=1,
            )
    return 1 if any(v != "MATCH" for v in checks.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
