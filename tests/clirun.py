"""Run the real command line in a subprocess, as an admin would."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parent.parent
DEMO = REPO / "fixtures" / "demo"


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fsck", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or REPO,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def audit_records(root: Path, *, verify: bool = False, upload_age: str = "168h") -> list[dict]:
    """The audit's findings as their JSON records, through the library (faster than a subprocess)."""
    from datetime import datetime, timezone

    from fsck import analyze, cli, report

    target = cli.resolve_target(Path(root), None)
    policy = analyze.Policy(now=datetime.now(timezone.utc), upload_age=cli.parse_duration(upload_age))
    result = cli.run_audit(target, policy, verify_blobs=verify, quiet=True)
    return [report.finding_record(f) for f in result.findings]


def by_id(records: list[dict], finding_id: str) -> list[dict]:
    return [r for r in records if r["id"] == finding_id]


def digests(records: list[dict], finding_id: str, repository: str | None = None) -> set[str]:
    return {
        r["digest"] for r in records if r["id"] == finding_id and (repository is None or r["repository"] == repository)
    }
