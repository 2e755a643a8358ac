"""The audit on S3 against the registry's own garbage collector, on a bucket of ~42k objects, through a counting proxy.

    python benchmarks/s3bench.py                           # the fixed shape, latencies 0 and 5 ms, in a temp dir
    python benchmarks/s3bench.py --dir /var/tmp/bench/s3   # keeps the store and tree there; the next run reuses them
    python benchmarks/s3bench.py --dir /var/tmp/bench/s3 --latency-ms 0,2,5 --rounds 2 --json /tmp/s3bench.json
    python benchmarks/s3bench.py --smoke                   # 200 objects, latency 0: under a minute (tests/test_s3bench.py)

The store is OpenStack Swift with its s3api middleware on 127.0.0.1 (tests/harness/swift.py). The bucket
is written straight into it, as `synth.py` writes a tree on disk: the tree is generated into a directory,
then every file is uploaded with boto3 on a thread pool as the key `<rootdirectory>/docker/registry/v2/...`
(single-part PUTs, so every ETag is the MD5 of the content, as the registry's own uploads leave it on
Swift). Keys the listing does not show afterwards are uploaded again (Swift updates its container
listing after the object; an update that times out would wait for an updater this store does not run).

Shape, fixed (the GC's request count grows with the tags per repository times the manifests): synth.py
`--repos 250 --tags 10 --seed 1`, its other parameters at their defaults: 251 repositories (250 and
one namespace that is a repository too), 2,510 tags, 4,477 manifest revisions, 16,945 blobs
(22.8 MiB), 109 orphan blobs: 42,539 objects. `--shape five-tags`, the first runs' shape: `--repos 500
--tags 5 --seed 1` (502 repositories, 2,510 tags, 4,342 revisions, 16,396 blobs, 41,887 objects). `--smoke`: synth.py's smoke preset with `--repos 3 --tags 3
--seed 4` (4 repositories, 12 tags, 21 revisions, 86 blobs, 200 objects; chosen to hold image indexes,
untagged manifests and orphans).

Between both clients and Swift sits a counting proxy (plain Python, a thread per connection, one
kept-alive connection to Swift each) that names every request as the S3 operation it is (method and
ListObjectsV2, GetObject, HeadObject, ...), counts them, and sleeps `--latency-ms` before forwarding
each one (the sleep releases the GIL: requests in flight overlap, the delay is per request, not a
queue). Per latency, in this order (best of `--rounds`, default 1, no warm-up):

    gc      `docker-registry garbage-collect --dry-run --delete-untagged CONFIG`, CONFIG's storage.s3 on the proxy
    audit   `registry-fsck audit s3://BUCKET/ROOT --endpoint-url PROXY --json --quiet -o FILE`
            (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; this checkout's package)

It prints wall seconds and requests by kind of each (and by the part of the layout each request named:
`GetObject: tag current link`, `ListObjectsV2: blobs/ prefix, one directory`, ...), the store's ceiling
(small GETs per second straight to Swift on 1 and 32 threads; `--no-ceiling` skips it), the ratios
audit/gc of requests (target <= 0.05) and of wall time (target <= 0.2) with PASS or FAIL (a FAIL is a
result: the exit code speaks only of correctness), and the checks, MATCH or MISMATCH (exit 1 on any MISMATCH):

- the GC's `blob eligible for deletion:` digests = 2.8's --delete-untagged rules applied to the tree
  on disk (a revision is kept only when a tag's `current` names it; a kept manifest marks its
  references, an index its children's manifests but not their blobs);
- the audit's blob-orphan + blob-unreachable = the GC's eligible blobs less those only image-index
  children reference (2.8's --delete-untagged counts a multi-arch image's children as untagged; the
  audit follows them from their tagged index);
- the audit's blob-orphan = the generator's orphans (synth.json) = the blobs no revision references;
- the audit on the bucket = the audit of the same tree on disk, finding by finding (but for the ids a
  bucket cannot hold: empty directories);
- the requests the audit's JSON report counts (`store.requests`: list pages, GETs, ...), plus the one
  page of one key that checks the target before the audit begins, = the proxy's count of the audit's.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(1, REPO)

import run  # noqa: E402
import synth  # noqa: E402

from fsck.catalogue import NOT_ON_BUCKETS  # noqa: E402
from tests.harness.registry import S3Storage  # noqa: E402
from tests.harness.registry import missing_binaries as missing_registry  # noqa: E402
from tests.harness.swift import ACCESS_KEY, PACKAGES, REGION, SECRET_KEY, Swift  # noqa: E402
from tests.harness.swift import missing_binaries as missing_swift  # noqa: E402

SHAPES = {
    "default": synth.params_from("default", repos=250, tags=10, seed=1),
    "five-tags": synth.params_from("default", repos=500, tags=5, seed=1),  # the first runs' shape
    "smoke": synth.params_from("smoke", repos=3, tags=3, seed=4),
}
BUCKET = "registry"
ROOTDIRECTORY = "bench"  # keys: bench/docker/registry/v2/...
UPLOAD_WORKERS = 16
UPLOAD_ATTEMPTS = 4
NOT_ON_S3 = frozenset(finding_id.value for finding_id in NOT_ON_BUCKETS)  # as the catalogue says
MARKER = "uploaded.json"


# ---------------------------------------------------------------------------------------- the counting proxy


def s3_operation(method: str, target: str, headers) -> str:
    """The S3 operation a path-style request is, as `METHOD Operation` (`GET ListObjectsV2`, `HEAD HeadObject`)."""
    path, _, query = target.partition("?")
    params = urllib.parse.parse_qs(query, keep_blank_values=True)
    bucket, _, key = urllib.parse.unquote(path).lstrip("/").partition("/")
    copy = "x-amz-copy-source" in {name.lower() for name in headers.keys()}
    if not bucket:
        name = "ListBuckets" if method == "GET" else "Service"
    elif not key:
        subresources = ("location", "versioning", "uploads", "acl", "policy", "lifecycle")
        sub = next((s for s in subresources if s in params), None)
        name = {
            "GET": "ListObjectsV2" if params.get("list-type") == ["2"] else
                   f"GetBucket{sub.capitalize()}" if sub and sub != "uploads" else
                   "ListMultipartUploads" if sub == "uploads" else "ListObjects",
            "HEAD": "HeadBucket", "PUT": "CreateBucket", "DELETE": "DeleteBucket",
            "POST": "DeleteObjects" if "delete" in params else "PostBucket",
        }.get(method, "Bucket")
    else:
        multipart = "uploadId" in params
        name = {
            "GET": "ListParts" if multipart else "GetObject",
            "HEAD": "HeadObject",
            "PUT": ("UploadPartCopy" if copy else "UploadPart") if "partNumber" in params
                   else "CopyObject" if copy else "PutObject",
            "POST": "CreateMultipartUpload" if "uploads" in params else
                    "CompleteMultipartUpload" if multipart else "PostObject",
            "DELETE": "AbortMultipartUpload" if multipart else "DeleteObject",
        }.get(method, "Object")
    return f"{method} {name}"


def layout_part(relative: str) -> str:
    """What a key or prefix below docker/registry/v2/ is in the registry's layout."""
    if relative.startswith("blobs/"):
        return "blob data" if relative.endswith("/data") else "blobs/ prefix"
    if "/_manifests/tags/" in relative or relative.endswith("/_manifests/tags"):
        if relative.endswith("/current/link"):
            return "tag current link"
        return "tag index link" if relative.endswith("/link") else "tags/ prefix"
    for marker, name in (("/_manifests/revisions/", "revision"), ("/_layers/", "layer"), ("/_uploads/", "upload")):
        if marker in relative:
            return f"{name} link" if relative.endswith("/link") else f"{name}s/ prefix"
    if relative.startswith("repositories"):
        return "repositories/ prefix"
    return "v2/ prefix" if not relative else "other"


def s3_target_part(target: str) -> str:
    """The layout part a request's key (or listing's prefix) names; listings say whether they are one directory
    (delimiter `/`) or a Stat (max-keys 1), as the registry's driver asks."""
    path, _, query = target.partition("?")
    params = urllib.parse.parse_qs(query, keep_blank_values=True)
    _, _, key = urllib.parse.unquote(path).lstrip("/").partition("/")
    listing = not key
    name = (params.get("prefix") or [""])[0] if listing else key
    _, found, relative = name.partition("docker/registry/v2/")
    part = layout_part(relative) if found else ("root" if not name else "other")
    if listing:
        if params.get("delimiter"):
            part += ", one directory"
        elif params.get("max-keys") == ["1"]:
            part += ", max-keys 1"
    return part


_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "expect",
    "content-length",
})


@dataclass(frozen=True, slots=True)
class Taken:
    requests: Counter[str]  # by operation
    errors: Counter[str]  # error answers, by operation and status
    parts: Counter[str]  # by operation and the layout part it named


class _Counts:
    """Requests by operation, and those answered with an error status, since the last `take`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._parts: Counter[str] = Counter()

    def add(self, operation: str, part: str, status: int | None) -> None:
        with self._lock:
            self._requests[operation] += 1
            self._parts[f"{operation.split()[1]}: {part}"] += 1
            if status is None or status >= 400:
                self._errors[f"{operation} {status or 'no answer'}"] += 1

    def take(self) -> Taken:
        with self._lock:
            taken = Taken(self._requests, self._errors, self._parts)
            self._requests, self._errors, self._parts = Counter(), Counter(), Counter()
            return taken


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as both clients expect
    # Headers and body go out in two writes: with Nagle's algorithm the second waits for the client's
    # delayed ACK (40 ms a request).
    disable_nagle_algorithm = True
    server: _Server
    _upstream: http.client.HTTPConnection | None = None

    def log_message(self, format: str, *args) -> None:
        pass

    def _connection(self, fresh: bool = False) -> http.client.HTTPConnection:
        if fresh or self._upstream is None:
            if self._upstream is not None:
                self._upstream.close()
            self._upstream = http.client.HTTPConnection(*self.server.upstream, timeout=300)
            self._upstream.connect()
            self._upstream.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self._upstream

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        operation = s3_operation(self.command, self.path, self.headers)
        if self.server.latency:
            time.sleep(self.server.latency)
        # Host is passed on unchanged: the clients signed it (SigV4), and s3api checks the signature with it.
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        if body is not None:
            headers["Content-Length"] = str(len(body))
        answer = data = None
        for attempt in range(2):  # a kept-alive connection Swift closed meanwhile: once more on a new one
            try:
                connection = self._connection(fresh=attempt > 0)
                connection.request(self.command, self.path, body=body, headers=headers)
                answer = connection.getresponse()
                data = answer.read()
                break
            except (OSError, http.client.HTTPException):
                answer = None
        self.server.counts.add(operation, s3_target_part(self.path), answer.status if answer is not None else None)
        if answer is None:
            self.send_response_only(502)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response_only(answer.status, answer.reason)
        for name, value in answer.getheaders():
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        if self.command == "HEAD":
            if answer.getheader("Content-Length") is not None:
                self.send_header("Content-Length", answer.getheader("Content-Length"))
        elif answer.status not in (204, 304):
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, upstream: tuple[str, int], latency: float) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream
        self.latency = latency
        self.counts = _Counts()


class CountingProxy:
    """An HTTP proxy on 127.0.0.1 in front of `upstream` (http://host:port) that counts S3 operations and
    delays each request by `latency` seconds (settable between runs)."""

    def __init__(self, upstream: str) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self._server = _Server((parsed.hostname or "127.0.0.1", parsed.port or 80), 0.0)
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3bench-proxy", daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def set_latency(self, seconds: float) -> None:
        self._server.latency = seconds

    def take(self) -> Taken:
        """Requests by operation, error answers, and requests by layout part, since the last take."""
        return self._server.counts.take()

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


# ---------------------------------------------------------------------------------------------- the bucket


def s3_client(endpoint: str, connections: int):
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        config=Config(
            signature_version="s3v4", s3={"addressing_style": "path"}, max_pool_connections=connections,
            request_checksum_calculation="when_required", response_checksum_validation="when_required",
            retries={"max_attempts": 5, "mode": "standard"},
        ),
    )


def tree_keys(root: str, rootdirectory: str) -> dict[str, str]:
    """Every file of the tree as {key: path}: the key is its path below `root`, under `rootdirectory`."""
    keys = {}
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            keys[f"{rootdirectory}/{os.path.relpath(path, root)}"] = path
    return keys


def listed_keys(client, bucket: str, prefix: str) -> dict[str, tuple[int, str]]:
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", ()):
            found[item["Key"]] = (item["Size"], item["ETag"].strip('"'))
    return found


@dataclass(frozen=True, slots=True)
class Upload:
    objects: int
    puts: int  # with the keys uploaded again
    seconds: float
    rounds: int


def upload(client, bucket: str, keys: dict[str, str], workers: int, say) -> Upload:
    """PUT every key, then again those the listing does not show, until it shows them all."""

    def put(key: str) -> None:
        with open(keys[key], "rb") as handle:
            client.put_object(Bucket=bucket, Key=key, Body=handle.read())

    started = time.perf_counter()
    pending, puts = sorted(keys), 0
    for attempt in range(1, UPLOAD_ATTEMPTS + 1):
        with ThreadPoolExecutor(workers, thread_name_prefix="upload") as pool:
            for done, _ in enumerate(pool.map(put, pending), 1):
                if done % 5000 == 0:
                    say(f"  uploaded {done}/{len(pending)} ({done / (time.perf_counter() - started):.0f}/s)")
        puts += len(pending)
        prefix = os.path.commonprefix(list(keys)).rpartition("/")[0] + "/"
        listed = listed_keys(client, bucket, prefix)
        pending = sorted(k for k in keys if k not in listed)
        if not pending:
            return Upload(len(keys), puts, time.perf_counter() - started, attempt)
        say(f"  {len(pending)} keys not listed yet: uploading them again")
    raise SystemExit(f"{len(pending)} keys still not listed after {UPLOAD_ATTEMPTS} uploads (e.g. {pending[0]})")


def etags_are_md5(client, bucket: str, keys: dict[str, str]) -> str:
    """MATCH when every listed key has the size and, as ETag, the MD5 of its file (what vouches for a link)."""
    prefix = os.path.commonprefix(list(keys)).rpartition("/")[0] + "/"
    listed = listed_keys(client, bucket, prefix)
    wrong = []
    for key, path in keys.items():
        with open(path, "rb") as handle:
            data = handle.read()
        if listed.get(key) != (len(data), hashlib.md5(data, usedforsecurity=False).hexdigest()):
            wrong.append(key)
    extra = set(listed) - set(keys)
    if not wrong and not extra:
        return "MATCH"
    return f"MISMATCH ({len(wrong)} keys differ or are missing, {len(extra)} unexpected; e.g. {(wrong or sorted(extra))[0]})"


def get_rate(endpoint: str, bucket: str, keys: list[str], threads: int) -> float:
    """GetObject requests per second with `threads` clients at once, straight to the store."""
    client = s3_client(endpoint, threads)

    def get(key: str) -> None:
        client.get_object(Bucket=bucket, Key=key)["Body"].read()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(get, keys[: threads * 2]))  # connections opened, not timed
        started = time.perf_counter()
        list(pool.map(get, keys))
    return len(keys) / (time.perf_counter() - started)


def ceiling_line(endpoint: str, bucket: str, keys: dict[str, str], sample: int = 1000) -> str:
    """How many small GETs a second the store answers, one at a time and 32 at once: the audit's wall time
    on this store is its GETs over the second rate."""
    links = sorted(k for k in keys if k.endswith("/current/link"))[:sample]
    one, many = get_rate(endpoint, bucket, links, 1), get_rate(endpoint, bucket, links, 32)
    return f"{one:.0f}/s on 1 thread, {many:.0f}/s on 32 ({len(links)} tag current links each, no proxy)"


# ------------------------------------------------------------------------- what each tool should find, from disk


@dataclass(frozen=True, slots=True)
class Expected:
    """Computed from the tree on disk, independently of both tools."""

    blobs: frozenset[str]
    unreferenced: frozenset[str]  # no revision of any repository references them (blob-orphan)
    gc_untagged: frozenset[str]  # what 2.8's garbage-collect --delete-untagged deletes
    children_only: frozenset[str]  # of those, the blobs only image-index children reference (the audit keeps them)
    gc_untagged_manifests: frozenset[str]


def _read_link(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def _repositories(v2: str) -> Iterator[str]:
    """Directories holding a repository (a `_manifests`), below v2/repositories."""
    pending = [os.path.join(v2, "repositories")]
    while pending:
        directory = pending.pop()
        with os.scandir(directory) as entries:
            names = {e.name: e for e in entries}
        if "_manifests" in names:
            yield directory
        pending.extend(e.path for name, e in names.items() if not name.startswith("_") and e.is_dir())


def expected_from_tree(v2: str) -> Expected:
    blobs_dir = os.path.join(v2, "blobs", "sha256")
    blobs = {f"sha256:{h}" for fan in os.listdir(blobs_dir) for h in os.listdir(os.path.join(blobs_dir, fan))}
    documents: dict[str, dict] = {}

    def document(digest: str) -> dict:
        if digest not in documents:
            hex_digest = digest.split(":", 1)[1]
            with open(os.path.join(blobs_dir, hex_digest[:2], hex_digest, "data"), "rb") as handle:
                documents[digest] = json.loads(handle.read())
        return documents[digest]

    def references(digest: str) -> list[str]:
        doc = document(digest)
        if isinstance(doc.get("manifests"), list):
            return [m["digest"] for m in doc["manifests"]]
        return [doc["config"]["digest"], *(layer["digest"] for layer in doc.get("layers", ()))]

    referenced: set[str] = set()  # by any revision (the revision's blob and what it references)
    gc_marked: set[str] = set()
    reachable: set[str] = set()  # from a tag's current, through index children
    untagged_manifests: set[str] = set()
    for repository in _repositories(v2):
        revisions_dir = os.path.join(repository, "_manifests", "revisions", "sha256")
        revisions = [f"sha256:{h}" for h in os.listdir(revisions_dir)] if os.path.isdir(revisions_dir) else []
        tags_dir = os.path.join(repository, "_manifests", "tags")
        tags = os.listdir(tags_dir) if os.path.isdir(tags_dir) else []
        tagged = {_read_link(os.path.join(tags_dir, t, "current", "link")) for t in tags}
        for revision in revisions:
            referenced.add(revision)
            referenced.update(references(revision))
            if revision not in tagged:
                untagged_manifests.add(revision)
                continue
            gc_marked.add(revision)
            gc_marked.update(references(revision))  # an index: its children's manifests, not their blobs
        pending = [d for d in tagged if d in revisions]
        while pending:
            digest = pending.pop()
            if digest in reachable:
                continue
            reachable.add(digest)
            if isinstance(document(digest).get("manifests"), list):
                pending.extend(references(digest))  # an index: follow its children
            else:
                reachable.update(references(digest))
    gc_untagged = blobs - gc_marked
    return Expected(
        frozenset(blobs), frozenset(blobs - referenced), frozenset(gc_untagged),
        frozenset(gc_untagged & reachable), frozenset(untagged_manifests),
    )


# ---------------------------------------------------------------------------------------------- the runs


@dataclass
class Timed:
    name: str
    command: list[str]
    runs: list[float] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)  # of the best run
    errors: dict[str, int] = field(default_factory=dict)
    parts: dict[str, int] = field(default_factory=dict)  # by operation and layout part
    peak_rss_kib: int = 0
    exit_code: int | None = None

    @property
    def best(self) -> float | None:
        return min(self.runs) if self.runs else None

    @property
    def total(self) -> int:
        return sum(self.requests.values())


def measure(timed: Timed, proxy: CountingProxy, env: dict[str, str], stdout_path: str | None = None) -> int:
    """One timed run; the requests it made."""
    proxy.take()
    # `env` runs the command with exactly these variables; GNU time (run.run_child) then measures the command.
    argv = ["env", "-i", *(f"{k}={v}" for k, v in env.items()), *timed.command]
    wall, rss, _, _, code = run.run_child(argv, stdout_path)
    taken = proxy.take()
    timed.exit_code = code
    timed.peak_rss_kib = max(timed.peak_rss_kib, rss)
    if timed.best is None or wall < timed.best:
        timed.requests, timed.errors, timed.parts = dict(taken.requests), dict(taken.errors), dict(taken.parts)
    timed.runs.append(wall)
    return sum(taken.requests.values())


def child_env(**extra: str) -> dict[str, str]:
    """A clean environment: PATH, HOME, locale; no proxies, no AWS_CA_BUNDLE (2.8's s3 driver panics on it)."""
    keep = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR") if k in os.environ}
    return {**keep, **extra}


def fsck_argv() -> list[str]:
    """This checkout's package, whatever is installed."""
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {REPO!r}); from fsck.entry import main; main()"]


def findings(path: str) -> list[dict] | None:
    try:
        return run.load_json(path)["findings"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def digests_of(records: list[dict], *ids: str) -> set[str]:
    return {r["digest"] for r in records if r.get("id") in ids}


def same(name_a: str, a: set[str], name_b: str, b: set[str]) -> str:
    if a == b:
        return f"MATCH ({len(a)})"
    return f"MISMATCH ({name_a} only: {len(a - b)}, {name_b} only: {len(b - a)}; {len(a)} vs {len(b)})"


def comparable(records: list[dict]) -> Counter[str]:
    return Counter(json.dumps(r, sort_keys=True) for r in records if r.get("id") not in NOT_ON_S3)


# ---------------------------------------------------------------------------------------------- the report


@dataclass(frozen=True, slots=True)
class Goal:
    ratio: str
    limit: float
    what: str

    def verdict(self, value: float | None) -> str:
        return "-" if value is None else "PASS" if value <= self.limit else "FAIL"


GOALS = (
    Goal("audit/gc requests", 0.05, "requests of the audit per the GC's (--delete-untagged, dry run)"),
    Goal("audit/gc wall", 0.2, "wall time of the audit per the GC's"),
)


def kinds_table(runs: dict[float, dict[str, Timed]]) -> list[str]:
    """Requests by kind, a column per command and latency."""
    columns = [timed for by_name in runs.values() for timed in by_name.values()]
    labels = [f"{name} @{latency:g}ms" for latency, by_name in runs.items() for name in by_name]
    kinds = sorted({kind for timed in columns for kind in timed.requests}, key=lambda k: (k.split()[1], k))

    def row(label: str, cells: list[str]) -> str:
        return f"{label:<28}" + "".join(f"{cell:>16}" for cell in cells)

    return [
        row("requests", labels),
        *(row(kind, [f"{t.requests.get(kind, 0):,}" for t in columns]) for kind in kinds),
        row("total", [f"{t.total:,}" for t in columns]),
        row("wall s (best)", [run.fmt(t.best) for t in columns]),
        row("runs s", [" ".join(f"{r:.1f}" for r in t.runs) for t in columns]),
        row("peak MiB", [f"{t.peak_rss_kib / 1024:.1f}" for t in columns]),
        row("exit code", [str(t.exit_code) for t in columns]),
    ]


def parts_table(runs: dict[float, dict[str, Timed]]) -> list[str]:
    """Requests by operation and the part of the layout they named: where each tool's requests go."""
    columns = [timed for by_name in runs.values() for timed in by_name.values()]
    labels = [f"{name} @{latency:g}ms" for latency, by_name in runs.items() for name in by_name]
    parts = sorted({part for timed in columns for part in timed.parts},
                   key=lambda p: -max(t.parts.get(p, 0) for t in columns))
    lines = [f"{'requests by layout part':<52}" + "".join(f"{label:>16}" for label in labels)]
    for part in parts:
        lines.append(f"{part:<52}" + "".join(f"{t.parts.get(part, 0):>16,}" for t in columns))
    return lines


# The report's counts that are requests (links vouched, empty objects and deleted keys are not).
REQUEST_KINDS = ("list_pages", "gets", "copies", "puts", "delete_batches", "other")


def own_request_counts(report_path: str, proxied: int) -> str:
    """MATCH when the requests the audit's JSON report counts (`store.requests`), and the one-key page that
    checks the target before the audit begins, are the proxy's count."""
    try:
        document = run.load_json(report_path)
    except (OSError, ValueError):
        return "MISMATCH (no readable report)"
    counted = document.get("store", {}).get("requests")
    if not isinstance(counted, dict):
        return "MISMATCH (the report has no store.requests)"
    own = sum(counted.get(kind, 0) for kind in REQUEST_KINDS) + 1
    shown = ", ".join(f"{kind} {counted[kind]}" for kind in sorted(counted) if counted[kind])
    verdict = "MATCH" if own == proxied else "MISMATCH"
    return f"{verdict} (report {shown}, and the probe; proxy {proxied})"


# ---------------------------------------------------------------------------------------------- main


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="the smoke shape (200 objects), latency 0")
    p.add_argument("--shape", choices=[name for name in SHAPES if name != "smoke"], default="default",
                   help="the tree's shape (default: 250 repositories of 10 tags; five-tags: 500 of 5)")
    p.add_argument("--latency-ms", help="comma-separated latencies added per request (default 0,5; --smoke: 0)")
    p.add_argument("--rounds", type=int, default=1, help="timed runs of each command per latency, best kept")
    p.add_argument("--dir", help="keep the tree and the store here, and reuse them when their shape matches")
    p.add_argument("--keep", action="store_true", help="without --dir: keep the temp dir")
    p.add_argument("--workers", type=int, default=UPLOAD_WORKERS, help="upload threads")
    p.add_argument("--json", dest="json_path", help="write every number to this file")
    p.add_argument("--no-ceiling", action="store_true", help="skip measuring the store's GETs/s (1 and 32 clients)")
    p.add_argument("--quiet", action="store_true", help="only the results")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    missing = missing_swift() + [n for n in missing_registry() if n == "docker-registry"]
    if missing:
        print(f"s3bench: needs {', '.join(missing)} on PATH (Debian packages {PACKAGES} docker-registry)",
              file=sys.stderr)
        return 2
    try:
        latencies = [float(v) for v in (args.latency_ms or ("0" if args.smoke else "0,5")).split(",")]
    except ValueError:
        print(f"s3bench: --latency-ms {args.latency_ms}: expected numbers separated by commas", file=sys.stderr)
        return 2
    if any(v < 0 for v in latencies) or args.rounds < 1 or args.workers < 1:
        print("s3bench: latencies must be >= 0, --rounds and --workers >= 1", file=sys.stderr)
        return 2
    shape_name = "smoke" if args.smoke else args.shape
    if args.dir:
        work = os.path.abspath(args.dir)
        os.makedirs(work, exist_ok=True)
    else:
        work = tempfile.mkdtemp(prefix="s3bench-", dir="/var/tmp" if os.path.isdir("/var/tmp") else None)
    try:
        return bench(args, SHAPES[shape_name], shape_name, latencies, work)
    finally:
        if not args.dir and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        elif not args.dir:
            print(f"kept {work}")


def bench(args, params: synth.Params, shape_name: str, latencies: list[float], work: str) -> int:
    say = (lambda *_: None) if args.quiet else (lambda text: print(text, flush=True))
    started = time.perf_counter()
    tree_dir = os.path.join(work, f"tree-{shape_name}")
    root = os.path.join(tree_dir, "root")
    facts_path = os.path.join(tree_dir, "synth.json")
    facts = run.load_json(facts_path) if os.path.exists(facts_path) else None
    if facts is not None and run.stored_params(facts) != params:
        raise SystemExit(f"{tree_dir}: a tree of other parameters; give another --dir")
    if facts is None:
        shutil.rmtree(tree_dir, ignore_errors=True)
        os.makedirs(tree_dir)
        facts = synth.generate(root, params, None, facts_path)
        say(f"generated {facts['files']} files in {facts['seconds']} s")
    v2 = os.path.join(root, "docker", "registry", "v2")
    out = os.path.join(work, f"out-{shape_name}")
    os.makedirs(out, exist_ok=True)
    rootdirectory = f"{ROOTDIRECTORY}-{shape_name}"
    keys = tree_keys(root, rootdirectory)
    expected = expected_from_tree(v2)

    checks: dict[str, str] = {}
    notes: dict[str, str] = {}
    runs: dict[float, dict[str, Timed]] = {}
    with Swift(os.path.join(work, "swift")) as swift:
        say(f"swift with s3api on {swift.endpoint}")
        direct = s3_client(swift.endpoint, args.workers)
        marker_path = os.path.join(work, f"{shape_name}-{MARKER}")
        marker = run.load_json(marker_path) if os.path.exists(marker_path) else None
        if marker is not None and marker.get("params") == asdict(params) and marker.get("objects") == len(keys):
            say(f"reusing the bucket written {marker['when']} ({marker['objects']} objects)")
            uploaded = None
        else:
            if BUCKET not in {b["Name"] for b in direct.list_buckets().get("Buckets", ())}:
                direct.create_bucket(Bucket=BUCKET)
            say(f"uploading {len(keys)} objects on {args.workers} threads")
            uploaded = upload(direct, BUCKET, keys, args.workers, say)
            say(f"uploaded {uploaded.objects} objects ({uploaded.puts} PUTs) in {uploaded.seconds:.0f} s")
            with open(marker_path, "w") as handle:
                json.dump({"params": asdict(params), "objects": len(keys),
                           "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                           "upload": asdict(uploaded)}, handle, indent=1)
        checks["bucket = tree (keys, sizes, ETag = MD5)"] = etags_are_md5(direct, BUCKET, keys)

        with CountingProxy(swift.endpoint) as proxy:
            storage = S3Storage(proxy.endpoint, BUCKET, ACCESS_KEY, SECRET_KEY, "/" + rootdirectory)
            config = os.path.join(out, "registry.yml")
            with open(config, "w") as handle:  # JSON is YAML
                json.dump({"version": 0.1, "log": {"level": "error"}, "storage": {"s3": storage.config()}}, handle)
            gc_path = os.path.join(out, "gc-untagged.txt")
            report_path = os.path.join(out, "audit.json")
            audit_env = child_env(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
                                  AWS_DEFAULT_REGION=REGION, AWS_EC2_METADATA_DISABLED="true",
                                  AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
            for latency in latencies:
                proxy.set_latency(latency / 1000)
                gc = Timed("gc", ["docker-registry", "garbage-collect", "--dry-run", "--delete-untagged", config])
                audit = Timed("audit", [*fsck_argv(), "audit", f"s3://{BUCKET}/{rootdirectory}", "--endpoint-url",
                                        proxy.endpoint, "--json", "--quiet", "-o", report_path])
                runs[latency] = {"gc": gc, "audit": audit}
                for round_number in range(1, args.rounds + 1):
                    for timed, env, stdout in ((gc, child_env(), gc_path), (audit, audit_env, None)):
                        made = measure(timed, proxy, env, stdout)
                        say(f"  {latency:g} ms round {round_number} {timed.name:<6} {timed.runs[-1]:8.2f} s "
                            f"{made:>8} requests  exit {timed.exit_code}")
                    checks[f"audit's own request counts = the proxy's @{latency:g}ms"] = own_request_counts(
                        report_path, made)
                    # Each run's answers, checked at every latency: the proxy must not change them.
                    checks.update(correctness(latency, gc, audit, gc_path, report_path, expected, facts, notes))
                if gc.errors or audit.errors:
                    notes[f"error answers @{latency:g}ms"] = (
                        f"gc {dict(sorted(gc.errors.items()))}, audit {dict(sorted(audit.errors.items()))}")
        if not args.no_ceiling:
            notes["store ceiling (GetObject/s, direct)"] = ceiling_line(swift.endpoint, BUCKET, keys)

    disk_report = os.path.join(out, "audit-disk.json")
    subprocess.run([*fsck_argv(), "audit", root, "--json", "--quiet", "-o", disk_report], stdin=subprocess.DEVNULL)
    on_disk, on_bucket = findings(disk_report), findings(report_path)
    if on_disk is None or on_bucket is None:
        checks["audit on the bucket = audit on disk"] = "MISMATCH (no readable report)"
    else:
        a, b = comparable(on_bucket), comparable(on_disk)
        checks["audit on the bucket = audit on disk"] = (
            f"MATCH ({sum(a.values())} findings)" if a == b
            else f"MISMATCH (bucket only {sum((a - b).values())}, disk only {sum((b - a).values())})")

    return report(args, params, shape_name, facts, len(keys), uploaded, runs, checks, notes,
                  time.perf_counter() - started)


def correctness(latency: float, gc: Timed, audit: Timed, gc_path: str, report_path: str, expected: Expected,
                facts: dict, notes: dict[str, str]) -> dict[str, str]:
    at = f"@{latency:g}ms"
    checks: dict[str, str] = {}
    if gc.exit_code != 0:
        checks[f"gc ran {at}"] = f"MISMATCH (exit {gc.exit_code})"
        return checks
    records = findings(report_path)
    if audit.exit_code not in (0, 4) or records is None:
        checks[f"audit ran {at}"] = f"MISMATCH (exit {audit.exit_code}, report {'read' if records else 'unreadable'})"
        return checks
    eligible = run.gc_eligible(gc_path)
    garbage = digests_of(records, "blob-orphan", "blob-unreachable")
    orphans = digests_of(records, "blob-orphan")
    generator = set(facts["orphans"])
    checks[f"gc eligible = 2.8's --delete-untagged rules on the tree {at}"] = same(
        "gc", eligible, "rules", set(expected.gc_untagged))
    checks[f"audit blob-orphan + blob-unreachable = gc eligible - index-children-only {at}"] = same(
        "audit", garbage, "gc", eligible - expected.children_only)
    checks[f"audit blob-orphan = generator orphans = unreferenced {at}"] = (
        same("audit", orphans, "generator", generator) if generator == expected.unreferenced
        else f"MISMATCH (generator {len(generator)} vs unreferenced on disk {len(expected.unreferenced)})")
    manifests_out = run.gc_eligible(gc_path, "manifest")
    untagged = digests_of(records, "manifest-untagged")
    notes[f"gc-untagged manifests {at}"] = (
        f"{len(manifests_out)} manifest eligible for deletion (rules on the tree: {len(expected.gc_untagged_manifests)}"
        f"{', same' if manifests_out == expected.gc_untagged_manifests else ', DIFFERENT'}); audit manifest-untagged "
        f"{len(untagged)}, {'all among them' if untagged <= manifests_out else 'NOT all among them'}; "
        f"{len(expected.children_only)} eligible blobs only index children reference")
    return checks


def report(args, params: synth.Params, shape_name: str, facts: dict, objects: int, uploaded: Upload | None,
           runs: dict[float, dict[str, Timed]], checks: dict[str, str], notes: dict[str, str], seconds: float) -> int:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print()
    print(f"registry-fsck S3 benchmark, {when}, {platform.node() or 'host'}: {os.cpu_count()} cores, "
          f"load {' '.join(f'{v:.1f}' for v in os.getloadavg())}, Python {platform.python_version()}; "
          f"registry-fsck {run.package_version()}")
    print(f"shape {shape_name}: synth.py --repos {params.repos} --tags {params.tags} --seed {params.seed}: "
          f"{objects} objects, {facts['repositories']} repositories, {facts['tags']} tags, "
          f"{facts['revisions']} revisions, {facts['blobs']} blobs ({facts['blob_bytes'] / 2**20:.1f} MiB), "
          f"{len(facts['orphans'])} orphans")
    if uploaded is not None:
        print(f"upload: {uploaded.objects} objects, {uploaded.puts} PUTs in {uploaded.seconds:.0f} s "
              f"({uploaded.puts / uploaded.seconds:.0f}/s on {args.workers} threads, {uploaded.rounds} round(s))")
    print()
    for line in kinds_table(runs):
        print(line)
    print()
    for line in parts_table(runs):
        print(line)
    print()
    ratios: dict[str, dict[str, float | None]] = {}
    print(f"{'target':<20} {'latency':>8} {'audit':>10} {'gc':>10} {'value':>8} {'bound':>8}  verdict  what")
    for latency, timed in runs.items():
        gc, audit = timed["gc"], timed["audit"]
        values = {
            "audit/gc requests": (audit.total, gc.total, run.ratio(audit.total, gc.total)),
            "audit/gc wall": (audit.best, gc.best, run.ratio(audit.best, gc.best)),
        }
        ratios[f"{latency:g}"] = {name: v[2] for name, v in values.items()}
        for goal in GOALS:
            a, g, value = values[goal.ratio]
            shown = [f"{x:,}" if isinstance(x, int) else run.fmt(x) for x in (a, g)]
            print(f"{goal.ratio:<20} {latency:>6g}ms {shown[0]:>10} {shown[1]:>10} {run.fmt(value, '{:.3f}'):>8} "
                  f"{'<= ' + format(goal.limit, 'g'):>8}  {goal.verdict(value):<7}  {goal.what}")
    print()
    for name, verdict in checks.items():
        print(f"{name:<76} {verdict}")
    for name, said in notes.items():
        print(f"{name:<40} INFO: {said}")
    print(f"\nbenchmark took {seconds:.0f} s")
    failed = any(not v.startswith("MATCH") for v in checks.values())
    if args.json_path:
        with open(args.json_path, "w") as handle:
            json.dump({
                "when": when, "registry_fsck": run.package_version(), "cores": os.cpu_count(),
                "python": platform.python_version(), "shape": shape_name, "params": asdict(params),
                "objects": objects, "tree": {k: v for k, v in facts.items() if k != "orphans"},
                "upload": asdict(uploaded) if uploaded else None,
                "runs": {f"{latency:g}": {name: {**asdict(t), "best": t.best, "total": t.total}
                                          for name, t in timed.items()} for latency, timed in runs.items()},
                "ratios": ratios, "checks": checks, "notes": notes, "exit_code": int(failed),
            }, handle, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
