"""Every local-disk, memory and verify target of the scale issue, over several trees, in one run.

    python benchmarks/scale.py --small DIR --large DIR [--few DIR --many DIR] [--large-blobs DIR]
    python benchmarks/scale.py --small /var/tmp/bench/t300 --large /var/tmp/bench/t1m \\
        --few /var/tmp/bench/few --many /var/tmp/bench/many --large-blobs /var/tmp/bench/big --out /tmp/scale

Each DIR holds a tree as `run.py --dir` or `synth.py DIR/root` leaves it (DIR/root and
DIR/synth.json), reused as it is (`run.py --tree`); a DIR without one is generated first
with its role's parameters:

    small        ~300k files   synth.py --repos 3600
    large        ~1M files     synth.py --preset large
    few, many    ~1.07M files each, ~7k findings against ~1.04M (synth.py --findings few|many)
    large-blobs  877 blobs up to 4 MiB (synth.py --repos 40 --tags 3 --layer-max 4194304)

On small and large, run.py times every reference (find, find-cat, find-cat-manifests, gc,
gc-untagged, sha256sum, openssl) beside the audit and the verify, and prints its own
targets per tree; few and many run the audit alone (peak RSS, no warm-up round);
large-blobs the audit, the verify and the hashers. Then, together:

    fsck/find-cat, fsck/gc-untagged, fsck RSS/gc RSS (both GCs), (verify-fsck)/sha256sum
                                    per tree, as run.py prints them
    fsck RSS growth/file  <= 150 B  (audit peak at large - at small) / (files at large - at small)
    fsck RSS many/few     <= 1.05   audit peak with ~1M findings per the same-size tree with few

Large trees take minutes per command (a 1M-file audit ~100 s on 2 cores): `--repeat-large`
(default 1) sets their timed rounds, `--repeat` (default 3) the others'. `--json FILE` keeps
every tree's numbers and the targets. The exit code is 1 when a correctness check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import run  # noqa: E402

# The parameters each role's tree is generated with when its DIR holds none (run.py options).
ROLE_PARAMS = {
    "small": ["--repos", "3600"],
    "large": ["--scale", "large"],
    "few": ["--findings", "few"],
    "many": ["--findings", "many"],
    "large-blobs": ["--repos", "40", "--tags", "3", "--layer-max", "4194304"],
}
FULL = "import,find,find-cat,find-cat-manifests,gc,gc-untagged,fsck,sha256sum,openssl,verify"
ROLE_ROWS = {
    "small": FULL,
    "large": FULL,
    "few": "import,fsck",
    "many": "import,fsck",
    "large-blobs": "import,fsck,sha256sum,openssl,verify",
}
GROWTH = run.Target(
    "fsck RSS growth/file", 150, unit="B", what="(audit peak at large - at small) / (files at large - at small)"
)
FINDINGS = run.Target("fsck RSS many/few", 1.05, what="audit peak, ~1M findings per the same-size tree with few")


def role_argv(role: str, directory: str, out: str, repeat: int, skip: str, quiet: bool) -> list[str]:
    has_tree = os.path.isfile(os.path.join(directory, "synth.json")) and os.path.isdir(os.path.join(directory, "root"))
    argv = ["--tree", directory] if has_tree else ["--dir", directory, *ROLE_PARAMS[role]]
    argv += ["--out", os.path.join(out, role), "--only", ROLE_ROWS[role], "--repeat", str(repeat)]
    if role in ("few", "many"):
        argv.append("--no-warm-up")
    if skip:
        argv += ["--skip", skip]
    if quiet:
        argv.append("--quiet")
    return argv


def peak_bytes(result: dict, name: str) -> int | None:
    measured = result["measurements"].get(name)
    return measured["peak_rss_kib"] * 1024 if measured and measured["runs"] else None


def growth(small: dict, large: dict, name: str) -> float | None:
    low, high = peak_bytes(small, name), peak_bytes(large, name)
    files = large["tree"]["files"] - small["tree"]["files"]
    return (high - low) / files if low is not None and high is not None and files > 0 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for role in ROLE_PARAMS:
        parser.add_argument(f"--{role}", metavar="DIR", help=f"the {role} tree ({' '.join(ROLE_PARAMS[role])})")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds on small and large-blobs (default 3)")
    parser.add_argument("--repeat-large", type=int, default=1, help="timed rounds on large, few, many (default 1)")
    parser.add_argument("--skip", default="", help="commands not to run on any tree, e.g. openssl")
    parser.add_argument("--out", help="reports, per tree in OUT/<role> (default: a temp dir, removed)")
    parser.add_argument("--json", dest="json_path", help="write every tree's numbers and the targets here")
    parser.add_argument("--quiet", "-q", action="store_true", help="no per-run lines")
    args = parser.parse_args(argv)
    roles = {role: getattr(args, role.replace("-", "_")) for role in ROLE_PARAMS}
    roles = {role: os.path.abspath(d) for role, d in roles.items() if d}
    if not roles:
        parser.error("give at least one tree: --small, --large, --few, --many or --large-blobs")
    out = os.path.abspath(args.out) if args.out else tempfile.mkdtemp(prefix="registry-fsck-scale-")
    started = time.perf_counter()
    results: dict[str, dict] = {}
    code = 0
    try:
        for role, directory in roles.items():
            repeat = args.repeat if role in ("small", "large-blobs") else args.repeat_large
            print(f"\n===== {role}: {directory}", flush=True)
            exit_code, results[role] = run.measure(role_argv(role, directory, out, repeat, args.skip, args.quiet))
            code = max(code, exit_code)
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)

    rows: list[tuple[run.Target, str, float | None]] = []
    for role in ("small", "large"):
        if role in results:
            label = run.short_count(results[role]["tree"]["files"])
            rows.extend((t, label, results[role]["ratios"][t.ratio]) for t in run.TREE_TARGETS)
    if "large-blobs" in results:
        verify_target = next(t for t in run.TREE_TARGETS if t.ratio == "(verify-fsck)/sha256sum")
        blobs = results["large-blobs"]["tree"]["blobs"]
        rows.append((verify_target, f"{blobs} big blobs", results["large-blobs"]["ratios"][verify_target.ratio]))
    if "small" in results and "large" in results:
        rows.append((GROWTH, "small->large", growth(results["small"], results["large"], "fsck")))
    if "few" in results and "many" in results:
        rows.append((FINDINGS, "many/few", run.ratio(peak_bytes(results["many"], "fsck"),
                                                     peak_bytes(results["few"], "fsck"))))

    print(f"\n===== scale targets, registry-fsck {run.package_version()}, {time.perf_counter() - started:.0f} s")
    print(f"{'tree':<12} {'files':>9} {'findings':>9} {'fsck MiB':>9} {'gc MiB':>8} {'gc-untagged MiB':>16}  root")
    for role, result in results.items():
        def mib(name: str, result: dict = result) -> str:
            value = peak_bytes(result, name)
            return "-" if value is None else f"{value / 2**20:.1f}"

        findings = result.get("findings")
        print(
            f"{role:<12} {result['tree']['files']:>9} {'-' if findings is None else findings:>9} {mib('fsck'):>9} "
            f"{mib('gc'):>8} {mib('gc-untagged'):>16}  {result['root']}"
        )
    if "small" in results and "large" in results:
        for name in ("gc", "gc-untagged"):
            value = growth(results["small"], results["large"], name)
            print(f"{name} RSS growth/file: {run.format_value(value, 'B')} (for comparison)")
    print()
    run.print_targets(rows)
    failed = {role: r["checks"] for role, r in results.items() if any(v != "MATCH" for v in r["checks"].values())}
    print("\ncorrectness checks: " + ("all MATCH" if not failed else f"MISMATCH in {', '.join(failed)}"))
    if args.json_path:
        with open(args.json_path, "w") as handle:
            json.dump(
                {
                    "trees": results,
                    "targets": [
                        {"ratio": t.ratio, "tree": tree, "value": value, "bound": t.bound(), "verdict": t.verdict(value)}
                        for t, tree, value in rows
                    ],
                },
                handle,
                indent=1,
            )
    return code


if __name__ == "__main__":
    sys.exit(main())
