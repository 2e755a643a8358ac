"""Time and profile `registry-fsck audit` stage by stage, in this process.

    python benchmarks/profile_audit.py ROOT                 # seconds per stage, as JSON on stdout
    python benchmarks/profile_audit.py ROOT --verify        # and of re-hashing every blob
    python benchmarks/profile_audit.py ROOT --cprofile 20   # and cProfile's top 20 by cumulative time
    python benchmarks/profile_audit.py --memory ROOT        # tracemalloc: bytes held after each stage
    python benchmarks/profile_audit.py --rss ROOT           # peak RSS in each stage, the report streamed as the CLI does
    python benchmarks/profile_audit.py --collapsed FILE     # top 20 of a `py-spy record -f raw` profile

The stages are the ones `fsck.service` wires for `audit --json`: scan → manifests →
(verify, with --verify) → analyze (the checks) → report. A baseline copy of the package
from before the service layer (for ab_stages.py) is wired the same way by hand. cProfile sees only the main thread, so under `--cprofile` manifests are
read with one worker (their parsing then shows up); the stage seconds are measured with
the package's own defaults. Use py-spy (`py-spy top`/`record --threads`) to see the
threads of a normal run.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import sys
import time
from datetime import datetime, timezone


class _Stages:
    """A progress sink for `service.load` that reads the clock as each stage's counter closes."""

    NAMES = {"scanning": "scan", "manifests": "manifests", "verifying": "verify"}

    def __init__(self, lap) -> None:
        self.lap = lap

    def counter(self, description: str, unit: str, total: int | None = None, scale: bool = False):
        stages = self

        class _Stage:
            def __enter__(self):
                return self

            def update(self, _n: int = 1) -> None:
                pass

            def __exit__(self, *_exc) -> None:
                stages.lap(stages.NAMES[description])

        return _Stage()


def _has(module: str) -> bool:
    """Asked of the imported package's own directory: an editable install may still resolve a
    module that a baseline copy of the package does not have."""
    import fsck

    return os.path.exists(os.path.join(os.path.dirname(fsck.__file__), f"{module}.py"))


def _audit(root: str, lap, workers: int | None = None, verify_blobs: bool = False):
    """The audit as `registry-fsck audit --json` runs it, calling `lap(stage)` after each stage."""
    from fsck import layout, report

    if _has("service"):
        from fsck import checks, service

        target = service.resolve_target(root, None)
        import inspect

        # `jobs` since the walk went on a pool (earlier packages: `workers`, the manifest readers)
        knob = "jobs" if "jobs" in inspect.signature(service.load).parameters else "workers"
        extra = {} if workers is None else {knob: workers}
        loaded = service.load(target, verify_blobs=verify_blobs, progress=_Stages(lap), **extra)
        policy = checks.Policy(now=datetime.now(timezone.utc))
        audit = service.judge(loaded, policy)
        v2 = target.v2
    else:  # a baseline from before the service layer: the same stages, wired by hand
        from fsck import analyze, manifests, scan, verify

        v2 = os.path.abspath(layout.find_v2(root))
        inventory = scan.scan(v2)
        lap("scan")
        extra = {} if workers is None else {"workers": workers}
        parsed = manifests.read_manifests(v2, manifests.named_by_links(inventory), inventory.blobs, **extra)
        lap("manifests")
        corrupt: frozenset = frozenset()
        if verify_blobs:
            corrupt = verify.verify_blobs(v2, inventory.blobs).corrupt
            lap("verify")
        policy = analyze.Policy(now=datetime.now(timezone.utc))
        audit = analyze.analyze(inventory, parsed, policy, corrupt)
    lap("analyze")
    data = report.to_json(audit, report.Context(layout.rootdirectory_of(v2), v2, policy.now, False), 4)
    lap("report")
    return audit, data


def stages(root: str, workers: int | None = None, verify_blobs: bool = False) -> dict:
    import fsck

    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 3)
        clock = now

    audit, data = _audit(root, lap, workers, verify_blobs)
    seconds["total"] = round(sum(seconds.values()), 3)
    return {
        "package": os.path.dirname(os.path.dirname(os.path.abspath(fsck.__file__))),
        "seconds": seconds,
        "findings": len(audit.findings),
        "report_bytes": len(data),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def memory(root: str) -> dict:
    """Python heap held after each stage, and its peak, by tracemalloc (slow: about 2x)."""
    import tracemalloc

    held: dict[str, float] = {}
    tracemalloc.start()

    def mark(name: str) -> None:
        current, peak = tracemalloc.get_traced_memory()
        held[name] = round(current / 2**20, 1)
        held[f"{name} peak"] = round(peak / 2**20, 1)
        tracemalloc.reset_peak()

    audit, data = _audit(root, mark)
    snapshot = tracemalloc.take_snapshot()
    top = [
        f"{stat.size / 2**20:.1f} MiB {stat.count} blocks {stat.traceback[0].filename.rsplit('/', 2)[-1]}:"
        f"{stat.traceback[0].lineno}"
        for stat in snapshot.statistics("lineno")[:12]
    ]
    del data, audit
    return {"held_mib": held, "top_lines": top}


def rss_stages(root: str) -> dict:
    """Peak resident memory in each stage, sampled every 5 ms by a thread (the kernel's high-water mark
    for the whole run beside it), with the report streamed to /dev/null as `audit --json -o` writes it:
    where the audit's peak RSS comes from. Starts after the CLI's imports, as a run does."""
    import threading

    import fsck.cli  # noqa: F401  (the imports every run pays, in the first row)
    from fsck import checks, report, service

    def resident_mib() -> float:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    stage = ["imports"]
    peaks: dict[str, float] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            now, where = resident_mib(), stage[0]
            peaks[where] = max(peaks.get(where, 0.0), now)
            done.wait(0.005)

    class Stage:
        def counter(self, description: str, unit: str, total: int | None = None, scale: bool = False):
            class _Counter:
                def __enter__(self):
                    stage[0] = description
                    return self

                def update(self, _n: int = 1) -> None:
                    pass

                def __exit__(self, *_exc) -> None:
                    stage[0] = f"after {description}"

            return _Counter()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    done.wait(0.05)
    target = service.resolve_target(root, None)
    loaded = service.load(target, progress=Stage())
    stage[0] = "analyze"
    policy = checks.Policy(now=datetime.now(timezone.utc))
    audit = service.judge(loaded, policy).released()
    del loaded
    stage[0] = "report"
    context = report.Context(target.root, target.v2, policy.now, False)
    with open(os.devnull, "wb") as out:
        report.write_json(audit, context, 4, out)
    done.wait(0.05)
    done.set()
    sampler.join()
    return {
        "peak_rss_mib_by_stage": {name: round(mib, 1) for name, mib in peaks.items()},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def collapsed_summary(path: str, count: int = 20, main_only: bool = False) -> str:
    """Top functions of a py-spy raw (collapsed-stack) profile, by inclusive and by own samples.

    py-spy samples every thread: with `main_only`, only stacks rooted in `<module>` (or runpy's
    `_run_module_as_main`) count, so percentages are of the main thread's wall time (waits on
    worker threads included)."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    with open(path) as handle:
        for line in handle:
            stack, _, samples = line.rstrip("\n").rpartition(" ")
            # The main thread's stacks start at the script (`<module>`) or, under `python -m`, at runpy.
            if not stack or (main_only and not stack.startswith(("<module>", "_run_module_as_main"))):
                continue
            n = int(samples)
            total += n
            frames = [frame.split(":")[0] + ")" if "(" in frame else frame for frame in stack.split(";")]
            for frame in set(frames):
                inclusive[frame] = inclusive.get(frame, 0) + n
            own[frames[-1]] = own.get(frames[-1], 0) + n
    lines = [f"{total} samples", "", f"top {count} by inclusive samples (cumulative)", "   incl%   self%  function"]
    for frame, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[:count]:
        lines.append(f"  {100 * n / total:6.1f}  {100 * own.get(frame, 0) / total:6.1f}  {frame}")
    lines += ["", f"top {count} by own samples", "   self%  function"]
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:count]:
        lines.append(f"  {100 * n / total:6.1f}  {frame}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", help="the registry's rootdirectory (or its docker/registry/v2)")
    parser.add_argument("--cprofile", type=int, metavar="N", help="print cProfile's top N by cumulative time")
    parser.add_argument("--sort", default="cumulative", help="pstats sort key (default cumulative)")
    parser.add_argument("--memory", action="store_true", help="tracemalloc: Python heap held after each stage")
    parser.add_argument("--rss", action="store_true", help="peak RSS in each stage, the report streamed")
    parser.add_argument("--verify", action="store_true", help="also time re-hashing every blob (audit --verify)")
    parser.add_argument("--collapsed", metavar="FILE", help="summarize a `py-spy record -f raw` output file")
    parser.add_argument("--top", type=int, default=20, help="lines in --collapsed summaries (default 20)")
    parser.add_argument("--main-thread", action="store_true", help="--collapsed: only the main thread's stacks")
    args = parser.parse_args(argv)
    if args.collapsed:
        print(collapsed_summary(args.collapsed, args.top, args.main_thread))
        return
    if not args.root:
        parser.error("give ROOT")
    if args.memory:
        print(json.dumps(memory(args.root), indent=1))
    elif args.rss:
        print(json.dumps(rss_stages(args.root), indent=1))
    elif args.cprofile:
        profiler = cProfile.Profile()
        profiler.enable()
        result = stages(args.root, workers=1, verify_blobs=args.verify)
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).strip_dirs().sort_stats(args.sort).print_stats(args.cprofile)
        print(text.getvalue(), file=sys.stderr)
        print(json.dumps({"profiled": True, **result}))
    else:
        print(json.dumps(stages(args.root, verify_blobs=args.verify)))


if __name__ == "__main__":
    main()
