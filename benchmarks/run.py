"""Benchmark `registry-fsck audit` against references measured in the same run.

    python benchmarks/run.py                          # default scale (~166k files), in a temp dir
    python benchmarks/run.py --smoke                  # a few hundred files, seconds: for CI
    python benchmarks/run.py --scale large --repeat 1 --dir /var/tmp/bench-large
    python benchmarks/run.py --repos 500 --tags 8 --dir /tmp/b --keep
    python benchmarks/run.py --tree /var/tmp/bench/t300 --out /tmp/t300-out   # a tree as it is, reports elsewhere
    python benchmarks/run.py --findings many --dir /var/tmp/bench/many --only import,fsck --no-warm-up
    sudo python benchmarks/run.py --tree /var/tmp/bench/t300 --only gc-untagged,fsck --cold --repeat 2

Generates (or reuses, under --dir) a synthetic registry tree (`synth.py`), then times, with
caches warmed equally (every command runs once untimed, then the best of --repeat rounds):

    find        `find ROOT -type f | wc -l`: the floor for a tree walk (names only)
    find-stat   `find ROOT -type f -printf '%s\\n' | wc -l`: a walk that stats every file
    find-cat    `find ROOT -name link -type f -print0 | xargs -0 cat | wc -c`: a walk that also
                reads every link file, the least any auditor must do
    find-cat-manifests
                find-cat, then `cat` of every manifest blob (those revision links name; listed
                before timing): the walk, the links and the manifests, for context
    gc          `docker-registry garbage-collect --dry-run CONFIG`: the registry's own mark+sweep
    gc-untagged `docker-registry garbage-collect --dry-run --delete-untagged CONFIG`
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

Before timing, both packages' modules are compiled to bytecode (`__pycache__`, as `pip install`
leaves an installed package): where PYTHONDONTWRITEBYTECODE is set, a checkout would otherwise be
compiled from source on every run, a few tenths of a second and a MiB that no installed copy pays.

Then the targets of the scale issue, each ratio with its bound and PASS or FAIL (a FAIL is
a result, not an error: the exit code speaks only of correctness):

    fsck/find-cat                ≤ 1.25   audit wall per walking the tree and reading every link
    fsck/gc-untagged             ≤ 0.5    per `garbage-collect --dry-run --delete-untagged`
    fsck RSS / gc RSS            < 1      peak RSS below the GC's, with and without --delete-untagged
    (verify-fsck)/sha256sum      ≤ 1.11   the time --verify adds, per sha256sum on all cores (≥ 0.9x throughput)

The targets over several trees (growth of memory per file, memory with a million findings)
are `scale.py`'s, which runs this on each tree.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import json
import math
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


DROP_CACHES = "/proc/sys/vm/drop_caches"


def drop_caches() -> None:
    """The page cache, dentries and inodes dropped (Linux, as root): the next command reads the tree from
    the disk, as a nightly run on a tree larger than the memory does."""
    os.sync()
    with open(DROP_CACHES, "w") as control:
        control.write("3\n")


class Bench:
    def __init__(self, repeat: int, verbose: bool, warm_up: bool = True, cold: bool = False) -> None:
        self.repeat = repeat
        self.verbose = verbose
        self.warm_up = warm_up and not cold
        self.cold = cold
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
        for round_number in range(0 if self.warm_up else 1, self.repeat + 1):
            for name, argv, stdout_path in self.plan:
                if self.cold:
                    drop_caches()
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
                    print(f"  {label:>8} {name:<18} {wall:8.2f} s  {rss / 1024:7.1f} MiB  exit {code}", flush=True)


def stored_params(facts: dict) -> synth.Params:
    """The parameters a synth.json records; fields added since it was written take their defaults."""
    known = {f for f in synth.Params.__dataclass_fields__}
    return synth.Params(**{k: v for k, v in facts.get("params", {}).items() if k in known})


def ensure_tree(directory: str, params: synth.Params | None, jobs: int | None) -> dict:
    """Facts of the tree in directory/root: reused when synth.json says it was made with params
    (any parameters when params is None: --tree), else generated."""
    root = os.path.join(directory, "root")
    meta = os.path.join(directory, "synth.json")
    if os.path.exists(meta) and os.path.isdir(root):
        with open(meta, "rb") as handle:
            facts = loads(handle.read())
        if params is None or stored_params(facts) == params:
            print(f"reusing {root} ({facts['files']} files)", flush=True)
            return facts
        sys.exit(f"{directory} holds a tree of other parameters; give another --dir or remove it")
    if params is None:
        sys.exit(f"--tree {directory}: no root/ and synth.json there")
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


def loads(data: bytes):
    """JSON, through orjson when installed (a report with a million findings is ~0.5 GB)."""
    try:
        import orjson
    except ImportError:
        return json.loads(data)
    return orjson.loads(data)


def load_json(path: str):
    with open(path, "rb") as handle:
        return loads(handle.read())


def fsck_command() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "registry-fsck")
    return [script] if os.access(script, os.X_OK) else [sys.executable, "-m", "fsck"]


def compile_package(directory: str) -> None:
    """The package's bytecode written beside it, as an installed copy has it (see the module's doc)."""
    if not compileall.compile_dir(directory, quiet=2):
        print(f"note: {directory} could not all be compiled to bytecode (read-only?): timed as it is", file=sys.stderr)


def manifest_digests(v2: str) -> list[str]:
    """Hex digests of every manifest: the names of the revision links' directories, all repositories."""
    found: set[str] = set()
    pending = [os.path.join(v2, "repositories")]
    while pending:
        directory = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            if entry.name == "_manifests":
                try:
                    found.update(os.listdir(os.path.join(entry.path, "revisions", "sha256")))
                except OSError:
                    pass
            elif not entry.name.startswith("_") and entry.is_dir(follow_symlinks=False):
                pending.append(entry.path)
    return sorted(found)


def write_manifest_list(v2: str, path: str) -> int:
    """NUL-separated paths of every manifest blob's data file (for xargs -0); the count."""
    digests = manifest_digests(v2)
    with open(path, "wb") as handle:
        for hex_digest in digests:
            handle.write(f"{v2}/blobs/sha256/{hex_digest[:2]}/{hex_digest}/data\0".encode())
    return len(digests)


def index_children(v2: str, manifest_list: str) -> set[str]:
    """Digests of the manifests an image index lists (2.8's --delete-untagged counts them as untagged)."""
    children: set[str] = set()
    with open(manifest_list, "rb") as handle:
        paths = [p for p in handle.read().split(b"\0") if p]
    for path in paths:
        try:
            with open(path, "rb") as blob:
                document = loads(blob.read())
        except (OSError, ValueError):
            continue
        if isinstance(document, dict) and isinstance(document.get("manifests"), list):
            children.update(m.get("digest") for m in document["manifests"] if isinstance(m, dict))
    return children


def gc_eligible(path: str, what: str = "blob") -> set[str]:
    prefix = f"{what} eligible for deletion: "
    with open(path, errors="replace") as handle:
        return {line[len(prefix):].strip() for line in handle if line.startswith(prefix)}


def findings_by_id(path: str, *finding_ids: str) -> tuple[dict[str, set[str]], int] | None:
    """The digests of the report's findings of each id, and how many findings it holds in all."""
    try:
        document = load_json(path)
    except (OSError, ValueError):
        return None
    wanted = {finding_id: set() for finding_id in finding_ids}
    findings = document.get("findings", [])
    for finding in findings:
        if finding.get("id") in wanted:
            wanted[finding["id"]].add(finding.get("digest"))
    return wanted, len(findings)


def report_findings(path: str, finding_id: str) -> set[str] | None:
    found = findings_by_id(path, finding_id)
    return None if found is None else found[0][finding_id]


def _differing_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Keys whose values differ, one level into dicts (summary.by_id, not summary)."""
    keys = []
    for key in sorted(set(a) | set(b), key=str):
        if key == "findings" and not prefix:
            continue
        left, right = a.get(key), b.get(key)
        if left == right:
            continue
        if isinstance(left, dict) and isinstance(right, dict) and not prefix:
            keys.extend(_differing_keys(left, right, f"{key}."))
        else:
            keys.append(prefix + str(key))
    return keys


def _by_id(records: set[str]) -> str:
    counted: dict[str, int] = {}
    for record in records:
        finding_id = json.loads(record).get("id", "?")
        counted[finding_id] = counted.get(finding_id, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counted.items(), key=lambda kv: (-kv[1], kv[0]))[:6])


def same_report(path: str, other: str) -> str:
    """MATCH when two JSON reports say the same (their generated_at aside); else what differs."""
    documents = []
    for report in (path, other):
        try:
            document = load_json(report)
        except (OSError, ValueError) as error:
            return f"MISMATCH ({report}: {error})"
        if not isinstance(document, dict):
            return f"MISMATCH ({report}: not a JSON object)"
        document.pop("generated_at", None)
        documents.append(document)
    here, there = documents
    if here == there:
        return "MATCH"
    parts = []
    keys = _differing_keys(here, there)
    if keys:
        parts.append("keys: " + ", ".join(keys[:12]) + (f" and {len(keys) - 12} more" if len(keys) > 12 else ""))
    listed = [d.get("findings", []) for d in documents]
    if listed[0] != listed[1]:
        records = [{json.dumps(f, sort_keys=True) for f in found} for found in listed]
        only_here, only_there = records[0] - records[1], records[1] - records[0]
        if not only_here and not only_there:
            parts.append(f"the same {len(listed[0])} findings in another order" if len(listed[0]) == len(listed[1])
                         else f"findings repeated ({len(listed[0])} vs {len(listed[1])} records)")
        else:
            if only_here:
                parts.append(f"findings only here: {len(only_here)} ({_by_id(only_here)})")
            if only_there:
                parts.append(f"only in the baseline's: {len(only_there)} ({_by_id(only_there)})")
    return f"MISMATCH ({'; '.join(parts)})"


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


@dataclass(frozen=True, slots=True)
class Target:
    """A bound of the scale issue on one ratio: PASS when value < limit (strict) or <= limit."""

    ratio: str
    limit: float
    strict: bool = False
    unit: str = "x"
    what: str = ""

    def verdict(self, value: float | None) -> str:
        if value is None:
            return "-"
        return "PASS" if (value < self.limit if self.strict else value <= self.limit) else "FAIL"

    def bound(self) -> str:
        shown = f"{self.limit:.0f}" if self.unit != "x" else f"{self.limit:.2f}"
        return f"{'<' if self.strict else '<='} {shown}{'' if self.unit == 'x' else ' '}{self.unit}"


TREE_TARGETS = (
    Target("fsck/find-cat", 1.25, what="audit wall per find | xargs cat of every link"),
    Target("fsck/gc-untagged", 0.5, what="audit wall per garbage-collect --dry-run --delete-untagged"),
    Target("fsck RSS/gc RSS", 1.0, strict=True, what="audit peak RSS per garbage-collect --dry-run's"),
    Target("fsck RSS/gc-untagged RSS", 1.0, strict=True, what="the same, --delete-untagged"),
    Target("(verify-fsck)/sha256sum", 1 / 0.9, what="time --verify adds per sha256sum on all cores (>= 0.9x)"),
)


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}x" if unit == "x" else f"{value:.0f} {unit}"


def print_targets(rows: list[tuple[Target, str, float | None]]) -> None:
    """Each ratio beside its bound; rows are (target, tree, value)."""
    print(f"{'target':<28} {'tree':>12} {'value':>10} {'bound':>10}  verdict  what")
    for target, tree, value in rows:
        print(
            f"{target.ratio:<28} {tree:>12} {format_value(value, target.unit):>10} {target.bound():>10}  "
            f"{target.verdict(value):<7}  {target.what}"
        )


def short_count(files: int) -> str:
    if files >= 1e6:
        return f"{files / 1e6:.2f}M files"
    return f"{files / 1e3:.0f}k files" if files >= 1e4 else f"{files} files"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(synth.PRESETS), default="default")
    parser.add_argument("--smoke", action="store_true", help="the smoke scale (a few hundred files), one round")
    parser.add_argument(
        "--findings", choices=("few", "many"), help="the findings pair at ~1M files (--scale findings-few|many)"
    )
    parser.add_argument("--repos", type=int)
    parser.add_argument("--tags", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--layer-max", type=int, help="largest layer in bytes (default 4096)")
    parser.add_argument("--dir", help="generate into DIR/root, or reuse the tree there (default: a temp dir)")
    parser.add_argument(
        "--tree", metavar="DIR",
        help="the tree in DIR/root as it is, of whatever parameters its DIR/synth.json records (never generated)",
    )
    parser.add_argument(
        "--out", metavar="DIR",
        help="reports and the registry config (default: DIR/out with --dir, a temp dir with --tree or neither)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (always kept with --dir)")
    parser.add_argument("--repeat", type=int, help="timed rounds after the warm-up (default 3; 1 with --smoke)")
    parser.add_argument("--no-warm-up", action="store_true", help="no untimed round first (for peak RSS alone)")
    parser.add_argument(
        "--cold", action="store_true",
        help=f"drop the page cache before every command (root: writes {DROP_CACHES}); no warm-up round",
    )
    parser.add_argument("--jobs", type=int, help="generator processes (default: all cores)")
    parser.add_argument("--skip", default="", help="comma-separated commands not to run, e.g. gc,verify")
    parser.add_argument("--only", default="", help="comma-separated commands to run, the rest skipped")
    parser.add_argument("--stages", action="store_true", help="also time fsck's stages in-process")
    parser.add_argument(
        "--baseline", metavar="DIR",
        help="also time the fsck package in DIR/fsck (e.g. an older commit's) as fsck-base and verify-base",
    )
    parser.add_argument("--json", dest="json_path", help="write every number to this file")
    parser.add_argument("--quiet", "-q", action="store_true", help="no per-run lines")
    return parser


def main(argv: list[str] | None = None) -> int:
    return measure(argv)[0]


def measure(argv: list[str] | None = None) -> tuple[int, dict]:
    """Run the benchmark that argv describes: (exit code, every number, as --json writes them)."""
    args = build_parser().parse_args(argv)
    if args.tree and args.dir:
        sys.exit("--tree and --dir: give one")
    scale = "smoke" if args.smoke else f"findings-{args.findings}" if args.findings else args.scale
    params = synth.params_from(scale, repos=args.repos, tags=args.tags, seed=args.seed, layer_max=args.layer_max)
    if params != synth.PRESETS[scale]:
        scale = f"{scale}, customised"
    repeat = args.repeat if args.repeat is not None else (1 if args.smoke else 3)
    skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    temporary = args.dir is None and (args.tree is None or args.out is None)
    scratch = tempfile.mkdtemp(prefix="registry-fsck-bench-") if temporary else None
    if args.tree:
        directory, tree_params = os.path.abspath(args.tree), None
    else:
        directory, tree_params = os.path.abspath(args.dir or scratch), params
    out = os.path.abspath(args.out) if args.out else (
        os.path.join(directory, "out") if args.dir or not args.tree else os.path.join(scratch, "out")
    )
    try:
        facts = ensure_tree(directory, tree_params, args.jobs)
        if args.tree:
            params = stored_params(facts)
            scale = next((name for name, preset in synth.PRESETS.items() if preset == params), "custom")
        return benchmark(args, scale, params, repeat, skip, only, directory, facts, out)
    finally:
        if scratch and not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
        elif scratch:
            print(f"kept {scratch}")


def benchmark(args, scale: str, params: synth.Params, repeat: int, skip: set[str], only: set[str],
              directory: str, facts: dict, out: str) -> tuple[int, dict]:
    root = os.path.join(directory, "root")
    v2 = os.path.join(root, "docker", "registry", "v2")
    os.makedirs(out, exist_ok=True)
    config = os.path.join(out, "registry.yml")
    with open(config, "w") as handle:  # JSON is YAML
        json.dump({"version": 0.1, "log": {"level": "error"}, "storage": {"filesystem": {"rootdirectory": root}}}, handle)
    cores = os.cpu_count() or 1
    # Enough files per sha256sum that starting it costs little, few enough that every core gets work
    # (877 large blobs in one process of 2,048 would hash on one core).
    per_hasher = max(1, min(2048, math.ceil(facts["blobs"] / (4 * cores))))
    q = shlex.quote
    fsck = fsck_command()
    report_path = os.path.join(out, "fsck.json")
    verify_path = os.path.join(out, "verify.json")
    base_report_path = os.path.join(out, "fsck-base.json")
    base_verify_path = os.path.join(out, "verify-base.json")
    manifest_list = os.path.join(out, "manifests.list")
    baseline = os.path.abspath(args.baseline) if args.baseline else None
    if baseline and not os.path.isfile(os.path.join(baseline, "fsck", "cli.py")):
        sys.exit(f"--baseline {baseline}: no fsck/cli.py in it")
    # DIR goes first on sys.path, ahead of the working directory (which `python -m` and
    # `-c` put ahead of PYTHONPATH) and of an installed or editable fsck. Started as its console script
    # starts it: through fsck.entry where it has one (its Ctrl-C handling and cycle-collector threshold).
    front = "entry" if baseline and os.path.isfile(os.path.join(baseline, "fsck", "entry.py")) else "cli"
    boot = f"import sys; sys.path.insert(0, {baseline!r}); from fsck.{front} import main; main()"
    base_fsck = [sys.executable, "-c", boot] if baseline else []
    if baseline:
        where = subprocess.run(
            [sys.executable, "-c", boot.replace(f"from fsck.{front} import main; main()", "import fsck; print(fsck.__file__)")],
            capture_output=True, text=True,
        ).stdout.strip()
        if not where.startswith(os.path.join(baseline, "fsck") + os.sep):
            sys.exit(f"--baseline {baseline}: imports fsck from {where or 'nowhere'}, not from there")
    spec = importlib.util.find_spec("fsck")
    if spec is not None and spec.origin:
        compile_package(os.path.dirname(spec.origin))
    if baseline:
        compile_package(os.path.join(baseline, "fsck"))
    gc_path = os.path.join(out, "gc.txt")
    gc_untagged_path = os.path.join(out, "gc-untagged.txt")
    find_cat = f"find {q(root)} -name link -type f -print0 | xargs -0 cat | wc -c"

    if args.cold and not os.access(DROP_CACHES, os.W_OK):
        sys.exit(f"--cold drops the page cache through {DROP_CACHES}: run as root")
    bench = Bench(repeat, verbose=not args.quiet, warm_up=not args.no_warm_up, cold=args.cold)
    commands: list[tuple[str, list[str], str | None]] = [
        ("import", [sys.executable, "-c", "import fsck.cli"], None),
        ("find", ["sh", "-c", f"find {q(root)} -type f | wc -l"], os.path.join(out, "find.txt")),
        ("find-stat", ["sh", "-c", f"find {q(root)} -type f -printf '%s\\n' | wc -l"], None),
        ("find-cat", ["sh", "-c", find_cat], None),
        ("find-cat-manifests", ["sh", "-c", f"{find_cat}; xargs -0 cat < {q(manifest_list)} | wc -c"], None),
        ("gc", [REGISTRY_BIN, "garbage-collect", "--dry-run", config], gc_path),
        ("gc-untagged", [REGISTRY_BIN, "garbage-collect", "--dry-run", "--delete-untagged", config], gc_untagged_path),
        ("fsck", [*fsck, "audit", root, "--json", "--quiet", "-o", report_path], None),
        ("fsck-base", [*base_fsck, "audit", root, "--json", "--quiet", "-o", base_report_path], None),
        (
            "sha256sum",
            [
                "sh", "-c",
                f"find {q(v2)}/blobs -name data -type f -print0 | xargs -0 -n {per_hasher} -P {cores} sha256sum",
            ],
            None,
        ),
        (
            "openssl",
            [
                "sh", "-c",
                f"find {q(v2)}/blobs -name data -type f -print0 "
                f"| xargs -0 -n {per_hasher} -P {cores} openssl dgst -sha256",
            ],
            None,
        ),
        ("verify", [*fsck, "audit", root, "--json", "--quiet", "--verify", "-o", verify_path], None),
        ("verify-base", [*base_fsck, "audit", root, "--json", "--quiet", "--verify", "-o", base_verify_path], None),
    ]
    for name, argv, stdout_path in commands:
        if name.endswith("-base") and not baseline:
            continue
        plain = name[: -len("-base")] if name.endswith("-base") else name
        if name in skip or plain in skip:
            bench.skip(name, "--skip")
        elif only and plain not in only:
            bench.skip(name, "--only")
        elif name.startswith("gc") and not os.access(REGISTRY_BIN, os.X_OK):
            bench.skip(name, f"{REGISTRY_BIN} not found")
        elif name == "openssl" and not shutil.which("openssl"):
            bench.skip(name, "openssl not found")
        else:
            bench.add(name, argv, stdout_path)
    started = time.perf_counter()
    manifests = None
    if "find-cat-manifests" in bench.measurements and not bench.measurements["find-cat-manifests"].skipped:
        manifests = write_manifest_list(v2, manifest_list)
        print(f"listed {manifests} manifest blobs in {time.perf_counter() - started:.1f} s (not timed)", flush=True)
    print(f"timing: {'1 warm-up round + ' if bench.warm_up else ''}best of {repeat}"
          f"{', the page cache dropped before each command' if bench.cold else ''}", flush=True)
    bench.run()

    stages = None
    if args.stages:
        script = os.path.join(HERE, "profile_audit.py")
        done = subprocess.run([sys.executable, script, root], capture_output=True, text=True)
        stages = json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr[-500:]}

    m = bench.measurements
    files = facts["files"]
    best = {name: meas.best for name, meas in m.items()}
    ran = lambda name: name in m and bool(m[name].runs)  # noqa: E731

    def mib(name: str) -> float | None:
        return m[name].peak_rss_kib / 1024 if ran(name) else None

    # Correctness, cheaply: who would delete what.
    checks: dict[str, str] = {}
    notes: dict[str, str] = {}
    if ran("find"):
        with open(os.path.join(out, "find.txt")) as handle:
            counted = int(handle.read().split()[0])
        checks["files"] = "MATCH" if counted == files else f"MISMATCH (find {counted}, generator {files})"
    expected = set(facts["orphans"])
    read = findings_by_id(report_path, "blob-orphan", "blob-unreachable", "manifest-untagged") if ran("fsck") else None
    found, findings_total = read if read is not None else (None, None)
    orphans = found["blob-orphan"] if found is not None else None
    if orphans is not None:
        checks["fsck blob-orphan = generator orphans"] = (
            "MATCH" if orphans == expected else f"MISMATCH ({len(orphans)} vs {len(expected)})"
        )
    if ran("gc"):
        eligible = gc_eligible(gc_path)
        checks["gc eligible = generator orphans"] = (
            "MATCH" if eligible == expected else f"MISMATCH ({len(eligible)} vs {len(expected)})"
        )
        if orphans is not None:
            checks["gc eligible = fsck blob-orphan"] = (
                "MATCH" if eligible == orphans
                else f"MISMATCH (gc only: {len(eligible - orphans)}, fsck only: {len(orphans - eligible)})"
            )
    if ran("gc-untagged"):
        blobs_out, manifests_out = gc_eligible(gc_untagged_path), gc_eligible(gc_untagged_path, "manifest")
        said = f"{len(blobs_out)} blob and {len(manifests_out)} manifest eligible for deletion"
        if found is not None:
            garbage = found["blob-orphan"] | found["blob-unreachable"]
            untagged = found["manifest-untagged"]
            said += (
                f"; blobs {'include' if garbage <= blobs_out else 'do NOT include'} fsck's {len(garbage)} "
                f"blob-orphan + blob-unreachable, manifests {'include' if untagged <= manifests_out else 'do NOT include'}"
                f" its {len(untagged)} manifest-untagged"
            )
            extra = manifests_out - untagged
            if extra and os.path.exists(manifest_list):
                children = len(extra & index_children(v2, manifest_list))
                said += f"; of the {len(extra)} other manifests {children} are image-index children"
        notes["gc-untagged (2.8)"] = said

    if ran("verify"):
        corrupt = report_findings(verify_path, "blob-digest-mismatch")
        checks["verify: no blob-digest-mismatch"] = "MATCH" if corrupt == set() else f"MISMATCH ({corrupt})"
    if baseline and ran("fsck-base") and ran("fsck"):
        checks["fsck report = fsck-base report"] = same_report(report_path, base_report_path)
    if baseline and ran("verify-base") and ran("verify"):
        checks["verify report = verify-base report"] = same_report(verify_path, base_verify_path)

    fsck_marginal = (
        (m["fsck"].peak_rss_kib - m["import"].peak_rss_kib) * 1024 / files if ran("fsck") and ran("import") else None
    )
    hashing = (best["verify"] - best["fsck"]) if best.get("verify") and best.get("fsck") else None
    if hashing is not None and hashing <= 0:
        notes["(verify-fsck)"] = f"verify took no longer than fsck ({hashing:+.2f} s): the hashing is lost in the noise"
        hashing = None
    ratios = {
        "fsck/find": ratio(best.get("fsck"), best.get("find")),
        "fsck/find-cat": ratio(best.get("fsck"), best.get("find-cat")),
        "fsck/find-cat-manifests": ratio(best.get("fsck"), best.get("find-cat-manifests")),
        "fsck/gc": ratio(best.get("fsck"), best.get("gc")),
        "fsck/gc-untagged": ratio(best.get("fsck"), best.get("gc-untagged")),
        "gc-untagged/gc": ratio(best.get("gc-untagged"), best.get("gc")),
        "verify/sha256sum": ratio(best.get("verify"), best.get("sha256sum")),
        "(verify-fsck)/sha256sum": ratio(hashing, best.get("sha256sum")),
        "verify/openssl": ratio(best.get("verify"), best.get("openssl")),
        "(verify-fsck)/openssl": ratio(hashing, best.get("openssl")),
        "fsck RSS/gc RSS": ratio(mib("fsck"), mib("gc")),
        "fsck RSS/gc-untagged RSS": ratio(mib("fsck"), mib("gc-untagged")),
        "fsck RSS bytes/file": m["fsck"].peak_rss_kib * 1024 / files if ran("fsck") else None,
        "fsck RSS bytes/file over import": fsck_marginal,
    }
    if baseline:
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
    tree_label = short_count(files)
    targets = [(t, tree_label, ratios[t.ratio]) for t in TREE_TARGETS]

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print()
    print(
        f"registry-fsck benchmark, {when}, {platform.node() or 'host'}: {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; registry-fsck {package_version()}; scale {scale} "
        f"(repos {params.repos}, tags {params.tags}, seed {params.seed}, layers up to {params.layer_max} B"
        + (f", {params.bulk_images} bulk images of {params.bulk_layers} layers"
           f" {'tagged' if params.bulk_tagged else 'abandoned'}" if params.bulk_images else "")
        + ")"
    )
    print(
        f"tree {root}: {files} files, {facts['dirs']} dirs, {facts['repositories']} repositories, {facts['tags']} tags, "
        f"{facts['revisions']} revisions, {facts['blobs']} blobs ({facts['blob_bytes'] / 2**20:.1f} MiB), "
        f"{len(expected)} orphans" + (f"; fsck: {findings_total} findings" if findings_total is not None else "")
    )
    print()
    print(f"{'command':<18} {'best s':>8} {'runs s':>24} {'user s':>7} {'sys s':>7} {'peak MiB':>9}")
    for name, meas in m.items():
        if meas.skipped:
            print(f"{name:<18} {'skipped: ' + meas.skipped:>8}")
            continue
        runs = " ".join(f"{r:.2f}" for r in meas.runs)
        print(
            f"{name:<18} {fmt(meas.best):>8} {runs:>24} {meas.user:7.2f} {meas.system:7.2f} "
            f"{fmt(mib(name), '{:.1f}'):>9}"
        )
    print()
    for name, value in ratios.items():
        unit = "" if "bytes" in name or value is None else "x"
        print(f"{name:<32} {fmt(value, '{:.0f}' if 'bytes' in name else '{:.2f}')}{unit}")
    if stages:
        print(f"{'fsck stages (in-process)':<32} {stages.get('seconds', stages)}")
    print()
    print_targets(targets)
    print()
    for name, verdict in checks.items():
        print(f"{name:<40} {verdict}")
    for name, said in notes.items():
        print(f"{name:<40} INFO: {said}")
    print(f"\nbenchmark took {time.perf_counter() - started:.0f} s (generation {facts['seconds']} s)")

    result = {
        "when": when,
        "registry_fsck": package_version(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "scale": scale,
        "params": asdict(params),
        "root": root,
        "tree": {k: v for k, v in facts.items() if k != "orphans"},
        "orphans": len(expected),
        "findings": findings_total,
        "manifests": manifests,
        "repeat": repeat,
        "measurements": {name: {**asdict(meas), "best": meas.best} for name, meas in m.items()},
        "ratios": ratios,
        "targets": [
            {"ratio": t.ratio, "tree": tree, "value": value, "bound": t.bound(), "verdict": t.verdict(value)}
            for t, tree, value in targets
        ],
        "stages": stages,
        "checks": checks,
        "notes": notes,
    }
    if args.json_path:
        with open(args.json_path, "w") as handle:
            json.dump(result, handle, indent=1)
    return (1 if any(v != "MATCH" for v in checks.values()) else 0), result


if __name__ == "__main__":
    sys.exit(main())
