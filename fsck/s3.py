"""A registry's storage in an S3 bucket, read as a `Store` (the registry's `s3` driver layout).

Keys are the file-system layout below `<rootdirectory without its leading />/docker/registry/v2/`;
a "directory" is only a prefix of keys. The walk in `scan` asks for one directory at a time, as
the registry's own GC does on S3 (one or more requests per directory: days on a large bucket).
Here the bucket is listed once, without a delimiter, in pages, into a tree in memory (each key's size,
ETag and time) from which `list` answers directory by directory: every request after that is a GET of an
object's content. One page from the start holds a small registry. Where more follows, the rest is split
as it is found: a delimiter listing shows the child prefixes after the page's last key (blob fan-out
`sha256/00`..`ff`, repository namespaces, ...), each listed on a bounded pool of threads, on its own
when the page suggests it holds many keys, else in runs of children listed as one range, a page a run.
Each key is listed by one part; only a run's last page can show keys past the run's end.

A link whose listing shows the size of `sha256:<hex>` and, as ETag, the MD5 of the text its path
implies (a revision, tag-index or sha256 `_layers` link; for a tag's `current` link, one of the
digests in the tag's index) is as good as read: S3's ETag of a
single-part upload without SSE-KMS is the MD5 of the content (an ETag with a `-N` suffix, a
multipart upload's, is not, nor is a KMS one, which never equals the MD5 but by chance). Only the
manifests and the links the listing cannot vouch for are fetched.

Changing (repair, undo, purge): a move is a server-side copy, refused if the object was modified since
the listing (so only what was judged is taken), checked by its MD5 or its size, then a delete; the
deletes wait in the store until `settle()`, which sends them as multi-object deletes of up to 1,000
keys (`apply` settles at every change of plan step and at the end of every batch, so the deletes of a
step follow its copies, and no delete precedes the copies it depends on). A journal is one object per
append (`<journal>/<n>`), each stored before the changes it describes. The lock is an object created
only if absent, where the store honours `If-None-Match: *` (probed: a second such PUT must be refused);
where it does not, the lock is checked, then written, and `lock_note` says so. Errors are `OSError`,
with the service's one-line message as `strerror`.
"""

from __future__ import annotations

import base64
import errno
import os
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import ClassVar

import orjson

from .store import (
    REMOTE_JOBS,
    Capabilities,
    Concurrency,
    EntryKind,
    Journal,
    LockHeld,
    PoolKind,
    Progress,
    Reader,
    Stat,
    Store,
    new_hasher,
)

V2_PREFIX = "docker/registry/v2/"
PAGE_KEYS = 1000  # S3's most per page
_LINK_BYTES = len("sha256:") + 64
# Links whose content is the digest in their own path (not `current`, which names its tag's target).
_SELF_NAMING_LINK = re.compile(
    r"(?:/_layers|/_manifests/revisions|/_manifests/tags/[^/]+/index)/sha256/([0-9a-f]{64})/link$"
)
_CURRENT_LINK = "/current/link"
DELETE_KEYS = 1000  # S3's most keys per multi-object delete
COPY_LIMIT = 5 * 1024**3  # the largest single-request copy; larger objects are copied in parts
_COPY_PART = 512 * 1024**2
RANGE_BYTES = 8 * 1024**2  # a blob larger than this is read by ranged GETs of this size, several at once
RANGE_AHEAD = 4  # ranged GETs of one blob in flight ahead of its hashing


@dataclass(frozen=True, slots=True)
class Location:
    """Where the registry's keys are, and how to reach the store."""

    bucket: str
    rootdirectory: str = ""  # without leading or trailing "/"
    endpoint_url: str | None = None  # None: AWS's own for the region
    region: str | None = None
    access_key: str | None = None  # None: the standard AWS credential chain
    secret_key: str | None = None
    v4auth: bool = True

    @property
    def v2_prefix(self) -> str:
        return f"{self.rootdirectory}/{V2_PREFIX}" if self.rootdirectory else V2_PREFIX

    @property
    def root_address(self) -> str:
        return f"s3://{self.bucket}/{self.rootdirectory}" if self.rootdirectory else f"s3://{self.bucket}"

    @property
    def v2_address(self) -> str:
        return f"s3://{self.bucket}/{self.v2_prefix.rstrip('/')}"


def parse_url(url: str) -> tuple[str, str]:
    """`s3://bucket/prefix` as (bucket, rootdirectory); a prefix ending in docker/registry/v2 is its rootdirectory's."""
    rest = url[len("s3://"):] if url.startswith("s3://") else url
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"{url}: no bucket (expected s3://BUCKET/PREFIX)")
    prefix = prefix.strip("/")
    v2 = V2_PREFIX.rstrip("/")
    if prefix == v2:
        prefix = ""
    elif prefix.endswith("/" + v2):
        prefix = prefix[: -len(v2) - 1]
    return bucket, prefix


def make_client(location: Location, connections: int):
    """A boto3 client for the location (boto3 is imported here: only a run on S3 pays for it)."""
    import boto3
    from botocore.config import Config

    options: dict = {
        "signature_version": "s3v4" if location.v4auth else "s3",
        "max_pool_connections": connections,
        "retries": {"max_attempts": 3, "mode": "standard"},
        "connect_timeout": 10,
        "read_timeout": 60,
        # Stores without the newer checksum headers (Swift, MinIO, Ceph) reject or mis-answer them.
        "request_checksum_calculation": "when_required",
        "response_checksum_validation": "when_required",
    }
    if location.endpoint_url:
        options["s3"] = {"addressing_style": "path"}  # as the registry's driver with a regionendpoint
    client = boto3.session.Session().client(
        "s3", endpoint_url=location.endpoint_url, region_name=location.region or None,
        aws_access_key_id=location.access_key or None, aws_secret_access_key=location.secret_key or None,
        config=Config(**options),
    )
    client.meta.events.register("before-sign.s3.DeleteObjects", _content_md5)
    return client


def _content_md5(request, **_kwargs) -> None:
    """S3 requires Content-MD5 on a multi-object delete; botocore now sends a CRC32 checksum instead,
    which Swift and older stores refuse ("Missing required header ... Content-MD5")."""
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode()
    if isinstance(body, bytes):
        request.headers["Content-MD5"] = base64.b64encode(new_hasher("md5", body, for_security=False).digest()).decode()


def as_os_error(error: BaseException, what: str) -> OSError:
    """A client error as an OSError whose strerror is one line for the user."""
    from botocore import exceptions

    if isinstance(error, exceptions.ClientError):
        info = error.response.get("Error", {})
        code = str(info.get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = info.get("Message") or code or f"HTTP {status}"
        if code in ("NoSuchKey", "404", "NotFound"):
            return OSError(errno.ENOENT, f"{what}: no such key", what)
        if code == "NoSuchBucket":
            return OSError(errno.ENOENT, f"{what}: no such bucket ({message})", what)
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403") or status == 403:
            return OSError(errno.EACCES, f"{what}: access denied ({code}: {message})", what)
        return OSError(errno.EIO, f"{what}: {code or status}: {message}", what)
    if isinstance(error, exceptions.NoCredentialsError):
        return OSError(errno.EACCES, f"{what}: no AWS credentials found (config, environment or ~/.aws)", what)
    if isinstance(error, exceptions.EndpointConnectionError | exceptions.ConnectionError):
        return OSError(errno.ECONNREFUSED, f"{what}: cannot reach the store ({error})", what)
    if isinstance(error, exceptions.BotoCoreError):
        return OSError(errno.EIO, f"{what}: {error}", what)
    return OSError(errno.EIO, f"{what}: {error}", what)


def _client_errors() -> tuple[type[BaseException], ...]:
    from botocore import exceptions

    return (exceptions.ClientError, exceptions.BotoCoreError)


# The tree: a directory is a dict of names; an object a tuple (size, ETag, mtime), the ETag as
# 16 bytes when it is a plain MD5 (the only kind that can vouch for content), else as listed.
_Object = tuple
# A listed key: below the store's prefix, its size, ETag as listed, and time.
_Listed = tuple[str, int, str, float]


def _etag(listed: str) -> bytes | str:
    bare = listed.strip('"')
    if len(bare) == 32:
        try:
            return bytes.fromhex(bare)
        except ValueError:
            pass
    return bare


@dataclass(frozen=True, slots=True)
class _EntryStat:
    st_size: int
    st_mtime: float


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    node: object  # a dict (directory) or an _Object

    def is_dir(self, *, follow_symlinks: bool = True) -> bool:
        return isinstance(self.node, dict)

    def is_file(self, *, follow_symlinks: bool = True) -> bool:
        return not isinstance(self.node, dict)

    def is_symlink(self) -> bool:
        return False

    def stat(self, *, follow_symlinks: bool = True) -> _EntryStat:
        if isinstance(self.node, dict):
            return _EntryStat(0, _newest(self.node))
        return _EntryStat(self.node[0], self.node[2])


def _newest(directory: dict) -> float:
    """A prefix's time: that of the newest key below it (what last changed there, as a directory's mtime
    tells on disk). Asked only of small prefixes (an upload's)."""
    newest = 0.0
    stack = [directory]
    while stack:
        for child in stack.pop().values():
            if isinstance(child, dict):
                stack.append(child)
            elif child[2] > newest:
                newest = child[2]
    return newest


@dataclass(slots=True)
class Requests:
    """What a run asked of the store, by kind."""

    list_pages: int = 0  # ListObjectsV2 pages
    gets: int = 0  # GetObject requests
    links_vouched: int = 0  # links known from their listing (size and ETag), no GET
    empty_objects: int = 0  # listed with size 0: nothing to fetch
    copies: int = 0  # CopyObject (server-side: no content through this host)
    puts: int = 0  # PutObject: journal parts, links written, the lock
    delete_batches: int = 0  # DeleteObjects requests
    deleted_keys: int = 0  # the keys they deleted
    other: int = 0  # single deletes, HEADs, the bucket's versioning
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, kind: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, kind, getattr(self, kind) + n)

    def as_dict(self) -> dict[str, int]:
        return {
            "list_pages": self.list_pages, "gets": self.gets, "links_vouched": self.links_vouched,
            "empty_objects": self.empty_objects, "copies": self.copies, "puts": self.puts,
            "delete_batches": self.delete_batches, "deleted_keys": self.deleted_keys, "other": self.other,
        }


def _just_before(key: str) -> str:
    """A key that sorts after every key below `key` (for StartAfter, which is exclusive); `key` ends in ASCII."""
    return key[:-1] + chr(ord(key[-1]) - 1) + "\U0010ffff"


_PAST_EVERY_KEY = "\U0010ffff"  # the largest character: `p + _PAST_EVERY_KEY` sorts after every key below `p`
_OWN_LISTING_KEYS = PAGE_KEYS // 4  # a child prefix expected to hold this many keys is listed on its own


def _child(relative: str) -> str | None:
    """The first part of `relative` with its slash, when it has one ("a/b/c" -> "a/"): the child prefix it lies in."""
    head, slash, _ = relative.partition("/")
    return head + slash if slash else None


@dataclass(slots=True)
class _Shared:
    """What the stores of one bucket share: the client, the request counts, the hook after each change."""

    location: Location
    jobs: int
    client: object | None
    after_change: Callable[[str], None] | None
    requests: Requests = field(default_factory=Requests)
    lock: threading.Lock = field(default_factory=threading.Lock)


class S3Store:
    """The keys below `prefix` (default: the registry's v2 prefix) in `location`, listed once on first use;
    `requests` counts what it asked. `after_change(kind)` runs after every change it makes to the bucket
    (a copy, a delete batch, a journal part or a link written): the crash tests stop there."""

    capabilities: ClassVar[Capabilities] = Capabilities(has_directories=False, has_symlinks=False, atomic_rename=False)

    def __init__(
        self, location: Location, jobs: int = REMOTE_JOBS, client=None, *, prefix: str | None = None,
        after_change: Callable[[str], None] | None = None, _shared: _Shared | None = None,
    ) -> None:
        self.location = location
        self.prefix = location.v2_prefix if prefix is None else prefix
        self.root = f"s3://{location.bucket}/{self.prefix.rstrip('/')}"
        self._shared = _shared or _Shared(location, jobs, client, after_change)
        self.jobs = self._shared.jobs
        self.requests = self._shared.requests
        self._tree: dict | None = None
        self._tree_lock = threading.Lock()
        self._deletes: list[str] = []  # keys moved away, deleted by the next settle()
        self.lock_note: str | None = None  # set by lock() when the store cannot make the lock exclusive

    @property
    def client(self):
        shared = self._shared
        with shared.lock:
            if shared.client is None:
                shared.client = make_client(self.location, max(10, self.jobs))
            return shared.client

    # Listing

    def probe(self) -> int:
        """One page of one key: whether the bucket answers with these credentials; how many keys it showed."""
        try:
            answer = self.client.list_objects_v2(Bucket=self.location.bucket, Prefix=self.prefix, MaxKeys=1)
        except _client_errors() as error:
            raise as_os_error(error, f"s3://{self.location.bucket}") from None
        self.requests.add("list_pages")
        return int(answer.get("KeyCount", len(answer.get("Contents", ()))))

    def _page(self, prefix: str, *, after: str | None = None, token: str | None = None,
              delimiter: bool = False) -> dict:
        arguments: dict = {"Bucket": self.location.bucket, "Prefix": prefix, "MaxKeys": PAGE_KEYS}
        if token is not None:
            arguments["ContinuationToken"] = token
        elif after is not None:
            arguments["StartAfter"] = after
        if delimiter:
            arguments["Delimiter"] = "/"
        try:
            page = self.client.list_objects_v2(**arguments)
        except _client_errors() as error:
            raise as_os_error(error, f"s3://{self.location.bucket}/{prefix}") from None
        self.requests.add("list_pages")
        return page

    def _entry(self, item: dict) -> _Listed:
        return item["Key"][len(self.prefix):], item["Size"], item["ETag"], item["LastModified"].timestamp()

    def _walk(self, prefix: str, after: str | None, pool: ThreadPoolExecutor) -> list:
        """The keys below `prefix` after `after`, in key order, as entries and futures of such lists: one
        page, and if more keys follow, the rest split over the child prefixes on `pool`."""
        page = self._page(prefix, after=after)
        found = [self._entry(item) for item in page.get("Contents", ())]
        if not page.get("IsTruncated") or not found:
            return found
        return [*found, *self._split(prefix, found, pool)]

    def _split(self, prefix: str, found: list[_Listed], pool: ThreadPoolExecutor) -> list:
        # `found`: the first page below `prefix`; the rest is what follows its last key. The child prefix
        # that key lies in is walked on from it; the ones after it come from a listing with a delimiter,
        # each walked on its own when the page suggests it holds many keys, else in runs listed as one
        # range (a page a run), so that a wide, shallow fan-out is not a request per child.
        skip = len(prefix) - len(self.prefix)
        children = {_child(relative[skip:]) for relative, *_ in found}
        per_child = len(found) / max(1, len(children - {None}))
        last = self.prefix + found[-1][0]
        partial = _child(last[len(prefix):])
        parts: list = []
        after = last
        if partial is not None:
            parts.append(pool.submit(self._walk, prefix + partial, last, pool))
            after = prefix + partial + _PAST_EVERY_KEY
        following = self._children(prefix, after)
        run: list[str] = []
        run_keys = max(1, int(PAGE_KEYS * 0.8 / per_child))
        for i, item in enumerate(following):
            if isinstance(item, tuple):
                parts.append(item)
                continue
            if per_child >= _OWN_LISTING_KEYS:
                parts.append(pool.submit(self._walk, item, None, pool))
                continue
            run.append(item)
            nxt = following[i + 1] if i + 1 < len(following) else None
            if len(run) == run_keys or not isinstance(nxt, str):
                end = nxt if isinstance(nxt, str) else (self.prefix + nxt[0] if nxt is not None else None)
                parts.append(pool.submit(self._run, prefix, run[0], end))
                run = []
        return parts

    def _children(self, prefix: str, after: str) -> list:
        """What a delimiter listing shows below `prefix` after `after`, in key order: the objects directly
        below it (entries) and the child prefixes (strings)."""
        shown: list = []
        token = None
        while True:
            page = self._page(prefix, after=after, token=token, delimiter=True)
            objects = [self._entry(item) for item in page.get("Contents", ())]
            prefixes = [common["Prefix"] for common in page.get("CommonPrefixes", ())]
            shown += sorted([*objects, *prefixes], key=lambda x: x if isinstance(x, str) else self.prefix + x[0])
            if not page.get("IsTruncated"):
                return shown
            token = page["NextContinuationToken"]

    def _run(self, prefix: str, first: str, end: str | None) -> list[_Listed]:
        """The keys below `prefix` from the child prefix `first` on, before `end` (the next item a delimiter showed)."""
        found: list[_Listed] = []
        token = None
        while True:
            page = self._page(prefix, after=_just_before(first), token=token)
            for item in page.get("Contents", ()):
                key = item["Key"]
                if end is not None and key >= end:
                    return found
                found.append(self._entry(item))
            if not page.get("IsTruncated"):
                return found
            token = page["NextContinuationToken"]

    def _listing(self) -> list[_Listed]:
        # One page from the start: a small registry is all there. Otherwise the rest, split as it is found.
        with ThreadPoolExecutor(self.jobs, thread_name_prefix="s3-list") as pool:
            pending = [self._walk(self.prefix, None, pool)]
            listed: list[_Listed] = []
            while pending:
                parts = pending.pop()
                for index, part in enumerate(parts):
                    if isinstance(part, tuple):
                        listed.append(part)
                    else:  # a future: its list comes before the rest of `parts`
                        pending.append(parts[index + 1:])
                        pending.append(part.result())
                        break
        return listed

    def _build(self) -> dict:
        top: dict = {}
        for relative, size, etag, mtime in self._listing():  # in key order, so every listing is in S3's order
            *directories, name = relative.split("/")
            node = top
            for directory in directories:
                child = node.get(directory)
                if not isinstance(child, dict):
                    # A key that is also a prefix ("a/b" beside "a/b/c"): the directory wins the
                    # name; the object is kept under a name no key can have, and listed as well.
                    if child is not None:
                        node["\0" + directory] = child
                    child = node[directory] = {}
                node = child
            if name == "":
                continue  # "a/b/": a folder marker some tools write; its directory now exists
            if isinstance(node.get(name), dict):
                node["\0" + name] = (size, _etag(etag), mtime)
            else:
                node[name] = (size, _etag(etag), mtime)
        return top

    def tree(self) -> dict:
        with self._tree_lock:
            if self._tree is None:
                self._tree = self._build()
            return self._tree

    def _find(self, path: str) -> object | None:
        node: object = self.tree()
        for part in path.split("/") if path else ():
            if not isinstance(node, dict):
                return None
            node = node.get(part)
            if node is None:
                return None
        return node

    def _object(self, path: str) -> _Object:
        node = self._find(path)
        if isinstance(node, dict):
            parent, _, name = path.rpartition("/")
            shadowed = self._find(f"{parent}/\0{name}" if parent else f"\0{name}")
            if shadowed is None or isinstance(shadowed, dict):
                raise OSError(errno.EISDIR, f"{self.root}/{path}: a prefix, not an object", path)
            return shadowed
        if node is None:
            raise OSError(errno.ENOENT, f"{self.root}/{path}: no such key", path)
        return node

    # Reading

    def concurrency(self) -> Concurrency:
        return Concurrency(PoolKind.THREADS, self.jobs, "s3: each request waits on the network")

    def list(self, path: str) -> list[_Entry]:
        node = self._find(path)
        if not isinstance(node, dict):
            raise OSError(errno.ENOENT if node is None else errno.ENOTDIR, f"{self.root}/{path}: no such prefix", path)
        return [_Entry(name[1:] if name.startswith("\0") else name, child) for name, child in node.items()]

    def read(self, path: str, limit: int, expected: int) -> bytes:
        size, etag, _ = self._object(path)
        if size == 0:
            self.requests.add("empty_objects")
            return b""
        if size == _LINK_BYTES and isinstance(etag, bytes):
            for text in self._candidates(path):
                if new_hasher("md5", text, for_security=False).digest() == etag:
                    self.requests.add("links_vouched")
                    return text[:limit]
        return self._get(path, limit if limit < size else None)

    def _candidates(self, path: str) -> Iterator[bytes]:
        """What a link's content can be, from its path: the digest it names, or for a tag's `current` link the
        digests of the tag's index (its current target is one of them, unless the tag is damaged)."""
        implied = _SELF_NAMING_LINK.search(path)
        if implied is not None:
            yield b"sha256:" + implied.group(1).encode()
        elif path.endswith(_CURRENT_LINK):
            index = self._find(path[: -len(_CURRENT_LINK)] + "/index/sha256")
            if isinstance(index, dict):
                for name in index:
                    if len(name) == 64:
                        yield b"sha256:" + name.encode()

    def _get(self, path: str, limit: int | None) -> bytes:
        arguments = {"Bucket": self.location.bucket, "Key": self.prefix + path}
        if limit is not None:
            arguments["Range"] = f"bytes=0-{limit - 1}"
        try:
            self.requests.add("gets")
            answer = self.client.get_object(**arguments)
            body = answer["Body"]
            try:
                return body.read()
            finally:
                body.close()
        except _client_errors() as error:
            raise as_os_error(error, f"{self.root}/{path}") from None

    def lines(self, path: str) -> Iterator[bytes]:
        """An object's lines; a journal's (a prefix of parts, see `open_journal`) part after part."""
        node = self._find(path)
        if isinstance(node, dict):
            for name in sorted(n for n, child in node.items() if not isinstance(child, dict)):
                yield from self._get(f"{path}/{name}", None).splitlines(keepends=True)
            return
        self._object(path)
        yield from self._get(path, None).splitlines(keepends=True)

    def stat(self, path: str, *, follow_symlinks: bool = False) -> Stat | None:
        node = self._find(path)
        if node is None:
            return None
        if isinstance(node, dict):
            return Stat(EntryKind.DIR, 0, _newest(node), 0o755, 0, 0)
        return Stat(EntryKind.FILE, node[0], node[2], 0o644, 0, 0, md5=node[1] if isinstance(node[1], bytes) else None)

    @contextmanager
    def reader(self, held_open: Iterable[str]) -> Iterator[Reader]:
        with ThreadPoolExecutor(self.jobs, thread_name_prefix="s3-range") as parts:
            yield _S3Reader(self, parts, threading.BoundedSemaphore(self.jobs))

    def linked_parents(self, path: str) -> list[str]:
        return []  # a bucket has no links

    def sibling(self, address: str) -> S3Store:
        """The keys below another prefix of the same bucket (`s3://bucket/prefix`), sharing the client."""
        bucket, prefix = address[len("s3://"):].partition("/")[::2] if address.startswith("s3://") else ("", "")
        if bucket != self.location.bucket:
            raise OSError(errno.EXDEV, f"{address}: not in the bucket {self.location.bucket}", address)
        prefix = prefix.strip("/")
        return S3Store(self.location, prefix=f"{prefix}/" if prefix else "", _shared=self._shared)

    def resolve(self, address: str) -> str:
        return address

    def real_path(self, path: str) -> str:
        return f"{self.root}/{path}" if path else self.root

    def volume(self, path: str) -> int | None:
        return 0 if self._find(path) is not None else None

    def shares_volume(self, other: Store) -> bool:
        return isinstance(other, S3Store) and other.location.bucket == self.location.bucket

    # Changing. The tree in memory follows every change, so that what `stat` and `list` say stays true.

    def _changed(self, kind: str) -> None:
        if self._shared.after_change is not None:
            self._shared.after_change(kind)

    def _key(self, path: str) -> str:
        return self.prefix + path

    def _attach(self, path: str, node: object) -> None:
        parent = self.tree()
        *directories, name = path.split("/")
        for directory in directories:
            child = parent.get(directory)
            if not isinstance(child, dict):
                child = parent[directory] = {}
            parent = child
        parent[name] = node

    def _detach(self, path: str) -> None:
        """Forget `path`, and every prefix above it that it leaves without keys (a bucket has no empty directory)."""
        trail = [self.tree()]
        parts = path.split("/")
        for part in parts[:-1]:
            child = trail[-1].get(part)
            if not isinstance(child, dict):
                return
            trail.append(child)
        trail[-1].pop(parts[-1], None)
        for depth in range(len(parts) - 1, 0, -1):
            if trail[depth]:
                break
            trail[depth - 1].pop(parts[depth - 1], None)

    def _keys_below(self, path: str) -> list[tuple[str, _Object]]:
        """Every object at or below `path`: (its path, its listing)."""
        node = self._find(path)
        if node is None:
            return []
        if not isinstance(node, dict):
            return [(path, node)]
        found, stack = [], [(path, node)]
        while stack:
            base, directory = stack.pop()
            for name, child in directory.items():
                below = f"{base}/{name[1:] if name.startswith(chr(0)) else name}" if base else name
                (stack.append((below, child)) if isinstance(child, dict) else found.append((below, child)))
        return found

    def _same_bucket(self, other: Store) -> S3Store:
        if not isinstance(other, S3Store) or other.location.bucket != self.location.bucket:
            raise OSError(errno.EXDEV, f"{getattr(other, 'root', other)}: not in the bucket {self.location.bucket}")
        return other

    def _copy_object(self, path: str, listed: _Object, into: S3Store, to: str) -> None:
        """A server-side copy of what the listing showed at `path` (refused if it changed since), checked:
        by the MD5 where the copy's ETag is one, else by the size a HEAD of the copy shows."""
        size, etag, mtime = listed
        source = {"Bucket": self.location.bucket, "Key": self._key(path)}
        # Unmodified since the listing: the condition every store compares alike (a multipart upload's ETag
        # is compared with another form of it by some, Swift's s3api among them).
        unchanged = {"CopySourceIfUnmodifiedSince": datetime.fromtimestamp(mtime, timezone.utc)}
        where = f"{self.root}/{path}"
        try:
            self.requests.add("copies")
            if size > COPY_LIMIT:
                from boto3.s3.transfer import TransferConfig

                self.client.copy(source, into.location.bucket, into._key(to), ExtraArgs=unchanged, Config=TransferConfig(
                    multipart_threshold=COPY_LIMIT, multipart_chunksize=_COPY_PART, max_concurrency=4,
                ))
                new_etag: bytes | str = ""
            else:
                answer = self.client.copy_object(
                    Bucket=into.location.bucket, Key=into._key(to), CopySource=source, **unchanged,
                )
                new_etag = _etag(answer["CopyObjectResult"]["ETag"])
            if not (isinstance(etag, bytes) and new_etag == etag):
                self.requests.add("other")
                copied = self.client.head_object(Bucket=into.location.bucket, Key=into._key(to))
                if copied["ContentLength"] != size:
                    raise OSError(errno.EIO, f"{where}: its copy has {copied['ContentLength']} bytes, not {size}", path)
                new_etag = etag if isinstance(etag, bytes) else _etag(copied.get("ETag", ""))
        except _client_errors() as error:
            changed = getattr(error, "response", {}).get("Error", {}).get("Code") == "PreconditionFailed"
            if changed:
                raise OSError(errno.ESTALE, f"{where}: changed since it was listed: not moved", path) from None
            raise as_os_error(error, where) from None
        into._attach(to, (size, new_etag, time.time()))
        self._changed("copy")

    def make_dir(self, path: str, mode: int = 0o777, *, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing to make on a bucket: the prefix exists, in memory, until its first key does."""
        node = self._find(path) if path else self.tree()
        if node is None:
            self._attach(path, {})
        elif not exist_ok and path:
            raise OSError(errno.EEXIST, f"{self.root}/{path}: exists", path)

    def move(self, path: str, into: Store, to: str) -> None:
        """A copy now, the delete at the next `settle()`: an object or every key below a prefix."""
        target = self._same_bucket(into)
        listed = self._keys_below(path)
        if not listed:
            raise OSError(errno.ENOENT, f"{self.root}/{path}: no such key", path)
        for below, node in listed:
            self._copy_object(below, node, target, to + below[len(path):])
        for below, _ in listed:
            self._deletes.append(self._key(below))
            self._detach(below)
        if len(self._deletes) >= DELETE_KEYS:
            self.settle()

    def copy(self, path: str, into: Store, to: str) -> None:
        self._copy_object(path, self._object(path), self._same_bucket(into), to)

    def settle(self) -> None:
        """Send the deletes `move` left, in multi-object deletes of up to 1,000 keys; every key the store could
        not delete is an error (they are still there: the registry serves them, a new run takes them)."""
        while self._deletes:
            batch, self._deletes = self._deletes[:DELETE_KEYS], self._deletes[DELETE_KEYS:]
            self._delete_keys(batch)

    def _delete_keys(self, keys: list[str]) -> None:
        try:
            self.requests.add("delete_batches")
            answer = self.client.delete_objects(
                Bucket=self.location.bucket, Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True},
            )
        except _client_errors() as error:
            raise as_os_error(error, f"s3://{self.location.bucket}: deleting {len(keys)} keys") from None
        errors = answer.get("Errors") or []
        self.requests.add("deleted_keys", len(keys) - len(errors))
        self._changed("delete batch")
        if errors:
            first = errors[0]
            raise OSError(errno.EIO, f"s3://{self.location.bucket}/{first.get('Key')}: not deleted "
                          f"({first.get('Code')}: {first.get('Message')}; {len(errors)} of {len(keys)} keys)")

    def write_atomically(
        self, path: str, data: bytes, *, staging: tuple[Store, str], siblings_in: Sequence[str],
        anywhere_below: Sequence[str],
    ) -> set[str]:
        """One PUT: an object appears whole or not at all. Nothing is staged; owners and modes do not exist."""
        self._put(path, data)
        self._changed("put")
        return set()

    def _put(self, path: str, data: bytes, **conditions: str) -> None:
        md5 = new_hasher("md5", data, for_security=False).digest()
        try:
            self.requests.add("puts")
            answer = self.client.put_object(
                Bucket=self.location.bucket, Key=self._key(path), Body=data,
                ContentMD5=base64.b64encode(md5).decode(), **conditions,
            )
        except _client_errors() as error:
            if conditions and getattr(error, "response", {}).get("Error", {}).get("Code") in (
                "PreconditionFailed", "NotImplemented", "ConditionalRequestConflict",
            ):
                raise
            raise as_os_error(error, f"{self.root}/{path}") from None
        self._attach(path, (len(data), _etag(answer.get("ETag", md5.hex())), time.time()))

    def remove(self, path: str) -> None:
        self._object(path)
        try:
            self.requests.add("other")
            self.client.delete_object(Bucket=self.location.bucket, Key=self._key(path))
        except _client_errors() as error:
            raise as_os_error(error, f"{self.root}/{path}") from None
        self._detach(path)
        self._changed("delete")

    def remove_dir(self, path: str) -> None:
        node = self._find(path)
        if not isinstance(node, dict):
            raise OSError(errno.ENOTDIR, f"{self.root}/{path}: no such prefix", path)
        if node:
            raise OSError(errno.ENOTEMPTY, f"{self.root}/{path}: keys below it", path)
        self._detach(path)

    def remove_tree(self, path: str) -> None:
        keys = [self._key(below) for below, _ in self._keys_below(path)]
        for start in range(0, len(keys), DELETE_KEYS):
            self._delete_keys(keys[start:start + DELETE_KEYS])
        if self._find(path) is not None:
            self._detach(path)

    def set_owner(self, path: str, mode: int, uid: int, gid: int) -> None:
        pass  # objects have no owner or mode

    def sync_dir(self, path: str) -> None:
        pass  # an answered PUT, copy or delete is durable

    def versioning(self) -> str | None:
        """The bucket's versioning ("Enabled", "Suspended"; None: never enabled, or the store does not say)."""
        try:
            self.requests.add("other")
            return self.client.get_bucket_versioning(Bucket=self.location.bucket).get("Status")
        except _client_errors():
            return None

    # The lock.

    def conditional_puts_honoured(self, probe: str) -> bool:
        """Whether a PUT with If-None-Match: * is refused when the key exists (412): the probe's second one must be."""
        from botocore import exceptions

        def attempt() -> str:
            try:
                self._put(probe, b"probe\n", IfNoneMatch="*")
                return "stored"
            except exceptions.ClientError as error:
                return str(error.response.get("Error", {}).get("Code"))

        try:
            first = attempt()
            return first == "stored" and attempt() == "PreconditionFailed"
        finally:
            if self._find(probe) is not None:
                self.remove(probe)

    def _holder(self, path: str) -> dict | None:
        if self._fresh_stat(path) is None:
            return None
        try:
            holder = orjson.loads(self._get(path, None))
            return holder if isinstance(holder, dict) else {}
        except (OSError, orjson.JSONDecodeError):
            return {}

    def _fresh_stat(self, path: str) -> bool | None:
        """Whether `path` exists now (a HEAD: the listing may be older than another run's lock)."""
        try:
            self.requests.add("other")
            answer = self.client.head_object(Bucket=self.location.bucket, Key=self._key(path))
        except _client_errors() as error:
            if as_os_error(error, path).errno == errno.ENOENT:
                self._detach(path)
                return None
            raise as_os_error(error, f"{self.root}/{path}") from None
        self._attach(path, (answer["ContentLength"], _etag(answer.get("ETag", "")), answer["LastModified"].timestamp()))
        return True

    @contextmanager
    def lock(self, path: str) -> Iterator[None]:
        """An object holding who took it (`run`, host, pid, since). Exclusive where the store honours
        If-None-Match: * (probed each time); elsewhere looked for, then written, and `lock_note` says so."""
        from botocore import exceptions

        holder = {
            "run": f"lock-{os.urandom(4).hex()}", "host": socket.gethostname(), "pid": os.getpid(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        body = orjson.dumps(holder) + b"\n"
        exclusive = self.conditional_puts_honoured(f"{path}.probe-{holder['run']}")
        self.lock_note = None if exclusive else self.unexclusive_note()
        if exclusive:
            try:
                self._put(path, body, IfNoneMatch="*")
            except exceptions.ClientError:
                raise LockHeld(path, describe_holder(self._holder(path))) from None
        else:
            held = self._holder(path)
            if held is not None:
                raise LockHeld(path, describe_holder(held))
            self._put(path, body)
        try:
            yield
        finally:
            if (self._holder(path) or {}).get("run") == holder["run"]:
                self.remove(path)

    def unexclusive_note(self) -> str:
        return (
            f"{self.root}: the store does not honour conditional PUTs (If-None-Match), so its lock cannot keep out "
            "a run started elsewhere at the same moment; relying on the live-registry guards"
        )

    def break_lock(self, path: str, run: str) -> bool:
        """Remove the lock if `run` holds it; False when no lock is there. OSError when another run holds it."""
        held = self._holder(path)
        if held is None:
            return False
        if held.get("run") != run:
            raise OSError(errno.EPERM, f"{self.root}/{path}: held by {held.get('run', 'an unknown run')}, not {run}")
        self.remove(path)
        return True

    # The journal.

    def open_journal(self, path: str, *, new: bool) -> Journal:
        """`path` becomes a prefix of parts `<path>/<n>`, one object per append: an append is one PUT."""
        node = self._find(path)
        if node is not None and not isinstance(node, dict):
            raise OSError(errno.EEXIST, f"{self.root}/{path}: an object, not a journal", path)
        if new and node:
            raise OSError(errno.EEXIST, f"{self.root}/{path}: exists", path)
        parts = [int(name) for name in (node or {}) if name.isdigit()]
        return _S3Journal(self, path, max(parts, default=0) + 1)


def describe_holder(holder: dict | None) -> str:
    """Who holds a lock, and since when, for the refusal: one line."""
    if not holder:
        return "its holder cannot be read"
    since = holder.get("since", "")
    try:
        taken = datetime.strptime(since, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        age = f", {_age((datetime.now(timezone.utc) - taken).total_seconds())} ago"
    except (TypeError, ValueError):
        age = ""
    run = holder.get("run", "?")
    gone = " (gone: no such process here)" if holder.get("host") == socket.gethostname() and not _alive(holder.get("pid")) else ""
    return (f"held by {run} (host {holder.get('host', '?')}, pid {holder.get('pid', '?')}{gone}) since {since}{age}; "
            f"if that run is gone: --break-lock {run}")


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return True  # not known: said to be alive, never the other way round
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


@dataclass(slots=True)
class _S3Journal:
    store: S3Store
    path: str
    next_part: int

    def append(self, data: bytes) -> None:
        self.store._put(f"{self.path}/{self.next_part:08d}", data)
        self.next_part += 1
        self.store._changed("journal")

    def close(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class _S3Reader:
    """Reads a blob with one GET, or one larger than `RANGE_BYTES` with ranged GETs on `parts`, up to
    `RANGE_AHEAD` of them ahead of the hashing; `in_flight` bounds the parts held across all blobs
    (each is held whole until hashed: at most the store's jobs times `RANGE_BYTES` in memory)."""

    store: S3Store
    parts: ThreadPoolExecutor
    in_flight: threading.BoundedSemaphore

    def digest(self, directory: str, below: str, algorithm: str, buffer: memoryview, progress: Progress) -> bytes:
        store = self.store
        path = f"{directory}/{below}"
        hasher = new_hasher(algorithm)
        try:
            size = store._object(path)[0]
            if size > RANGE_BYTES:
                self._ranged(store.prefix + path, size, hasher, progress)
                return hasher.digest()
            store.requests.add("gets")
            body = store.client.get_object(Bucket=store.location.bucket, Key=store.prefix + path)["Body"]
            try:
                while chunk := body.read(len(buffer)):
                    hasher.update(chunk)
                    progress(len(chunk))
            finally:
                body.close()
        except _client_errors() as error:
            raise as_os_error(error, f"{store.root}/{path}") from None
        return hasher.digest()

    def _part(self, key: str, start: int, end: int) -> bytes:
        self.store.requests.add("gets")
        answer = self.store.client.get_object(Bucket=self.store.location.bucket, Key=key, Range=f"bytes={start}-{end - 1}")
        data = answer["Body"].read()
        if len(data) != end - start:
            raise OSError(errno.EIO, f"s3://{self.store.location.bucket}/{key}: bytes {start}-{end - 1}: {len(data)} bytes came")
        return data

    def _ranged(self, key: str, size: int, hasher, progress: Progress) -> None:
        starts = iter(range(0, size, RANGE_BYTES))
        ahead: deque = deque()
        try:
            while True:
                # The first part waits for room; more go ahead only while there is room, so no reader
                # holding parts waits on others that do.
                while len(ahead) < RANGE_AHEAD and self.in_flight.acquire(blocking=not ahead):
                    start = next(starts, None)
                    if start is None:
                        self.in_flight.release()
                        break
                    ahead.append(self.parts.submit(self._part, key, start, min(size, start + RANGE_BYTES)))
                if not ahead:
                    return
                arriving = ahead.popleft()
                try:
                    data = arriving.result()
                finally:
                    self.in_flight.release()
                hasher.update(data)
                progress(len(data))
        finally:
            for pending in ahead:
                pending.cancel()
                self.in_flight.release()
