"""Time and profile `registry-fsck audit` stage by stage, in this process.

    python benchmarks/profile_audit.py ROOT                 # seconds per stage, as JSON on stdout
    python benchmarks/profile_audit.py ROOT --cprofile 20   # and cProfile's top 20 by cumulative time

The stages are the ones `fsck.cli.run_audit` wires: layout.find_v2 → scan.scan →
manifests.read_manifests → analyze.analyze → report.to_json. cProfile sees only the main
thread, so under `--cprofile` manifests are read with one worker (their parsing then shows
up); the stage seconds are measured with the package's own defaults. Use py-spy
(`py-spy top`/`record --threads`) to see the threads of a normal run.
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


def stages(root: str, workers: int | None = None) -> dict:
    from fsck import analyze, layout, manifests, report, scan

    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 3)
        clock = now

    v2 = os.path.abspath(layout.find_v2(root))
    inventory = scan.scan(v2)
    lap("scan")
    revisions = {d for repo in inventory.repositories.values() for d in repo.revisions}
    extra = {} if workers is None else {"workers": workers}
    parsed = manifests.read_manifests(v2, revisions, inventory.blobs, **extra)
    lap("manifests")
    policy = analyze.Policy(now=datetime.now(timezone.utc))
    audit = analyze.analyze(inventory, parsed, policy)
    lap("analyze")
    context = report.Context(layout.rootdirectory_of(v2), v2, policy.now, False)
    data = report.to_json(audit, context, 4)
    lap("report")
    seconds["total"] = round(sum(seconds.values()), 3)
    return {
        "seconds": seconds,
        "findings": len(audit.findings),
        "report_bytes": len(data),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="the registry's rootdirectory (or its docker/registry/v2)")
    parser.add_argument("--cprofile", type=int, metavar="N", help="print cProfile's top N by cumulative time")
    parser.add_argument("--sort", default="cumulative", help="pstats sort key (default cumulative)")
    args = parser.parse_args(argv)
    if args.cprofile:
        profiler = cProfile.Profile()
        profiler.enable()
        result = stages(args.root, workers=1)
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).strip_dirs().sort_stats(args.sort).print_stats(args.cprofile)
        print(text.getvalue(), file=sys.stderr)
        print(json.dumps({"profiled": True, **result}))
    else:
        print(json.dumps(stages(args.root)))


if __name__ == "__main__":
    main()
