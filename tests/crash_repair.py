"""Run a repair and stop the process hard (os._exit, as a kill -9 would) after its k-th change.

    python tests/crash_repair.py ROOT K [--untagged]
"""

import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from fsck import apply, checks, cli, plan


def main() -> None:
    root, crash_after = sys.argv[1], int(sys.argv[2])
    target = cli.resolve_target(Path(root), None)
    loaded = cli.load(target, verify_blobs=False, quiet=True)
    now = datetime.now(timezone.utc)
    selection = plan.Selection(untagged="--untagged" in sys.argv)
    audit = checks.audit(loaded.inventory, loaded.manifests, checks.Policy(now=now))
    the_plan = plan.prepare(audit, loaded.inventory, selection, lambda _location: None, now)
    quarantine = apply.default_quarantine(target.v2)

    def crash(count: int) -> None:
        if count == crash_after:
            os._exit(137)

    with apply.locked(quarantine):
        apply.apply(the_plan, target.v2, quarantine, now=now, after_action=crash)
    print("finished before the crash point")


if __name__ == "__main__":
    main()
