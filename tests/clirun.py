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
