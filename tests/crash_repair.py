"""Run a repair and stop the process hard (os._exit, as a kill -9 would) after its k-th change.

    python tests/crash_repair.py ROOT K [--untagged]
"""

import os
import sys
from datetime import datetime, timezone
from pathlib import Path

# This checkout's package, not whichever one is installed (run as a script, only tests/ is on the path).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fsck import checks, plan, service  # noqa: E402


def main() -> None:
    root, crash_after = sys.argv[1], int(sys.argv[2])
    target = service.resolve_target(root, None)
    now = datetime.now(timezone.utc)
    selection = plan.Selection(untagged="--untagged" in sys.argv)
    repair = service.plan_repair(service.load(target), checks.Policy(now=now), selection)

    def crash(count: int) -> None:
        if count == crash_after:
            os._exit(137)

    service.carry_out(target, repair.plan, service.quarantine_of(target, None), now=now, after_action=crash)
    print("finished before the crash point")


if __name__ == "__main__":
    main()
