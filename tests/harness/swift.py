"""A real object store on loopback: OpenStack Swift (Debian's packages) with its `s3api` middleware.

One node, one replica: a proxy, an account, a container and an object server, and the memcached
tempauth needs, each on a free port of 127.0.0.1, all state under one directory. The rings are
built from Python (`swift.common.ring.RingBuilder`, under a second; the `swift-ring-builder` CLI
takes about ten) by the interpreter the Swift packages run on, which is not necessarily the
one running the tests. `EVENTLET_NO_GREENDNS=yes` spares each server a second of importing
dnspython. See ../shared/OBJECT-STORAGE.md for what made it run here.

S3 credentials come from tempauth: access key `test:tester`, secret `testing`.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import textwrap
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .registry import _LIVE, _stop_process, free_port

SERVERS = ("swift-proxy-server", "swift-account-server", "swift-container-server", "swift-object-server")
MEMCACHED = "memcached"
PACKAGES = "swift swift-proxy swift-account swift-container swift-object memcached"
START_TIMEOUT = 30.0

ACCESS_KEY = "test:tester"
SECRET_KEY = "testing"
REGION = "us-east-1"

_RINGS = textwrap.dedent(
    """
    import sys
    from swift.common.ring import RingBuilder
    swift_dir = sys.argv[1]
    for name, port in zip(("account", "container", "object"), sys.argv[2:5]):
        builder = RingBuilder(6, 1, 1)
        builder.add_dev({"id": 0, "region": 1, "zone": 1, "ip": "127.0.0.1", "port": int(port),
                         "device": "d1", "weight": 1.0, "meta": ""})
        builder.rebalance()
        builder.get_ring().save(f"{swift_dir}/{name}.ring.gz")
    """
)

_CLIENTS = threading.Lock()

def missing_binaries() -> list[str]:
    return [name for name in (*SERVERS, MEMCACHED) if shutil.which(name) is None]


class SwiftError(RuntimeError):
    pass


def _interpreter() -> str:
    """The Python the Swift servers run on (their #! line): the one that can import swift."""
    with open(shutil.which(SERVERS[0]) or SERVERS[0], "rb") as script:
        first = script.readline().decode().strip()
    return first[2:].strip().split()[0] if first.startswith("#!") else "python3"


def _backend_conf(kind: str, port: int, devices: Path, swift_dir: Path, user: str) -> str:
    return textwrap.dedent(
        f"""\
        [DEFAULT]
        bind_ip = 127.0.0.1
        bind_port = {port}
        devices = {devices}
        mount_check = false
        user = {user}
        workers = 0
        swift_dir = {swift_dir}
        log_level = WARNING

        [pipeline:main]
        pipeline = healthcheck {kind}-server

        [app:{kind}-server]
        use = egg:swift#{kind}

        [filter:healthcheck]
        use = egg:swift#healthcheck
        """
    )


def _proxy_conf(port: int, memcached: int, swift_dir: Path, user: str) -> str:
    # s3api before tempauth (it turns S3 signatures into tempauth's identity); slo after s3api
    # (the registry uploads with S3 multipart, which Swift stores as a static large object).
    return textwrap.dedent(
        f"""\
        [DEFAULT]
        bind_ip = 127.0.0.1
        bind_port = {port}
        user = {user}
        workers = 0
        swift_dir = {swift_dir}
        log_level = INFO

        [pipeline:main]
        pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo proxy-logging proxy-server

        [app:proxy-server]
        use = egg:swift#proxy
        account_autocreate = true

        [filter:s3api]
        use = egg:swift#s3api
        location = {REGION}

        [filter:tempauth]
        use = egg:swift#tempauth
        user_test_tester = testing .admin

        [filter:cache]
        use = egg:swift#memcache
        memcache_servers = 127.0.0.1:{memcached}

        [filter:catch_errors]
        use = egg:swift#catch_errors

        [filter:gatekeeper]
        use = egg:swift#gatekeeper

        [filter:healthcheck]
        use = egg:swift#healthcheck

        [filter:proxy-logging]
        use = egg:swift#proxy_logging

        [filter:listing_formats]
        use = egg:swift#listing_formats

        [filter:copy]
        use = egg:swift#copy

        [filter:slo]
        use = egg:swift#slo

        [filter:dlo]
        use = egg:swift#dlo
        """
    )


@dataclass(frozen=True, slots=True)
class Ports:
    proxy: int
    account: int
    container: int
    object: int
    memcached: int


class Swift:
    """Swift with s3api over `workdir`; `endpoint` is the S3 endpoint once started."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.etc = self.workdir / "etc"
        self.devices = self.workdir / "srv"
        self.logs = self.workdir / "logs"
        self._procs: list[subprocess.Popen] = []
        self.ports: Ports | None = None

    @property
    def endpoint(self) -> str:
        if self.ports is None:
            raise SwiftError("swift is not started")
        return f"http://127.0.0.1:{self.ports.proxy}"

    @property
    def proxy_log(self) -> Path:
        return self.logs / "swift-proxy-server.log"

    def start(self) -> Swift:
        for directory in (self.etc, self.devices / "d1", self.logs):
            directory.mkdir(parents=True, exist_ok=True)
        self.ports = ports = Ports(*(free_port() for _ in range(5)))
        user = getpass.getuser()
        confs = {
            "swift-proxy-server": _proxy_conf(ports.proxy, ports.memcached, self.etc, user),
            "swift-account-server": _backend_conf("account", ports.account, self.devices, self.etc, user),
            "swift-container-server": _backend_conf("container", ports.container, self.devices, self.etc, user),
            "swift-object-server": _backend_conf("object", ports.object, self.devices, self.etc, user),
        }
        rings = subprocess.run(
            [_interpreter(), "-c", _RINGS, str(self.etc), str(ports.account), str(ports.container), str(ports.object)],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )
        if rings.returncode != 0:
            raise SwiftError(f"building the rings failed:\n{rings.stderr}")
        env = {**os.environ, "EVENTLET_NO_GREENDNS": "yes"}
        try:
            self._spawn([MEMCACHED, "-l", "127.0.0.1", "-p", str(ports.memcached), "-U", "0", "-u", user], "memcached", env)
            for server, text in confs.items():
                conf = self.etc / f"{server}.conf"
                conf.write_text(text)
                self._spawn([server, str(conf), "-v"], server, env)
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, argv: list[str], name: str, env: dict[str, str]) -> None:
        with open(self.logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        self._procs.append(proc)
        _LIVE.add(proc)

    def _wait_healthy(self) -> None:
        assert self.ports is not None
        waiting = {
            "swift-account-server": self.ports.account, "swift-container-server": self.ports.container,
            "swift-object-server": self.ports.object, "swift-proxy-server": self.ports.proxy,
        }
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + START_TIMEOUT
        while waiting and time.monotonic() < deadline:
            for proc in self._procs:
                if proc.poll() is not None:
                    raise SwiftError(f"{proc.args[0]} exited with {proc.returncode}:\n{self.log_tail(proc.args[0])}")
            for name, port in list(waiting.items()):
                try:
                    with opener.open(f"http://127.0.0.1:{port}/healthcheck", timeout=1.0) as answer:
                        if answer.status == 200:
                            del waiting[name]
                except OSError:
                    pass
            time.sleep(0.1)
        if waiting:
            names = ", ".join(waiting)
            raise SwiftError(f"{names} did not answer /healthcheck within {START_TIMEOUT}s:\n"
                             + "\n".join(self.log_tail(n) for n in waiting))

    def log_tail(self, name: str, lines: int = 30) -> str:
        try:
            return "\n".join((self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        for proc in reversed(self._procs):
            _stop_process(proc)
        self._procs = []

    def __enter__(self) -> Swift:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- S3 ------------------------------------------------------------------

    def client(self, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY):
        """A boto3 S3 client on this store."""
        import boto3
        from botocore.config import Config

        with _CLIENTS:  # boto3's default session is not safe to make clients from in several threads at once
            return boto3.client(
                "s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                config=Config(
                    signature_version="s3v4", s3={"addressing_style": "path"},
                    request_checksum_calculation="when_required", response_checksum_validation="when_required",
                    retries={"max_attempts": 2},
                ),
            )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> dict[str, tuple[int, str]]:
        """Every key under `prefix` with its size and ETag (quotes stripped)."""
        found = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", ()):
                found[item["Key"]] = (item["Size"], item["ETag"].strip('"'))
        return found

