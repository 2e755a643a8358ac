"""What was pulled, from the registry's own request log: the record `retain --keep-pulled-within` reads.

The registry keeps no pull times; its log does. distribution 2.8 logs one "response completed" line per
request answered 2xx or 3xx (registry/handlers/app.go), at info level, through logrus with the
`log.formatter` of its config:

    text      time="2026-12-02T09:09:06.205728718Z" level=info msg="response completed" ...
              http.request.method=GET ... http.request.uri=/v2/lib/app/manifests/v1 ... http.response.status=200
    json      {"http.request.method":"GET","http.request.uri":"/v2/lib/app/manifests/v1",
               "http.response.status":200,"msg":"response completed","time":"2026-12-02T09:08:55.10338608Z",...}
    logstash  as json, with "@timestamp" for "time" and "message" for "msg"

and, unless `log.accesslog.disabled`, the access log on stdout in Apache combined format:

    127.0.0.1 - - [02/Dec/2026:09:08:55 +0000] "GET /v2/lib/app/manifests/v1 HTTP/1.1" 200 402 "" "skopeo/1.9.3"

2.8 puts no `vars.name`/`vars.reference` on the completed line, so the repository and the reference are
read from the URI, `/v2/<name>/manifests/<tag or digest>`. A pull is a GET or HEAD of a manifest answered
2xx. A pull by tag does not log the digest it resolved to.

Logs are large: files are read line by line (gzip'd rotated files too, told by their first bytes), and only
lines naming `/manifests/` are parsed, but for each file's first dated line: the registry appends, so that
line is the file's earliest, and the earliest of all files says how far back the logs reach.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone

from . import layout
from .layout import Digest

COMPLETED = "response completed"
PULL_METHODS = frozenset({"GET", "HEAD"})
_GZIP_MAGIC = b"\x1f\x8b"

_URI = re.compile(r"/v2/(.+)/manifests/([^/?#]+)(?:[?#].*)?")
_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|z|[+-]\d\d:?\d\d)?")
_TEXT_PAIR = re.compile(r'([^\s=]+)=("(?:[^"\\]|\\.)*"|\S*)')
_COMBINED = re.compile(
    r'\S+ \S+ (?:"(?:[^"\\]|\\.)*"|\S+) \[(\d\d)/(\w{3})/(\d{4}):(\d\d):(\d\d):(\d\d) ([+-]\d{4})\] '
    r'"(\S+) (\S+)[^"]*" (\d{3}) '
)
_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                                       "Dec"), 1)}


class LogError(Exception):
    """A log file that cannot be read (missing, unreadable, a broken gzip stream): one line, operational."""


@dataclass(frozen=True, slots=True)
class Request:
    """One request line of the log: when, how, what, and the answer."""

    time: float  # seconds since the epoch
    method: str
    uri: str
    status: int


@dataclass(frozen=True, slots=True)
class Pull:
    time: float
    repository: str
    tag: str | None
    digest: Digest | None


@dataclass(slots=True)
class Pulls:
    """The last pull of each tag and of each manifest pulled by digest, and how far back the logs reach."""

    tags: dict[tuple[str, str], float] = field(default_factory=dict)
    digests: dict[tuple[str, Digest], float] = field(default_factory=dict)
    earliest: float | None = None  # the earliest dated line of all the logs read; None: none was dated
    pulls: int = 0  # pull lines counted
    files: list[str] = field(default_factory=list)

    def add(self, pull: Pull) -> None:
        self.pulls += 1
        if pull.tag is not None:
            key = (pull.repository, pull.tag)
            self.tags[key] = max(pull.time, self.tags.get(key, pull.time))
        elif pull.digest is not None:
            key2 = (pull.repository, pull.digest)
            self.digests[key2] = max(pull.time, self.digests.get(key2, pull.time))

    def dated(self, when: float) -> None:
        self.earliest = when if self.earliest is None else min(self.earliest, when)

    def covers(self, since: float) -> bool:
        """Whether the logs reach back to `since` (their earliest line is not later)."""
        return self.earliest is not None and self.earliest <= since


# Times.


def parse_time(text: str) -> float | None:
    """RFC 3339 with any fraction (Go writes nanoseconds), as seconds since the epoch; None if not one."""
    found = _RFC3339.fullmatch(text.strip())
    if found is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = found.groups()
    try:
        when = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=timezone.utc)
    except ValueError:
        return None
    seconds = when.timestamp() + (float("0." + fraction) if fraction else 0.0)
    if zone and zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        seconds -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return seconds


def _combined_time(day: str, month: str, year: str, hour: str, minute: str, second: str, zone: str) -> float | None:
    number = _MONTHS.get(month)
    if number is None:
        return None
    try:
        when = datetime(int(year), number, int(day), int(hour), int(minute), int(second), tzinfo=timezone.utc)
    except ValueError:
        return None
    sign = 1 if zone[0] == "+" else -1
    return when.timestamp() - sign * (int(zone[1:3]) * 3600 + int(zone[3:5]) * 60)


# Lines.


def parse_line(line: str) -> tuple[float | None, Request | None]:
    """A log line's time (None: not a line of the registry's), and the request it completed, if it is one."""
    text = line.strip()
    if text.startswith("{"):
        return _json_line(text)
    if text.startswith("time="):
        return _text_line(text)
    found = _COMBINED.match(text)
    if found is None:
        return None, None
    when = _combined_time(*found.groups()[:7])
    if when is None:
        return None, None
    method, uri, status = found.group(8), found.group(9), int(found.group(10))
    return when, Request(when, method, uri, status)


def _json_line(text: str) -> tuple[float | None, Request | None]:
    try:
        record = json.loads(text)
    except ValueError:
        return None, None
    if not isinstance(record, dict):
        return None, None
    stamp = record.get("time", record.get("@timestamp"))
    when = parse_time(stamp) if isinstance(stamp, str) else None
    if when is None:
        return None, None
    message = record.get("msg", record.get("message"))
    if message != COMPLETED:
        return when, None
    return when, _request(when, record.get("http.request.method"), record.get("http.request.uri"),
                          record.get("http.response.status"))


def _text_line(text: str) -> tuple[float | None, Request | None]:
    fields = {key: _unquote(value) for key, value in _TEXT_PAIR.findall(text)}
    when = parse_time(fields.get("time", ""))
    if when is None:
        return None, None
    if fields.get("msg") != COMPLETED:
        return when, None
    return when, _request(when, fields.get("http.request.method"), fields.get("http.request.uri"),
                          fields.get("http.response.status"))


def _unquote(value: str) -> str:
    """A logrus text value: bare, or quoted as Go's %q quotes it."""
    if not value.startswith('"'):
        return value
    try:
        return json.loads(value)
    except ValueError:  # Go escapes JSON has not (\x.., \a, \v): keep what is between the quotes
        return value[1:-1]


def _request(when: float, method: object, uri: object, status: object) -> Request | None:
    if not isinstance(method, str) or not isinstance(uri, str):
        return None
    try:
        code = int(status)  # a number in json, text in the text formatter
    except (TypeError, ValueError):
        return None
    return Request(when, method, uri, code)


def pull_of(request: Request) -> Pull | None:
    """The pull a request is: a GET or HEAD of `/v2/<name>/manifests/<reference>` answered 2xx."""
    if request.method not in PULL_METHODS or not 200 <= request.status < 300:
        return None
    found = _URI.fullmatch(request.uri)
    if found is None:
        return None
    name, reference = found.groups()
    if not all(layout.valid_repository_component(c) for c in name.split("/")):
        return None
    if ":" in reference:
        digest = layout.parse_digest(reference)
        return Pull(request.time, name, None, digest) if digest is not None else None
    return Pull(request.time, name, reference, None) if layout.valid_tag(reference) else None


# Files.


def read_lines(lines: Iterable[str], into: Pulls) -> None:
    """Count the pulls of one file's lines into `into`; its first dated line is its earliest."""
    first = True
    for line in lines:
        if first or "/manifests/" in line:
            when, request = parse_line(line)
            if when is not None and first:
                into.dated(when)
                first = False
            if request is not None:
                pull = pull_of(request)
                if pull is not None:
                    into.add(pull)


def open_log(path: str) -> Iterator[str]:
    """The lines of a log file, gunzipped when it is gzip'd (told by its first bytes, not its name)."""
    try:
        raw = open(path, "rb")
    except OSError as error:
        raise LogError(f"{path}: cannot read: {error.strerror}") from None
    with raw:
        try:
            packed = raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw) if packed else raw
            yield from io.TextIOWrapper(stream, encoding="utf-8", errors="replace")
        except (OSError, EOFError, zlib.error) as error:
            raise LogError(f"{path}: cannot read: {getattr(error, 'strerror', None) or error}") from None


def read_logs(paths: Iterable[str]) -> Pulls:
    pulls = Pulls()
    for path in paths:
        read_lines(open_log(path), pulls)
        pulls.files.append(path)
    return pulls
