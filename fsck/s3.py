"""A registry's storage in an S3 bucket, read as a `Store` (the registry's `s3` driver layout).

Keys are the file-system layout below `<rootdirectory without its leading />/docker/registry/v2/`;
a "directory" is only a prefix of keys. The walk in `scan` asks for one directory at a time, as
the registry's own GC does on S3 (one or more requests per directory: days on a large bucket).
Here the bucket is listed once, without a delimiter, in pages, over contiguous key ranges (a range
per blob fan-out prefix `blobs/sha256/00`..`ff`, one per first character of a repository name) on a
bounded pool of threads, into a tree in memory (each key's size, ETag and time) from which `list`
answers directory by directory: every request after that is a GET of an object's content.

A link whose listing shows the size of `sha256:<hex>` and, as ETag, the MD5 of the text its path
implies (a revision, tag-index or sha256 `_layers` link) is as good as read: S3's ETag of a
single-part upload without SSE-KMS is the MD5 of the content (an ETag with a `-N` suffix, a
multipart upload's, is not, nor is a KMS one, which never equals the MD5 but by chance). Only a
tag's `current` link, the manifests, and the links the listing cannot vouch for are fetched.

Reading only: the store refuses every change (repair on a bucket is not there yet). Errors are
`OSError`, with the service's one-line message as `strerror`.
"""

from __future__ import annotations

import errno
import hashlib
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import ClassVar

from .store import REMOTE_JOBS, Capabilities, Concurrency, EntryKind, Journal, PoolKind, Progress, Reader, Stat, Store

V2_PREFIX = "docker/registry/v2/"
PAGE_KEYS = 1000  # S3's most per page
_HEX = "0123456789abcdef"
_NAME_STARTS = "0123456789abcdefghijklmnopqrstuvwxyz"  # a repository name's first character: [a-z0-9]
_LINK_BYTES = len("sha256:") + 64
# Links whose content is the digest in their own path (not `current`, which names its tag's target).
_SELF_NAMING_LINK = re.compile(
    r"(?:/_layers|/_manifests/revisions|/_manifests/tags/[^/]+/index)/sha256/([0-9a-f]{64})/link$"
)
_NOT_YET = "changing a registry on S3 is not supported yet (audit only)"


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
    return boto3.session.Session().client(
        "s3", endpoint_url=location.endpoint_url, region_name=location.region or None,
        aws_access_key_id=location.access_key or None, aws_secret_access_key=location.secret_key or None,
        config=Config(**options),
    )


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
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, kind: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, kind, getattr(self, kind) + n)

    def as_dict(self) -> dict[str, int]:
        return {"list_pages": self.list_pages, "gets": self.gets, "links_vouched": self.links_vouched,
                "empty_objects": self.empty_objects}


def key_ranges(v2_prefix: str) -> list[tuple[str, str | None]]:
    """Contiguous ranges [start, end) that together hold every key below `v2_prefix`, each once."""
    bounds = [f"{v2_prefix}blobs/sha256/{a}{b}" for a in _HEX for b in _HEX][1:]
    bounds += [f"{v2_prefix}repositories/{c}" for c in _NAME_STARTS[1:]]
    starts = [v2_prefix, *bounds]
    return list(zip(starts, [*bounds, None], strict=True))


def _just_before(key: str) -> str:
    """A key that sorts after every key below `key` (for StartAfter, which is exclusive); `key` ends in ASCII."""
    return key[:-1] + chr(ord(key[-1]) - 1) + "\U0010ffff"


class S3Store:
    """The registry's keys in `location`, listed once on first use; `requests` counts what it asked."""

    capabilities: ClassVar[Capabilities] = Capabilities(has_directories=False, has_symlinks=False, atomic_rename=False)

    def __init__(self, location: Location, jobs: int = REMOTE_JOBS, client=None) -> None:
        self.location = location
        self.root = location.v2_address
        self.jobs = jobs
        self.prefix = location.v2_prefix
        self.requests = Requests()
        self._client = client
        self._client_lock = threading.Lock()
        self._tree: dict | None = None
        self._tree_lock = threading.Lock()

    @property
    def client(self):
        with self._client_lock:
            if self._client is None:
                self._client = make_client(self.location, max(10, self.jobs))
            return self._client

    # Listing

    def probe(self) -> int:
        """One page of one key: whether the bucket answers with these credentials; how many keys it showed."""
        try:
            answer = self.client.list_objects_v2(Bucket=self.location.bucket, Prefix=self.prefix, MaxKeys=1)
        except _client_errors() as error:
            raise as_os_error(error, f"s3://{self.location.bucket}") from None
        self.requests.add("list_pages")
        return int(answer.get("KeyCount", len(answer.get("Contents", ()))))

    def _list_range(
        self, after: str | None, end: str | None, pages: int | None = None
    ) -> tuple[list[tuple[str, int, str, float]], bool]:
        """The keys after `after` (None: from the first) and before `end` (None: to the last), up to `pages`
        pages; and whether keys of the range are left."""
        arguments: dict = {"Bucket": self.location.bucket, "Prefix": self.prefix, "MaxKeys": PAGE_KEYS}
        if after is not None:
            arguments["StartAfter"] = after
        found = []
        skip = len(self.prefix)
        while True:
            try:
                page = self.client.list_objects_v2(**arguments)
            except _client_errors() as error:
                raise as_os_error(error, f"s3://{self.location.bucket}/{self.prefix}") from None
            self.requests.add("list_pages")
            for item in page.get("Contents", ()):
                key = item["Key"]
                if end is not None and key >= end:
                    return found, False
                found.append((key[skip:], item["Size"], item["ETag"], item["LastModified"].timestamp()))
            if not page.get("IsTruncated"):
                return found, False
            if pages is not None:
                pages -= 1
                if pages == 0:
                    return found, True
            arguments["ContinuationToken"] = page["NextContinuationToken"]
            arguments.pop("StartAfter", None)

    def _build(self) -> dict:
        # A first page from the start: a small registry is all there. Otherwise the rest, from the last key
        # seen, in ranges on the pool.
        first, more = self._list_range(None, None, pages=1)
        parts = [first]
        if more:
            last = self.prefix + first[-1][0]
            ranges = [
                (last if start <= last else _just_before(start), end)
                for start, end in key_ranges(self.prefix)
                if end is None or end > last
            ]
            with ThreadPoolExecutor(min(self.jobs, len(ranges)), thread_name_prefix="s3-list") as pool:
                parts += [found for found, _ in pool.map(lambda r: self._list_range(*r), ranges)]
        top: dict = {}
        for part in parts:  # in key order: every listing then comes in S3's order
            for relative, size, etag, mtime in part:
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
            implied = _SELF_NAMING_LINK.search(path)
            if implied is not None:
                text = b"sha256:" + implied.group(1).encode()
                if hashlib.md5(text, usedforsecurity=False).digest() == etag:
                    self.requests.add("links_vouched")
                    return text[:limit]
        return self._get(path, limit if limit < size else None)

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
        self._object(path)
        yield from self._get(path, None).splitlines(keepends=True)

    def stat(self, path: str, *, follow_symlinks: bool = False) -> Stat | None:
        node = self._find(path)
        if node is None:
            return None
        if isinstance(node, dict):
            return Stat(EntryKind.DIR, 0, _newest(node), 0o755, 0, 0)
        return Stat(EntryKind.FILE, node[0], node[2], 0o644, 0, 0)

    @contextmanager
    def reader(self, held_open: Iterable[str]) -> Iterator[Reader]:
        yield _S3Reader(self)

    def linked_parents(self, path: str) -> list[str]:
        return []  # a bucket has no links

    def sibling(self, address: str) -> Store:
        raise OSError(errno.EROFS, _NOT_YET, address)

    def resolve(self, address: str) -> str:
        return address

    def real_path(self, path: str) -> str:
        return f"{self.root}/{path}" if path else self.root

    def volume(self, path: str) -> int | None:
        return 0 if self._find(path) is not None else None

    def shares_volume(self, other: Store) -> bool:
        return isinstance(other, S3Store) and other.location.bucket == self.location.bucket

    # Changing: not yet on a bucket.

    def _refuse(self, path: str = "") -> OSError:
        return OSError(errno.EROFS, _NOT_YET, path)

    def make_dir(self, path: str, mode: int = 0o777, *, parents: bool = False, exist_ok: bool = False) -> None:
        raise self._refuse(path)

    def move(self, path: str, into: Store, to: str) -> None:
        raise self._refuse(path)

    def copy(self, path: str, into: Store, to: str) -> None:
        raise self._refuse(path)

    def write_atomically(
        self, path: str, data: bytes, *, staging: tuple[Store, str], siblings_in: Sequence[str],
        anywhere_below: Sequence[str],
    ) -> set[str]:
        raise self._refuse(path)

    def remove(self, path: str) -> None:
        raise self._refuse(path)

    def remove_dir(self, path: str) -> None:
        raise self._refuse(path)

    def remove_tree(self, path: str) -> None:
        raise self._refuse(path)

    def set_owner(self, path: str, mode: int, uid: int, gid: int) -> None:
        raise self._refuse(path)

    def sync_dir(self, path: str) -> None:
        raise self._refuse(path)

    def lock(self, path: str) -> AbstractContextManager[None]:
        raise self._refuse(path)

    def open_journal(self, path: str, *, new: bool) -> Journal:
        raise self._refuse(path)


@dataclass(frozen=True, slots=True)
class _S3Reader:
    store: S3Store

    def digest(self, directory: str, below: str, algorithm: str, buffer: memoryview, progress: Progress) -> bytes:
        store = self.store
        path = f"{directory}/{below}"
        hasher = hashlib.new(algorithm)
        try:
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
