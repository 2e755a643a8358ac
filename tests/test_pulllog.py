"""The registry's request log as the record of pulls: the line shapes Debian's docker-registry (distribution
2.8.2) writes with each formatter, copied from real runs (tests/test_retain.py reads logs the real registry
writes in the same test run), as table tests."""

import gzip
from datetime import datetime, timezone

import pytest

from fsck import layout, pulllog
from fsck.pulllog import LogError, Pull, Pulls, parse_line, parse_time, pull_of, read_lines, read_logs

DIGEST = "sha256:e7a80f6fda1a564c00a5a3dae028ff75544f8cc51796bc436a5fe0c37c45a2eb"
CHILD = "sha256:e1d205bb5d3aaa9e2b34608183181be75db4f4209ccf619cbc3bf8cce223fc35"


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


JSON_GET_BY_TAG = (
    '{"go.version":"go1.19.8","http.request.host":"127.0.0.1:56751","http.request.id":"b1b2d0f5-2edf-4da9-b6c4-'
    '005a48a74996","http.request.method":"GET","http.request.remoteaddr":"127.0.0.1:54060","http.request.uri":'
    '"/v2/lib/app/manifests/v1","http.request.useragent":"skopeo/1.9.3","http.response.contenttype":"application/'
    'vnd.oci.image.manifest.v1+json","http.response.duration":"1.296753ms","http.response.status":200,'
    '"http.response.written":402,"level":"info","msg":"response completed","time":"2026-12-02T09:08:55.10338608Z"}'
)
JSON_GET_BY_DIGEST = JSON_GET_BY_TAG.replace("/manifests/v1", f"/manifests/{DIGEST}")
JSON_PUT = JSON_GET_BY_TAG.replace('"GET"', '"PUT"').replace('"http.response.status":200', '"http.response.status":201')
JSON_NOT_FOUND = (
    '{"err.code":"manifest unknown","err.detail":"unknown tag=nope","err.message":"manifest unknown","go.version":'
    '"go1.19.8","http.request.host":"127.0.0.1:56751","http.request.id":"d90701f3-c959-405c-8a59-174c441336cc",'
    '"http.request.method":"GET","http.request.remoteaddr":"127.0.0.1:54374","http.request.uri":"/v2/lib/app/'
    'manifests/nope","http.request.useragent":"Python-urllib/3.11","http.response.contenttype":"application/json; '
    'charset=utf-8","http.response.duration":"1.096474ms","http.response.status":404,"http.response.written":94,'
    '"level":"error","msg":"response completed with error","time":"2026-12-02T09:08:55.47342301Z","vars.name":'
    '"lib/app","vars.reference":"nope"}'
)
JSON_LISTENING = (
    '{"go.version":"go1.19.8","instance.id":"1023e54e-1a62-408b-a754-b551c3769791","level":"info","msg":'
    '"listening on 127.0.0.1:41667","time":"2026-12-02T09:08:54.197281015Z","version":"2.8.2+ds1"}'
)
TEXT_GET_BY_TAG = (
    'time="2026-12-02T09:09:06.205728718Z" level=info msg="response completed" go.version=go1.19.8 '
    'http.request.host="127.0.0.1:54081" http.request.id=f384e14f-5f5e-4ccc-a36c-030d4eedac75 '
    'http.request.method=GET http.request.remoteaddr="127.0.0.1:60310" http.request.uri=/v2/lib/app/manifests/v1 '
    'http.request.useragent=skopeo/1.9.3 http.response.contenttype=application/vnd.oci.image.manifest.v1+json '
    'http.response.duration=3.193741ms http.response.status=200 http.response.written=402'
)
# logrus quotes a value with a `:` in it: a digest reference.
TEXT_GET_BY_DIGEST = TEXT_GET_BY_TAG.replace(
    "http.request.uri=/v2/lib/app/manifests/v1", f'http.request.uri="/v2/lib/mx/manifests/{CHILD}"'
)
TEXT_HEAD = TEXT_GET_BY_TAG.replace("method=GET", "method=HEAD")
LOGSTASH_GET = (
    '{"@timestamp":"2026-12-02T09:09:07.32452812Z","@version":"1","go.version":"go1.19.8","http.request.host":'
    '"127.0.0.1:41741","http.request.id":"ba5fc13a-bb82-4f4e-a59c-0c50e5c2c871","http.request.method":"GET",'
    '"http.request.remoteaddr":"127.0.0.1:34906","http.request.uri":"/v2/lib/app/manifests/v1",'
    '"http.request.useragent":"skopeo/1.9.3","http.response.contenttype":"application/vnd.oci.image.manifest.v1+json",'
    '"http.response.duration":"2.058648ms","http.response.status":200,"http.response.written":402,"level":"info",'
    '"message":"response completed"}'
)
ACCESS_GET = '127.0.0.1 - - [02/Dec/2026:09:08:55 +0000] "GET /v2/lib/app/manifests/v1 HTTP/1.1" 200 402 "" "skopeo/1.9.3"'
ACCESS_GET_DIGEST = ACCESS_GET.replace("/manifests/v1", f"/manifests/{DIGEST}")
ACCESS_404 = '127.0.0.1 - - [02/Dec/2026:09:08:55 +0000] "GET /v2/lib/app/manifests/nope HTTP/1.1" 404 94 "" "curl/8"'


def tag_pull(when: str, repository: str, tag: str) -> Pull:
    return Pull(at(when), repository, tag, None)


def digest_pull(when: str, repository: str, digest: str) -> Pull:
    return Pull(at(when), repository, None, layout.parse_digest(digest))


@pytest.mark.parametrize("line, pull", [
    (JSON_GET_BY_TAG, tag_pull("2026-12-02T09:08:55.103386", "lib/app", "v1")),
    (JSON_GET_BY_DIGEST, digest_pull("2026-12-02T09:08:55.103386", "lib/app", DIGEST)),
    (TEXT_GET_BY_TAG, tag_pull("2026-12-02T09:09:06.205729", "lib/app", "v1")),
    (TEXT_GET_BY_DIGEST, digest_pull("2026-12-02T09:09:06.205729", "lib/mx", CHILD)),
    (TEXT_HEAD, tag_pull("2026-12-02T09:09:06.205729", "lib/app", "v1")),
    (LOGSTASH_GET, tag_pull("2026-12-02T09:09:07.324528", "lib/app", "v1")),
    (ACCESS_GET, tag_pull("2026-12-02T09:08:55", "lib/app", "v1")),
    (ACCESS_GET_DIGEST, digest_pull("2026-12-02T09:08:55", "lib/app", DIGEST)),
], ids=["json-tag", "json-digest", "text-tag", "text-digest-quoted", "text-head", "logstash", "access-tag",
        "access-digest"])
def test_a_pull_line_of_each_format_is_the_pull_it_logs(line, pull):
    when, request = parse_line(line)
    assert request is not None
    found = pull_of(request)
    assert found == Pull(pytest.approx(pull.time, abs=1e-6), pull.repository, pull.tag, pull.digest)
    assert when == found.time


@pytest.mark.parametrize("line", [JSON_PUT, JSON_NOT_FOUND, JSON_LISTENING, ACCESS_404,
                                  ACCESS_GET.replace('"GET ', '"DELETE ').replace(" 200 ", " 202 "),
                                  JSON_GET_BY_TAG.replace("/manifests/v1", "/blobs/" + DIGEST),
                                  JSON_GET_BY_TAG.replace("/manifests/v1", "/manifests/sha256:abc"),
                                  JSON_GET_BY_TAG.replace("/v2/lib/app/", "/v2/Lib/App/"),
                                  JSON_GET_BY_TAG.replace('"http.response.status":200', '"http.response.status":307'),
                                  TEXT_GET_BY_TAG.replace('msg="response completed"', 'msg="authorized request"')],
                         ids=["put", "not-found", "listening", "access-404", "delete", "blob", "short-digest",
                              "uppercase-name", "redirect", "other-message"])
def test_lines_that_are_no_pull_count_for_nothing(line):
    _when, request = parse_line(line)
    assert request is None or pull_of(request) is None


@pytest.mark.parametrize("line", ["", "panic: runtime error", "{not json", "[]", 'time=yesterday msg="x"',
                                  '{"time": 5, "msg": "response completed"}',
                                  '1.2.3.4 - - [32/Dec/2026:09:08:55 +0000] "GET /v2/a/manifests/v1 HTTP/1.1" 200 1 "" ""'])
def test_a_line_that_is_not_the_registry_s_has_no_time(line):
    assert parse_line(line) == (None, None)


def test_a_dated_line_that_is_no_request_still_gives_the_time():
    when, request = parse_line(JSON_LISTENING)
    assert request is None and when == pytest.approx(at("2026-12-02T09:08:54.197281"), abs=1e-6)


@pytest.mark.parametrize("text, expected", [
    ("2026-12-02T09:08:55.10338608Z", "2026-12-02T09:08:55.103386"),
    ("2026-12-02T09:08:55Z", "2026-12-02T09:08:55"),
    ("2026-12-02T10:08:55+01:00", "2026-12-02T09:08:55"),
    ("2026-12-02T04:08:55.5-05:00", "2026-12-02T09:08:55.5"),
])
def test_rfc3339_times_with_nanoseconds_and_offsets(text, expected):
    assert parse_time(text) == pytest.approx(at(expected), abs=1e-6)


@pytest.mark.parametrize("text", ["", "2026-13-02T09:08:55Z", "yesterday", "2026-12-02"])
def test_what_is_no_rfc3339_time_is_none(text):
    assert parse_time(text) is None


def test_the_access_log_s_zone_is_applied():
    line = ACCESS_GET.replace("09:08:55 +0000", "10:08:55 +0100")
    assert parse_line(line)[0] == at("2026-12-02T09:08:55")


def test_the_last_pull_of_each_tag_and_digest_is_kept_and_the_first_line_dates_the_file():
    pulls = Pulls()
    later = JSON_GET_BY_TAG.replace("09:08:55.10338608Z", "11:00:00Z")
    read_lines([JSON_LISTENING, later, JSON_GET_BY_TAG, JSON_GET_BY_DIGEST, JSON_PUT, JSON_NOT_FOUND], pulls)
    assert pulls.tags == {("lib/app", "v1"): at("2026-12-02T11:00:00")}
    assert pulls.digests == {("lib/app", layout.parse_digest(DIGEST)): pytest.approx(at("2026-12-02T09:08:55.103386"))}
    assert pulls.earliest == pytest.approx(at("2026-12-02T09:08:54.197281"))
    assert pulls.pulls == 3


def test_undated_lines_before_the_first_dated_one_are_skipped():
    pulls = Pulls()
    read_lines(["garbage", "", TEXT_GET_BY_TAG], pulls)
    assert pulls.earliest == pytest.approx(at("2026-12-02T09:09:06.205729"))


@pytest.mark.parametrize("earliest, since, covered", [
    ("2026-12-02T08:00:00", "2026-12-02T08:00:00", True),
    ("2026-12-02T08:00:00", "2026-12-02T09:00:00", True),
    ("2026-12-02T09:00:01", "2026-12-02T09:00:00", False),
])
def test_logs_cover_a_window_only_when_their_earliest_line_is_not_later_than_its_start(earliest, since, covered):
    pulls = Pulls(earliest=at(earliest))
    assert pulls.covers(at(since)) is covered


def test_logs_with_no_dated_line_cover_nothing():
    assert not Pulls().covers(0.0)


def test_files_plain_and_gzipped_whatever_their_names_are_read_together(tmp_path):
    plain = tmp_path / "registry.log"
    plain.write_text(TEXT_GET_BY_TAG + "\n")
    rotated = tmp_path / "registry.log.1"  # gzip'd though its name does not say so
    rotated.write_bytes(gzip.compress((JSON_LISTENING + "\n" + JSON_GET_BY_DIGEST + "\n").encode()))
    pulls = read_logs([str(plain), str(rotated)])
    assert set(pulls.tags) == {("lib/app", "v1")}
    assert set(pulls.digests) == {("lib/app", layout.parse_digest(DIGEST))}
    assert pulls.earliest == pytest.approx(at("2026-12-02T09:08:54.197281"))


def test_a_missing_file_and_a_broken_gzip_stream_are_one_line_errors(tmp_path):
    with pytest.raises(LogError, match="missing.log: cannot read: No such file"):
        read_logs([str(tmp_path / "missing.log")])
    broken = tmp_path / "broken.log.gz"
    broken.write_bytes(gzip.compress(((JSON_GET_BY_TAG + "\n") * 200).encode())[:60])
    with pytest.raises(LogError, match="broken.log.gz: cannot read"):
        read_logs([str(broken)])


def test_non_utf8_bytes_do_not_stop_the_reading(tmp_path):
    log = tmp_path / "registry.log"
    log.write_bytes(b"\xff\xfe garbage\n" + JSON_GET_BY_TAG.encode() + b"\n")
    assert set(read_logs([str(log)]).tags) == {("lib/app", "v1")}


def test_lines_without_manifests_are_not_parsed_after_the_first(monkeypatch):
    parsed = []
    real = pulllog.parse_line
    monkeypatch.setattr(pulllog, "parse_line", lambda line: parsed.append(line) or real(line))
    blob = JSON_GET_BY_TAG.replace("/manifests/v1", "/blobs/" + DIGEST)
    read_lines([JSON_LISTENING, blob, blob, JSON_GET_BY_TAG], Pulls())
    assert parsed == [JSON_LISTENING, JSON_GET_BY_TAG]
