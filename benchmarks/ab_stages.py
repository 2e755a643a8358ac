"""Stage seconds of two copies of the package, measured alternately on the same tree.

    python benchmarks/ab_stages.py BASELINE_DIR ROOT [--rounds 7] [--verify] [--memory]

BASELINE_DIR holds another copy of the package as `BASELINE_DIR/fsck` (for example
`git archive HEAD fsck | tar -x -C BASELINE_DIR`); the other side is the package this
checkout imports. Each round runs `profile_audit.py ROOT` once per side, in fresh
processes, alternating, so load elsewhere on the machine falls on both alike; the best
and the median of each stage are printed. `--verify` adds the re-hashing of every blob
as a stage. `--memory` compares tracemalloc's MiB held
and peak per stage instead (one round is enough: they do not vary).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(HERE)


def run(pythonpath: str, root: str, memory: bool, verify: bool = False) -> dict:
    env = {**os.environ, "PYTHONPATH": pythonpath}
    options = (["--memory"] if memory else []) + (["--verify"] if verify and not memory else [])
    argv = [sys.executable, os.path.join(HERE, "profile_audit.py"), *options, root]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    document = json.loads(done.stdout)
    if not memory and os.path.realpath(document["package"]) != os.path.realpath(pythonpath):
        sys.exit(f"meant to measure the package in {pythonpath}, measured {document['package']}")
    return document["held_mib"] if memory else {**document["seconds"], "peak RSS MiB": document["peak_rss_mib"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("baseline", help="a directory holding the baseline package as fsck/")
    parser.add_argument("root", help="the registry's rootdirectory")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--memory", action="store_true", help="tracemalloc MiB per stage instead of seconds")
    parser.add_argument("--verify", action="store_true", help="also time re-hashing every blob")
    args = parser.parse_args(argv)
    sides = {"baseline": os.path.abspath(args.baseline), "current": CHECKOUT}
    results: dict[str, list[dict]] = {side: [] for side in sides}
    for _ in range(1 if args.memory else args.rounds):
        for side, path in sides.items():
            results[side].append(run(path, args.root, args.memory, args.verify))
    keys = list(results["current"][0])
    print(f"{'stage':<16}" + "".join(f"{side + ' best':>16}{'median':>9}" for side in sides) + f"{'current/baseline':>18}")
    for key in keys:
        cells, bests = "", []
        for side in sides:
            values = [r[key] for r in results[side]]
            bests.append(min(values))
            cells += f"{min(values):>16.3f}{statistics.median(values):>9.3f}"
        print(f"{key:<16}{cells}{(bests[1] / bests[0] if bests[0] else float('nan')):>17.2f}x")


if __name__ == "__main__":
    main()
