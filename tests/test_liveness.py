"""Commands that change the tree refuse while a registry serves it, or a process holds a file open in it.

The registries here are the real one (Debian's `docker-registry`), started as an admin or a container
would start it: by its Debian name or as the official image's `registry`, with the config as an argument
or in REGISTRY_CONFIGURATION_PATH, with the rootdirectory from the file or from the environment, on the
host or in a chroot that reaches the tree through an absolute symbolic link of its own.
"""

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest
import yaml
from clirun import run_cli, snapshot

from fsck import guards
from tests.harness import tree
from tests.harness.registry import REGISTRY_BIN, START_TIMEOUT, Registry, age_uploads, free_port, registry_config

pytestmark = pytest.mark.registry


def refusal(root, registry_pid, command):
    return f"registry pid {registry_pid} ({command}) is serving {root}: stop it first (or --force)"


@pytest.fixture
def quiet_demo(demo):
    """The demo with every upload aged: nothing says the registry is live but the registry itself."""
    age_uploads(demo.root)
    return demo


def write_config(path: Path, rootdirectory: str, port: int) -> Path:
    config = registry_config(Path(rootdirectory), port)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@contextmanager
def serving(argv, port, *, env=None, cwd=None, jail=None, log: Path):
    """The real registry started with exactly `argv` (argv[0] may be `registry`), until it answers /v2/."""
    executable = shutil.which(REGISTRY_BIN) if jail is None else "/bin/registry"

    def enter_jail():
        os.chroot(jail)
        os.chdir(cwd or "/")

    with open(log, "ab") as output:
        process = subprocess.Popen(
            argv, executable=executable, env=env if env is not None else {}, cwd=None if jail else cwd,
            preexec_fn=enter_jail if jail else None, stdin=subprocess.DEVNULL, stdout=output, stderr=output,
        )
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert process.poll() is None, log.read_text()
            try:
                with opener.open(f"http://127.0.0.1:{port}/v2/", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def holding(*argv, cwd=None):
    """A process of its own (`argv`), once it says it is ready."""
    process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout.readline().strip() == "ready"
        yield process
    finally:
        process.kill()
        process.wait(10)


def test_repair_and_undo_refuse_under_the_registry_serving_the_tree_until_it_stops(demo, tmp_path):
    root = demo.root
    with Registry(root, schema1=True, workdir=tmp_path / "registry") as registry:
        refused_with = refusal(root, registry.pid, f"{REGISTRY_BIN} serve {registry.config_path}")
        before = snapshot(root)
        refused = run_cli("repair", str(root), "--yes")
        assert (refused.returncode, refused.stdout) == (8, "")
        assert refused_with in refused.stderr.splitlines()[-1]
        assert snapshot(root) == before

        forced = run_cli("repair", str(root), "--yes", "--force")
        assert forced.returncode & 1, forced.stderr
        assert refused_with not in forced.stderr
        repaired = snapshot(root)
        assert repaired != before

        undo = run_cli("undo", str(root))
        assert (undo.returncode, undo.stdout) == (8, "") and refused_with in undo.stderr
        assert snapshot(root) == repaired
    assert run_cli("undo", str(root)).returncode == 0  # stopped: undo goes ahead
    age_uploads(root)
    assert run_cli("repair", str(root), "--yes").returncode & 1


def test_the_tree_reached_through_a_symbolic_link_is_still_the_served_tree(demo_registry, tmp_path):
    link = tmp_path / "registry-link"
    link.symlink_to(demo_registry.root)
    before = snapshot(demo_registry.root)
    result = run_cli("repair", str(link), "--yes")
    assert result.returncode == 8
    assert f"registry pid {demo_registry.pid} ({REGISTRY_BIN} serve {demo_registry.config_path}) is serving" in result.stderr
    assert snapshot(demo_registry.root) == before


def test_a_registry_serving_another_tree_does_not_refuse(quiet_demo, registry):
    result = run_cli("repair", str(quiet_demo.root), "--yes")
    assert result.returncode & 1, result.stderr
    assert f"pid {registry.pid} " not in result.stderr


def test_the_rootdirectory_from_the_environment_overrides_the_config_the_environment_names(quiet_demo, tmp_path):
    """As the official image may be run: `registry serve`, config and rootdirectory from the environment."""
    port = free_port()
    elsewhere = tmp_path / "elsewhere"
    config = write_config(tmp_path / "etc" / "config.yml", str(elsewhere), port)
    environment = {
        "REGISTRY_CONFIGURATION_PATH": str(config),
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(quiet_demo.root),
    }
    before = snapshot(quiet_demo.root)
    with serving(["registry", "serve"], port, env=environment, log=tmp_path / "registry.log") as process:
        result = run_cli("repair", str(quiet_demo.root), "--yes")
        assert result.returncode == 8
        assert refusal(quiet_demo.root, process.pid, "registry serve") in result.stderr
        assert not elsewhere.exists() or not any(elsewhere.iterdir())
    assert snapshot(quiet_demo.root) == before


def test_a_registry_in_a_chroot_is_seen_as_it_sees_its_config_and_rootdirectory(demo_build, tree_copy, tmp_path):
    """Its config is relative to its working directory inside the jail, and its rootdirectory an absolute
    symbolic link that means something only there: both are read through /proc/PID/root and /cwd."""
    if os.geteuid() != 0:
        pytest.skip("chroot needs root")
    jail = tmp_path / "jail"
    root = tree_copy(demo_build.root, "jail/data/registry")
    (jail / "var" / "lib").mkdir(parents=True)
    (jail / "var" / "lib" / "registry").symlink_to("/data/registry")
    _copy_into(jail, Path(shutil.which(REGISTRY_BIN)), Path("/bin/registry"))
    for library in _libraries(shutil.which(REGISTRY_BIN)):
        _copy_into(jail, Path(library), Path(library))
    port = free_port()
    write_config(jail / "etc" / "docker" / "registry" / "config.yml", "/var/lib/registry", port)
    argv = ["registry", "serve", "config.yml"]
    with serving(argv, port, jail=jail, cwd="/etc/docker/registry", log=tmp_path / "registry.log") as process:
        result = run_cli("repair", str(root), "--yes")
        assert result.returncode == 8
        assert refusal(root, process.pid, "registry serve config.yml") in result.stderr


def _libraries(binary: str) -> list[str]:
    listed = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    return [word for line in listed.splitlines() for word in line.split() if word.startswith("/")]


def _copy_into(jail: Path, source: Path, inside: Path) -> None:
    target = jail / inside.relative_to("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source.resolve(), target)
    except OSError:
        shutil.copy2(source.resolve(), target)


def test_a_process_holding_a_blob_open_refuses_naming_it(quiet_demo):
    root = quiet_demo.root
    blob = tree.blob_data(root, sorted(quiet_demo.scenario.orphan_blobs)[0]).resolve()
    before = snapshot(root)
    code = f"f = open({str(blob)!r}, 'rb'); print('ready', flush=True); import time; time.sleep(60)"
    with holding(sys.executable, "-c", code) as holder:
        result = run_cli("repair", str(root), "--yes")
        assert result.returncode == 8
        assert f"pid {holder.pid} ({sys.executable} -c f = open(" in result.stderr
        assert result.stderr.rstrip().endswith(f"has {blob} open: stop it first (or --force)")
        assert snapshot(root) == before
        undo = run_cli("undo", str(root), "--force")  # past the guard, undo finds no run to undo
        assert undo.returncode == 8 and "stop it first" not in undo.stderr
        assert f"has {blob} open; going ahead (--force)" in undo.stderr and "nothing to undo" in undo.stderr


def test_a_process_working_inside_the_tree_only_warns(quiet_demo):
    root = quiet_demo.root
    inside = (root / "docker" / "registry").resolve()
    with holding(sys.executable, "-c", "print('ready', flush=True); import time; time.sleep(60)", cwd=inside) as shell:
        result = run_cli("repair", str(root), "--yes")
        assert result.returncode & 1, result.stderr
        assert f"registry-fsck: warning: pid {shell.pid} ({sys.executable} -c print(" in result.stderr
        assert f"works in {inside}, inside the tree: make sure it writes nothing there" in result.stderr


def test_registry_fsck_and_its_parents_working_inside_the_tree_are_not_in_the_way(quiet_demo):
    repository = Path(__file__).parent.parent
    shell = subprocess.run(  # the shell waits for it, in the tree: its parent
        ["sh", "-c", f"cd {quiet_demo.root}/docker && {sys.executable} -m fsck repair .. --yes; exit $?"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(repository)}, stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert shell.returncode & 1, shell.stderr
    assert "works in" not in shell.stderr


def test_processes_that_cannot_be_inspected_are_counted_in_a_warning_not_a_refusal(quiet_demo, tmp_path):
    """Without CAP_SYS_PTRACE, root cannot read the open files of a process that made itself undumpable:
    one that holds a blob open is then not seen, and said as one more process not inspected."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv (util-linux)")
    root = quiet_demo.root

    def uninspected():
        result = subprocess.run(
            [setpriv, "--bounding-set=-sys_ptrace", sys.executable, "-m", "fsck", "repair", str(root), "--yes"],
            capture_output=True, text=True, cwd=Path(__file__).parent.parent, stdin=subprocess.DEVNULL, timeout=120,
        )
        assert result.returncode != 8, result.stderr
        counted = [line.split()[2] for line in result.stderr.splitlines() if "could not be inspected" in line]
        return int(counted[0]) if counted else 0

    def holder_of(blob):
        code = (f"import ctypes; ctypes.CDLL(None).prctl(4, 0, 0, 0, 0); f = open({str(blob)!r}, 'rb'); "
                "print('ready', flush=True); import time; time.sleep(60)")  # 4: PR_SET_DUMPABLE
        return holding(sys.executable, "-c", code)

    # Other uninspectable processes (another test's registry or store, under its own user) may come and
    # go between two runs: the pair is measured again, a few times, until nothing else changed within it.
    counts = []
    for _ in range(4):
        held = [tree.blob_data(root, d) for d in sorted(quiet_demo.scenario.orphan_blobs)]  # the first repair moves them
        blob = next((path for path in held if path.exists()), None) or next((root / "docker").rglob("data"))
        with holder_of(blob):
            hidden = uninspected()
        counts.append((hidden, uninspected()))
        if hidden >= 1 and counts[-1][1] == hidden - 1:
            break
    else:
        pytest.fail(f"the holder was never counted alone: (with it, without it) = {counts}")


def test_with_config_the_http_probe_refuses_where_proc_sees_no_registry_of_the_tree(quiet_demo, registry, tmp_path):
    """A config over this tree whose http.addr another registry answers at (one on another host, say)."""
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({
        "version": 0.1, "storage": {"filesystem": {"rootdirectory": str(quiet_demo.root)}},
        "http": {"addr": registry.addr},
    }))
    result = run_cli("repair", "--config", str(config), "--yes")
    assert result.returncode == 8
    assert f"the registry answers at {registry.addr}: stop it first (or --force)" in result.stderr
    assert "registry pid" not in result.stderr


def test_a_recent_upload_refuses_with_8_alone(demo):
    before = snapshot(demo.root)
    result = run_cli("repair", str(demo.root), "--yes", "--json")
    assert result.returncode == 8 and "looks live" in result.stderr
    document = orjson.loads(result.stdout)
    assert document["exit_code"] == 8 and document["summary"]["actions"] > 0 and document["outcome"] is None
    assert snapshot(demo.root) == before


@pytest.mark.parametrize(
    ("argv", "environ", "config"),
    [
        (["/usr/bin/docker-registry", "serve", "/etc/docker/registry/config.yml"], {}, "/etc/docker/registry/config.yml"),
        (["registry", "serve", "config.yml"], {"REGISTRY_CONFIGURATION_PATH": "/other.yml"}, "config.yml"),
        (["registry", "serve"], {"REGISTRY_CONFIGURATION_PATH": "/etc/docker/registry/config.yml"},
         "/etc/docker/registry/config.yml"),
        (["registry", "serve"], {}, None),  # the registry exits: configuration path unspecified
        (["docker-registry", "garbage-collect", "/etc/docker/registry/config.yml"], {}, None),
        (["/usr/bin/registry-fsck", "serve", "/etc/docker/registry/config.yml"], {}, None),
    ],
)
def test_which_command_lines_are_a_serving_registry_and_the_config_they_read(argv, environ, config):
    assert guards.registry_config_path(argv, environ) == config
