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

    from fsck import checks, report, service
    from fsck.commands.options import parse_duration

    target = service.resolve_target(str(root), None)
    policy = checks.Policy(now=datetime.now(timezone.utc), upload_age=parse_duration(upload_age))
    result = service.audit(target, policy, verify_blobs=verify)
    return [report.finding_record(f) for f in result.findings]


def by_id(records: list[dict], finding_id: str) -> list[dict]:
    return [r for r in records if r["id"] == finding_id]


def digests(records: list[dict], finding_id: str, repository: str | None = None) -> set[str]:
    return {
        r["digest"] for r in records if r["id"] == finding_id and (repository is None or r["repository"] == repository)
    }


def snapshot(root: Path, directory_mtimes: bool = True) -> dict:
    """Every name under root with its mode, owner, mtime and file content: what 'nothing written' means.

    `directory_mtimes=False` leaves out directory mtimes, which any rename inside changes (undo restores the
    names, contents, files' mtimes and modes, not the directories' clocks).
    """
    state = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, ""]:
            path = os.path.join(directory, name) if name else directory
            info = os.lstat(path)
            is_file = os.path.isfile(path) and not os.path.islink(path)
            content = Path(path).read_bytes() if is_file else None
            mtime = info.st_mtime_ns if is_file or directory_mtimes else None
            state[os.path.relpath(path, root)] = (info.st_mode, info.st_uid, info.st_gid, mtime, content)
    return state


def make_non_registry(tmp_path: Path, kind: str) -> Path:
    """A PATH that is no registry: missing, a file, an empty directory, or a dangling symbolic link."""
    target = tmp_path / "target"
    if kind == "file":
        target.write_text("x")
    elif kind == "empty-dir":
        target.mkdir()
    elif kind == "dangling-symlink":
        target.symlink_to(tmp_path / "nowhere")
    return target


def invoke(*args: str) -> tuple[int, str]:
    """The command line in this process (no interpreter start-up): for loops that run it many times."""
    from typer.testing import CliRunner

    import fsck.cli  # noqa: F401  (registers the commands)
    from fsck.commands.app import app

    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout


def answer_on_a_terminal(args: list[str], question: bytes, keys: bytes | None) -> tuple[int, str]:
    """Run the command line with its terminal on a pty, wait for `question`, type `keys` (None: press
    Ctrl-C, that is, send SIGINT as the terminal would); return (exit code, screen)."""
    import pty
    import select
    import signal
    import time

    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "fsck", *args],
        stdin=follower, stdout=follower, stderr=follower, cwd=REPO, start_new_session=True,
    )
    os.close(follower)
    screen = b""
    deadline = time.monotonic() + 60
    try:
        while question not in screen and time.monotonic() < deadline:
            if select.select([leader], [], [], 1)[0]:
                screen += os.read(leader, 65536)
        assert question in screen, screen.decode(errors="replace")
        if keys is None:
            time.sleep(0.5)  # as a person would: the program is waiting for the answer by then
            process.send_signal(signal.SIGINT)
        else:
            os.write(leader, keys)
        code = process.wait(timeout=60)
        try:
            while select.select([leader], [], [], 0.2)[0]:
                screen += os.read(leader, 65536)
        except OSError:
            pass
    finally:
        if process.poll() is None:
            process.kill()
        os.close(leader)
    return code, screen.decode(errors="replace")
