"""Drive the real registry (Debian `docker-registry` 2.8) and skopeo on loopback.

`Registry` runs `docker-registry serve` on a temp config over a given root
directory; its methods speak the distribution HTTP API with urllib and push or
pull with skopeo. `garbage_collect` and `age_uploads` work on the tree offline.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml

from .images import MANIFEST_TYPES, sha256

REGISTRY_BIN = "docker-registry"
SKOPEO_BIN = "skopeo"
V2 = Path("docker", "registry", "v2")

START_TIMEOUT = 15.0
HTTP_TIMEOUT = 10.0
SKOPEO_TIMEOUT = 120.0
GC_TIMEOUT = 120.0

ACCEPT_MANIFESTS = ", ".join(MANIFEST_TYPES)
RFC3339 = "%Y-%m-%dT%H:%M:%SZ"

# Any registry left running by a crashed test run is stopped when Python exits.
_LIVE: set[subprocess.Popen] = set()


def missing_binaries() -> list[str]:
    return [name for name in (REGISTRY_BIN, SKOPEO_BIN) if shutil.which(name) is None]


class RegistryError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class S3Storage:
    """The registry's `storage.s3` on an S3 endpoint (tests/harness/swift.py); the bucket must exist."""

    endpoint: str
    bucket: str
    accesskey: str
    secretkey: str
    rootdirectory: str = ""
    region: str = "us-east-1"

    def config(self) -> dict:
        config = {
            "accesskey": self.accesskey, "secretkey": self.secretkey, "region": self.region,
            "regionendpoint": self.endpoint, "bucket": self.bucket, "secure": self.endpoint.startswith("https:"),
            "v4auth": True,
        }
        if self.rootdirectory:
            config["rootdirectory"] = self.rootdirectory
        return config


def registry_env() -> dict[str, str]:
    """The environment for the registry's binary: 2.8's s3 driver panics at start when AWS_CA_BUNDLE is set."""
    return {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True, slots=True)
class Manifest:
    """A manifest as the registry serves it.

    For schema1 the registry re-signs the body on every GET, so `body` does not
    hash to `digest`; the digest (from `Docker-Content-Digest`) names the stored,
    unsigned blob.
    """

    digest: str
    media_type: str
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    _LIVE.discard(proc)


@atexit.register
def _stop_leftovers() -> None:
    for proc in list(_LIVE):
        _stop_process(proc)


def registry_config(
    root: Path, port: int, *, schema1: bool = False, log_formatter: str | None = None, access_log: bool = False,
    s3: S3Storage | None = None,
) -> dict:
    """`log_formatter` (text, json, logstash): the request log at info level, one "response completed" line per
    request; `access_log`: the combined-format access log too (the registry writes it to stdout)."""
    config: dict = {
        "version": 0.1,
        "log": {
            "level": "info" if log_formatter else "warn",
            "formatter": log_formatter or "text",
            "accesslog": {"disabled": not access_log},
        },
        "storage": {
            "filesystem": {"rootdirectory": str(root)},
            "delete": {"enabled": True},
            # No purging: a restarted registry must not clean up the stale uploads
            # a test planted. (Enabled, it panics unless all four keys are given.)
            "maintenance": {
                "uploadpurging": {"enabled": False, "age": "168h", "interval": "24h", "dryrun": False}
            },
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": "registry-fsck-test-secret"},
    }
    if schema1:
        config["compatibility"] = {"schema1": {"enabled": True}}
    if s3 is not None:
        del config["storage"]["filesystem"]
        # Blobs through the registry, not a redirect to the store: a HEAD follows a redirect signed for a GET.
        config["storage"] = {"s3": s3.config(), "redirect": {"disable": True}, **config["storage"]}
    return config


def write_config(root: Path, path: Path, *, schema1: bool = False, s3: S3Storage | None = None) -> Path:
    """A registry config over `root` (or the bucket of `s3`) for offline tools (`garbage_collect`); no server
    is started."""
    path.write_text(yaml.safe_dump(registry_config(Path(root), free_port(), schema1=schema1, s3=s3), sort_keys=False))
    return path


class Skopeo:
    """skopeo isolated from the host: own policy, registries.conf, HOME and caches."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.policy = workdir / "policy.json"
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        self.registries_conf = workdir / "registries.conf"
        self.registries_conf.write_text("unqualified-search-registries = []\n")
        self.home = workdir / "home"
        self.tmp = workdir / "tmp"
        for path in (self.home, self.tmp, self.home / "run"):
            path.mkdir(exist_ok=True)

    def _env(self, cache_dir: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env.update(
            HOME=str(self.home),
            TMPDIR=str(self.tmp),
            CONTAINERS_REGISTRIES_CONF=str(self.registries_conf),
            XDG_CONFIG_HOME=str(self.home / "config"),
            XDG_RUNTIME_DIR=str(self.home / "run"),
            XDG_DATA_HOME=str(cache_dir),
            # As root, c/image keeps its blob-info cache in /var/lib/containers
            # whatever HOME says; a non-zero "rootless" uid moves it under
            # XDG_DATA_HOME. A fresh cache per call also stops skopeo from
            # cross-mounting blobs it remembers, which keeps trees reproducible.
            _CONTAINERS_ROOTLESS_UID="1000",
        )
        return env

    def run(self, *args: str, timeout: float = SKOPEO_TIMEOUT) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory(dir=self.tmp, prefix="cache-") as cache:
            return subprocess.run(
                [SKOPEO_BIN, "--policy", str(self.policy), *args],
                env=self._env(Path(cache)),
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )

    def copy(self, src: str, dst: str, *flags: str) -> subprocess.CompletedProcess:
        return self.run("copy", "--quiet", *flags, src, dst)


class Registry:
    """A `docker-registry serve` on 127.0.0.1 over `root`; restartable on the same root."""

    def __init__(
        self, root: Path, *, schema1: bool = False, workdir: Path | None = None, log_formatter: str | None = None,
        access_log: bool = False, s3: S3Storage | None = None,
    ) -> None:
        self.root = Path(root)  # with `s3`, stays empty: the registry stores into the bucket
        self.schema1 = schema1
        self.log_formatter = log_formatter
        self.access_log = access_log
        self.s3 = s3
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="registry-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "config.yml"
        self.log_path = self.workdir / "registry.log"  # stderr: the request log (and stdout, unless access_log)
        self.access_log_path = self.workdir / "access.log"  # stdout, with access_log: the combined-format lines
        self.skopeo = Skopeo(self.workdir / "skopeo")
        self._proc: subprocess.Popen | None = None
        self._port = free_port()
        self._write_config()
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # -- lifecycle ---------------------------------------------------------

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self._port}"

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _write_config(self) -> None:
        config = registry_config(
            self.root, self._port, schema1=self.schema1, log_formatter=self.log_formatter, access_log=self.access_log,
            s3=self.s3,
        )
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def start(self) -> Registry:
        if self.running:
            return self
        self.root.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):
            if self._spawn_and_wait():
                return self
            # Lost the race for the port to another process: take a new one.
            self._port = free_port()
            self._write_config()
        raise RegistryError(f"registry did not start; log:\n{self.log_tail()}")

    def _spawn_and_wait(self) -> bool:
        with open(self.log_path, "ab") as log, open(self.access_log_path if self.access_log else os.devnull, "ab") as out:
            self._proc = subprocess.Popen(
                [REGISTRY_BIN, "serve", str(self.config_path)],
                stdout=out if self.access_log else log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=registry_env(),
            )
        _LIVE.add(self._proc)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                if self.request("GET", "/v2/", timeout=1.0).status == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        if "address already in use" in self.log_tail():
            return False
        raise RegistryError(f"registry did not answer /v2/ within {START_TIMEOUT}s; log:\n{self.log_tail()}")

    def stop(self) -> None:
        if self._proc is not None:
            _stop_process(self._proc)
            self._proc = None

    def close(self) -> None:
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Registry:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def log_text(self) -> str:
        """Everything the registry logged on stderr since it was first started (restarts append)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def access_log_text(self) -> str:
        """The combined-format access log (with access_log)."""
        return self.access_log_path.read_text(errors="replace") if self.access_log_path.exists() else ""

    @property
    def v2(self) -> Path:
        return self.root / V2

    # -- HTTP ----------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = HTTP_TIMEOUT,
    ) -> Response:
        url = path if path.startswith("http") else self.url + path
        if not url.startswith(self.url):
            raise RegistryError(f"refusing a request off the test registry: {url}")
        req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
        try:
            with self._opener.open(req, timeout=timeout) as resp:
                return Response(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
        except urllib.error.HTTPError as err:
            return Response(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())

    def _expect(self, resp: Response, *statuses: int, what: str) -> Response:
        if resp.status not in statuses:
            raise RegistryError(f"{what}: HTTP {resp.status}: {resp.body[:500]!r}")
        return resp

    def get_manifest(self, repo: str, ref: str) -> Manifest:
        resp = self._expect(
            self.request("GET", f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT_MANIFESTS}),
            200,
            what=f"GET manifest {repo}:{ref}",
        )
        return Manifest(resp.header("Docker-Content-Digest") or "", resp.header("Content-Type") or "", resp.body)

    def manifest_digest(self, repo: str, ref: str) -> str:
        resp = self._expect(
            self.request("HEAD", f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT_MANIFESTS}),
            200,
            what=f"HEAD manifest {repo}:{ref}",
        )
        return resp.header("Docker-Content-Digest") or ""

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        resp = self._expect(
            self.request("PUT", f"/v2/{repo}/manifests/{ref}", body, {"Content-Type": media_type}),
            201,
            what=f"PUT manifest {repo}:{ref}",
        )
        digest = resp.header("Docker-Content-Digest") or ""
        if digest != sha256(body):
            raise RegistryError(f"registry stored {repo}:{ref} as {digest}, expected {sha256(body)}")
        return digest

    def delete_manifest(self, repo: str, digest: str) -> None:
        self._expect(self.request("DELETE", f"/v2/{repo}/manifests/{digest}"), 202, what=f"DELETE {repo}@{digest}")

    def start_upload(self, repo: str) -> str:
        """POST a blob upload and never finish it; returns the upload id."""
        resp = self._expect(self.request("POST", f"/v2/{repo}/blobs/uploads/"), 202, what=f"POST upload {repo}")
        return resp.header("Docker-Upload-UUID") or ""

    def upload_blob(self, repo: str, data: bytes) -> str:
        resp = self._expect(self.request("POST", f"/v2/{repo}/blobs/uploads/"), 202, what=f"POST upload {repo}")
        location = resp.header("Location") or ""
        digest = sha256(data)
        sep = "&" if "?" in location else "?"
        put = self.request(
            "PUT",
            f"{location}{sep}digest={urllib.parse.quote(digest)}",
            data,
            {"Content-Type": "application/octet-stream"},
        )
        self._expect(put, 201, what=f"PUT blob {repo}@{digest}")
        return digest

    def catalog(self) -> list[str]:
        repos: list[str] = []
        path: str | None = "/v2/_catalog?n=1000"
        while path:
            resp = self._expect(self.request("GET", path), 200, what="GET catalog")
            repos += json.loads(resp.body).get("repositories") or []
            path = _next_link(resp.header("Link"))
        return repos

    def tags(self, repo: str) -> list[str]:
        resp = self._expect(self.request("GET", f"/v2/{repo}/tags/list"), 200, what=f"GET tags {repo}")
        # 2.8 answers `"tags": null` for a repository whose tags were all deleted.
        return json.loads(resp.body).get("tags") or []

    def tags_list(self, repo: str) -> list[str] | None:
        """`/v2/<name>/tags/list`'s tags; None where 2.8 answers 404 NAME_UNKNOWN (a repository without
        `_manifests/tags/`, such as one whose manifests were all pushed by digest)."""
        resp = self._expect(self.request("GET", f"/v2/{repo}/tags/list"), 200, 404, what=f"GET tags {repo}")
        if resp.status == 404:
            codes = [e.get("code") for e in json.loads(resp.body).get("errors") or []]
            if codes != ["NAME_UNKNOWN"]:
                raise RegistryError(f"GET tags {repo}: HTTP 404: {resp.body[:500]!r}")
            return None
        return json.loads(resp.body).get("tags") or []

    # -- skopeo --------------------------------------------------------------

    def image_ref(self, repo: str, ref: str) -> str:
        sep = "@" if ref.startswith("sha256:") else ":"
        return f"docker://{self.addr}/{repo}{sep}{ref}"

    def push(
        self,
        layout_dir: Path,
        layout_tag: str,
        repo: str,
        tag: str,
        fmt: str | None = None,
        all: bool = False,
    ) -> None:
        flags = ["--dest-tls-verify=false"]
        if fmt:
            flags.append(f"--format={fmt}")
        if all:
            flags.append("--all")
        result = self.skopeo.copy(f"oci:{layout_dir}:{layout_tag}", self.image_ref(repo, tag), *flags)
        if result.returncode != 0:
            raise RegistryError(f"skopeo push to {repo}:{tag} failed:\n{result.stderr}")

    def pull(self, repo: str, ref: str, all: bool = True) -> subprocess.CompletedProcess:
        """skopeo copy into a throwaway OCI layout; skopeo verifies every blob on the way."""
        with tempfile.TemporaryDirectory(dir=self.skopeo.tmp, prefix="pull-") as dest:
            flags = ["--src-tls-verify=false", *(["--all"] if all else [])]
            return self.skopeo.copy(self.image_ref(repo, ref), f"oci:{dest}:pulled", *flags)

    def pull_ok(self, repo: str, ref: str, all: bool = True) -> bool:
        return self.pull(repo, ref, all).returncode == 0


def _next_link(link: str | None) -> str | None:
    match = re.search(r"<([^>]+)>", link or "")
    return match.group(1) if match else None


# -- offline tools ------------------------------------------------------------


def garbage_collect(
    config_path: Path, dry_run: bool = True, delete_untagged: bool = False, timeout: float = GC_TIMEOUT
) -> subprocess.CompletedProcess:
    args = [REGISTRY_BIN, "garbage-collect"]
    if dry_run:
        args.append("--dry-run")
    if delete_untagged:
        args.append("--delete-untagged")
    return subprocess.run(
        [*args, str(config_path)], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        env=registry_env(),
    )


@dataclass(frozen=True, slots=True)
class GcReport:
    """What `garbage-collect` printed (2.8 format, all on stdout)."""

    marked_manifests: Mapping[str, frozenset[str]]  # repo -> manifests marked
    marked_blobs: Mapping[str, frozenset[str]]  # repo -> blobs marked through its manifests
    eligible_manifests: Mapping[str, frozenset[str]]  # repo -> manifests --delete-untagged removes
    eligible_blobs: frozenset[str]
    summary: tuple[int, int, int] | None  # blobs marked, blobs eligible, manifests eligible


_GC_SUMMARY = re.compile(r"^(\d+) blobs marked, (\d+) blobs and (\d+) manifests eligible for deletion$")
_GC_MARK = re.compile(r"^(.+): marking (manifest|blob) (\S+)\s*$")


def parse_gc_output(stdout: str) -> GcReport:
    marked: dict[str, dict[str, set[str]]] = {"manifest": {}, "blob": {}}
    eligible_manifests: dict[str, set[str]] = {}
    eligible_blobs: set[str] = set()
    summary = None
    repo = ""
    for line in stdout.splitlines():
        if match := _GC_MARK.match(line):
            name, kind, digest = match.groups()
            marked[kind].setdefault(name, set()).add(digest)
        elif line.startswith("manifest eligible for deletion: "):
            # No repository on this line: it belongs to the last bare `<repo>` line.
            eligible_manifests.setdefault(repo, set()).add(line.split(": ", 1)[1].strip())
        elif line.startswith("blob eligible for deletion: "):
            eligible_blobs.add(line.split(": ", 1)[1].strip())
        elif match := _GC_SUMMARY.match(line):
            summary = tuple(map(int, match.groups()))
        elif line.strip() and " " not in line.strip():
            repo = line.strip()

    def freeze(d: dict[str, set[str]]) -> dict[str, frozenset[str]]:
        return {k: frozenset(v) for k, v in d.items()}

    return GcReport(
        freeze(marked["manifest"]), freeze(marked["blob"]), freeze(eligible_manifests), frozenset(eligible_blobs), summary
    )


def upload_dirs(root: Path) -> list[Path]:
    """Every `_uploads/<id>` directory under the tree, sorted."""
    return sorted(p for p in (Path(root) / V2 / "repositories").rglob("_uploads/*") if p.is_dir())


def age_uploads(
    root: Path, older_by: timedelta = timedelta(days=30), only: Iterable[str] | None = None
) -> list[Path]:
    """Move `startedat` of uploads back by `older_by` (only those whose id is in `only`, if given).

    Returns the `startedat` files rewritten.
    """
    wanted = set(only) if only is not None else None
    rewritten = []
    for upload in upload_dirs(root):
        started = upload / "startedat"
        if (wanted is not None and upload.name not in wanted) or not started.is_file():
            continue
        try:
            when = datetime.fromisoformat(started.read_text().strip())
        except ValueError:
            when = datetime.now(timezone.utc)
        started.write_text((when - older_by).astimezone(timezone.utc).strftime(RFC3339))
        rewritten.append(started)
    return rewritten


def read_startedat(upload_dir: Path) -> datetime:
    return datetime.fromisoformat((Path(upload_dir) / "startedat").read_text())
