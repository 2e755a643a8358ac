"""The audit on S3: a real object store (OpenStack Swift with s3api, tests/harness/swift.py), written
by the registry's own s3 driver (Debian's docker-registry 2.8) through skopeo pushes.

Each scenario is pushed twice, deterministically the same images: into its own rootdirectory of a
bucket, and into a directory by a registry on the filesystem driver. On the bucket, `blob-orphan`
must be what `garbage-collect --dry-run` deletes there, and every finding must be the one the
filesystem audit of the same scenario makes, id by id, except those a bucket cannot hold (empty
directories: a prefix ends with its last key).
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest
from clirun import REPO, audit_records, run_cli

from fsck import checks, layout, manifests, report, s3, service
from fsck.catalogue import NOT_ON_BUCKETS
from tests.harness.registry import S3Storage, garbage_collect, parse_gc_output, write_config
from tests.harness.s3_fixtures import BUCKET, Built, Pushed, storage_of
from tests.harness.swift import ACCESS_KEY, SECRET_KEY, Swift

pytestmark = pytest.mark.registry

TOPICS = ("plain_tags", "deleted_manifests", "multiarch", "orphans")
# What a bucket cannot hold (a directory exists only while a key is below it), as the catalogue says.
NOT_ON_S3 = frozenset(finding_id.value for finding_id in NOT_ON_BUCKETS)


def _audit(target: service.Target) -> tuple[list[dict], service.Loaded]:
    loaded = service.load(target)
    audit = service.judge(loaded, checks.Policy(now=datetime.now(timezone.utc))).released()
    return [report.finding_record(f) for f in audit.findings], loaded


def _s3_records(pushed: Pushed) -> tuple[list[dict], s3.Requests]:
    records, loaded = _audit(service.resolve_target(None, str(pushed.config)))
    return records, loaded.store.requests


def _comparable(records: list[dict]) -> list[tuple]:
    return sorted(tuple(sorted((k, str(v)) for k, v in r.items())) for r in records if r["id"] not in NOT_ON_S3)


def _digests(records: list[dict], finding_id: str) -> set[str]:
    return {r["digest"] for r in records if r["id"] == finding_id}


# -- the proof, per scenario ------------------------------------------------------------------------


@pytest.mark.parametrize("topic", TOPICS)
def test_blob_orphan_is_what_garbage_collect_deletes_on_the_bucket(built: Built, topic: str) -> None:
    pushed = built(topic)
    records, _ = _s3_records(pushed)
    gc = garbage_collect(pushed.config, dry_run=True)
    assert gc.returncode == 0, gc.stderr
    eligible = parse_gc_output(gc.stdout).eligible_blobs
    assert _digests(records, "blob-orphan") == eligible
    assert pushed.scenario.orphan_blobs <= eligible
    assert bool(eligible) == (topic in ("deleted_manifests", "orphans"))


@pytest.mark.parametrize("topic", TOPICS)
def test_findings_on_the_bucket_are_the_file_system_audits_id_by_id(built: Built, topic: str) -> None:
    pushed = built(topic)
    on_bucket, loaded = _audit(service.resolve_target(None, str(pushed.config)))
    requests = loaded.store.requests
    on_disk = audit_records(pushed.disk_root)
    assert _comparable(on_bucket) == _comparable(on_disk)
    assert not {r["id"] for r in on_bucket} & NOT_ON_S3
    if topic == "deleted_manifests":  # deleting a manifest leaves empty directories on disk, none on S3
        assert {r["id"] for r in on_disk} & NOT_ON_S3
    # One page lists a small bucket; no link that names its own path's digest is fetched, nor a tag's current
    # link (its ETag is the MD5 of one of its index's digests).
    keys = built.swift.keys(BUCKET, pushed.storage.rootdirectory.strip("/") + "/")
    self_naming = [k for k in keys if s3._SELF_NAMING_LINK.search(k)]
    current = [k for k in keys if k.endswith("/current/link")]
    assert requests.list_pages == 1
    assert requests.links_vouched == len(self_naming) + len(current) > len(current) > 0
    stored_manifests = {
        layout.format_digest(d) for d in manifests.named_by_links(loaded.inventory) & loaded.inventory.blobs.keys()
    }
    assert stored_manifests >= {d for r in pushed.scenario.revisions.values() for d in r}
    assert requests.gets == len(stored_manifests)


def test_the_audit_writes_nothing_into_the_bucket(built: Built) -> None:
    pushed = built("deleted_manifests")
    before = built.swift.keys(BUCKET)
    result = run_cli("audit", "--config", str(pushed.config), "--json")
    assert result.returncode == 4, result.stderr
    assert built.swift.keys(BUCKET) == before


# Keys a damaged or hand-edited bucket can hold beside the layout: objects that are also prefixes, a
# folder marker, names outside the fan-out, keys before and after every part of the layout.
ODD_KEYS = (
    "0-before-blobs", "blobs/sha256/ab", "blobs/sha256/zz/stray", "blobs/sha256/9g/x/data", "blobs/stray",
    "blobs/sha512/aa/x/data", "repositories/plain", "repositories/plain/app/_layers/sha256/",
    "repositories/plain.d/x", "repositories/~tilde/y", "zz-after-repositories", "blobs/sha256/ab/\u00e9/data",
)


@pytest.mark.parametrize("page_keys", [1, 2, 3, 7, 40])
def test_the_split_listing_finds_each_key_once_in_order(built: Built, page_keys: int, monkeypatch) -> None:
    """Small pages, so that every prefix is split: the listing on the pool is the bucket's plain listing,
    key for key in S3's order, odd keys included; and it lists few keys twice (a run's last page only)."""
    pushed = built("plain_tags")
    location = service.resolve_target(None, str(pushed.config)).s3
    odd_root = f"odd-listing/{page_keys}/"
    client = built.swift.client()
    for key in built.swift.keys(BUCKET, location.v2_prefix):
        client.copy_object(Bucket=BUCKET, Key=odd_root + key, CopySource={"Bucket": BUCKET, "Key": key})
    v2 = odd_root + location.v2_prefix
    for key in ODD_KEYS:
        client.put_object(Bucket=BUCKET, Key=v2 + key, Body=b"odd")
    expected = [(key[len(v2):], size, etag) for key, (size, etag) in built.swift.keys(BUCKET, v2).items()]
    store = s3.S3Store(location, jobs=4, prefix=v2)
    shown = 0
    lister = store.client.list_objects_v2

    def counting(**arguments):
        nonlocal shown
        page = lister(**arguments)
        shown += len(page.get("Contents", ()))
        return page

    monkeypatch.setattr(store.client, "list_objects_v2", counting)
    monkeypatch.setattr(s3, "PAGE_KEYS", page_keys)
    listed = [(relative, size, etag.strip('"')) for relative, size, etag, _ in store._listing()]
    assert listed == expected
    assert shown <= 1.5 * len(expected) + page_keys * store.requests.list_pages / 4, (shown, len(expected))
    assert store.tree()["blobs"]["sha256"]["\0ab"][0] == 3  # the object beside the prefix, kept


def test_a_small_registry_is_listed_in_one_page(built: Built) -> None:
    pushed = built("plain_tags")
    store = s3.S3Store(service.resolve_target(None, str(pushed.config)).s3)
    store.tree()
    assert store.requests.list_pages == 1


def test_every_store_of_a_run_shares_the_client_that_probed_the_bucket(built: Built) -> None:
    pushed = built("plain_tags")
    target = service.resolve_target(None, str(pushed.config))
    store = target.store()
    assert store.client is target.s3_client is not None
    assert service.quarantine_store(target, f"s3://{target.s3.bucket}/registry-fsck-quarantine").client is target.s3_client
    assert store.requests.list_pages == 0  # the probe's page is not the audit's: the report counts the audit's


def test_a_link_its_etag_cannot_vouch_for_is_read(built: Built, tmp_path: Path) -> None:
    """The same damage on the bucket and on disk: a revision link naming another digest (71 bytes: the
    size of a good one) is fetched, not vouched for, and found as on disk; so are a multipart link and a tag's
    current link naming a manifest outside its index."""
    pushed = built("plain_tags")
    client = built.swift.client()
    source = pushed.storage.rootdirectory.strip("/") + "/"
    damaged = "damaged/plain_tags/"
    for key in built.swift.keys(BUCKET, source):
        client.copy_object(Bucket=BUCKET, Key=damaged + key[len(source):], CopySource={"Bucket": BUCKET, "Key": key})
    disk = tmp_path / "root"
    shutil.copytree(pushed.disk_root, disk, symlinks=True)
    revisions = "docker/registry/v2/repositories/plain/app/_manifests/revisions/sha256/"
    named = sorted(p.name for p in (disk / revisions).iterdir())
    wrong = f"sha256:{named[1]}".encode()
    (disk / revisions / named[0] / "link").write_bytes(wrong)
    client.put_object(Bucket=BUCKET, Key=f"{damaged}{revisions}{named[0]}/link", Body=wrong)
    # A good link uploaded in parts: its ETag is no MD5 of its content.
    layer_dir = disk / "docker/registry/v2/repositories/plain/app/_layers/sha256"
    layer = sorted(p.name for p in layer_dir.iterdir())[0]
    key = f"{damaged}docker/registry/v2/repositories/plain/app/_layers/sha256/{layer}/link"
    upload = client.create_multipart_upload(Bucket=BUCKET, Key=key)
    part = client.upload_part(Bucket=BUCKET, Key=key, UploadId=upload["UploadId"], PartNumber=1,
                              Body=f"sha256:{layer}".encode())
    client.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload["UploadId"],
                                     MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]})
    assert "-" in built.swift.keys(BUCKET, key)[key][1]
    # A tag's current link naming a digest outside the tag's index: no index entry's MD5 vouches for it.
    tags = disk / "docker/registry/v2/repositories/plain/app/_manifests/tags"
    tag = sorted(tags.iterdir())[0]
    outside = next(name for name in named if not (tag / "index/sha256" / name).exists())
    (tag / "current/link").write_bytes(f"sha256:{outside}".encode())
    client.put_object(Bucket=BUCKET, Key=f"{damaged}{tag.relative_to(disk)}/current/link",
                      Body=f"sha256:{outside}".encode())

    location = s3.Location(BUCKET, "damaged/plain_tags", built.swift.endpoint, "us-east-1", ACCESS_KEY, SECRET_KEY)
    on_bucket, loaded = _audit(service.Target(location.root_address, location.v2_address, None, location))
    assert _comparable(on_bucket) == _comparable(audit_records(disk))
    assert any(r["id"] in ("link-mismatch", "link-invalid") for r in on_bucket)
    _, requests = _s3_records(pushed)
    assert loaded.store.requests.gets == requests.gets + 3  # the wrong revision link, the multipart one, the tag's


# -- targets and bad input --------------------------------------------------------------------------


def test_an_s3_url_with_the_standard_credential_chain(built: Built) -> None:
    pushed = built("orphans")
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1"}
    by_url = run_cli("audit", f"s3://{BUCKET}/scenarios/orphans", "--endpoint-url", built.swift.endpoint, "--json",
                     env=env)
    by_config = run_cli("audit", "--config", str(pushed.config), "--json")
    assert by_url.returncode == by_config.returncode == 4, by_url.stderr + by_config.stderr
    import orjson

    assert orjson.loads(by_url.stdout)["findings"] == orjson.loads(by_config.stdout)["findings"]
    assert orjson.loads(by_url.stdout)["v2"] == f"s3://{BUCKET}/scenarios/orphans/docker/registry/v2"


def test_environment_overrides_the_config_as_the_registry_applies_it(built: Built, tmp_path: Path) -> None:
    pushed = built("orphans")
    wrong = storage_of(built.swift, "/scenarios/orphans")
    config = write_config(tmp_path, tmp_path / "config.yml", s3=S3Storage(
        "http://127.0.0.1:1", "no-such-bucket", "nobody", "nothing", "/elsewhere"))
    env = {
        "REGISTRY_STORAGE_S3_REGIONENDPOINT": wrong.endpoint, "REGISTRY_STORAGE_S3_BUCKET": BUCKET,
        "REGISTRY_STORAGE_S3_ACCESSKEY": ACCESS_KEY, "REGISTRY_STORAGE_S3_SECRETKEY": SECRET_KEY,
        "REGISTRY_STORAGE_S3_ROOTDIRECTORY": "/scenarios/orphans",
    }
    result = run_cli("audit", "--config", str(config), "--json", env=env)
    assert result.returncode == 4, result.stderr
    assert run_cli("audit", "--config", str(pushed.config), "--json").stdout.split('"generated_at"')[0] == \
        result.stdout.split('"generated_at"')[0]


def _assert_one_line_exit_8(result, *needles: str) -> None:
    assert result.returncode == 8, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("registry-fsck: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"secretkey": "wrong"}, "access denied"),
        ({"accesskey": "test:nobody"}, "access denied"),
        ({"bucket": "no-such-bucket"}, "no such bucket"),
        ({"endpoint": "http://127.0.0.1:1"}, "cannot reach the store"),
        ({"rootdirectory": "/nothing/here"}, "not a registry's storage"),
    ],
)
def test_bad_s3_input_is_one_line_and_exit_8(swift: Swift, tmp_path: Path, change: dict, needle: str) -> None:
    storage = storage_of(swift, "/scenarios/none")
    fields = {"endpoint": storage.endpoint, "bucket": BUCKET, "accesskey": ACCESS_KEY, "secretkey": SECRET_KEY,
              "rootdirectory": "/scenarios/plain_tags", **change}
    config = write_config(tmp_path, tmp_path / "config.yml", s3=S3Storage(**fields))
    _assert_one_line_exit_8(run_cli("audit", "--config", str(config)), needle)


@pytest.mark.parametrize("driver", ["gcs", "azure", "swift"])
def test_other_drivers_are_not_supported_yet(tmp_path: Path, driver: str) -> None:
    config = tmp_path / "config.yml"
    config.write_text(f"storage:\n  {driver}:\n    bucket: x\n")
    _assert_one_line_exit_8(run_cli("audit", "--config", str(config)), f"storage driver {driver}", "not supported yet")


def test_the_dry_runs_and_runs_write_nothing_into_the_bucket(built: Built, tmp_path: Path) -> None:
    pushed = built("orphans")
    before = built.swift.keys(BUCKET)
    for command in (["repair", "--dry-run", "--untagged"], ["runs"], ["purge", "--all", "--dry-run"], ["du"], ["ls"]):
        result = run_cli(*command, "--config", str(pushed.config), cwd=tmp_path, env={"PYTHONPATH": str(REPO)})
        assert result.returncode in (0, 4), f"{command}: {result.stderr}"
    assert built.swift.keys(BUCKET) == before
    assert not list(tmp_path.iterdir())


def test_an_upload_without_startedat_is_as_old_as_its_newest_key(built: Built) -> None:
    """A prefix has no time of its own: an upload directory's is that of the newest key below it, as the
    mtime of a directory is on disk. Just written, it is undated, not stale."""
    pushed = built("orphans")
    client = built.swift.client()
    source = pushed.storage.rootdirectory.strip("/") + "/"
    copy = "uploads/orphans/"
    for key in built.swift.keys(BUCKET, source):
        client.copy_object(Bucket=BUCKET, Key=copy + key[len(source):], CopySource={"Bucket": BUCKET, "Key": key})
    upload = "a3f5d1c2-0b1e-4c7a-9d2f-6e8b7c5a4d3e"
    client.put_object(Bucket=BUCKET, Key=f"{copy}docker/registry/v2/repositories/orphan/app/_uploads/{upload}/data",
                      Body=b"x" * 100)
    location = s3.Location(BUCKET, "uploads/orphans", built.swift.endpoint, "us-east-1", ACCESS_KEY, SECRET_KEY)
    records, _ = _audit(service.Target(location.root_address, location.v2_address, None, location))
    about = [r for r in records if upload in r["path"]]
    assert [r["id"] for r in about] == ["upload-undated"], about


def test_verify_streams_every_blob_and_finds_a_corrupt_one_as_on_disk(built: Built, tmp_path: Path) -> None:
    pushed = built("orphans")
    client = built.swift.client()
    source = pushed.storage.rootdirectory.strip("/") + "/"
    copy = "verify/orphans/"
    keys = built.swift.keys(BUCKET, source)
    for key in keys:
        client.copy_object(Bucket=BUCKET, Key=copy + key[len(source):], CopySource={"Bucket": BUCKET, "Key": key})
    disk = tmp_path / "root"
    shutil.copytree(pushed.disk_root, disk, symlinks=True)
    blob = sorted(k[len(source):] for k in keys if k.endswith("/data"))[0]
    size = keys[source + blob][0]
    (disk / blob).write_bytes(b"\0" * size)  # same size, other content
    client.put_object(Bucket=BUCKET, Key=copy + blob, Body=b"\0" * size)
    location = s3.Location(BUCKET, "verify/orphans", built.swift.endpoint, "us-east-1", ACCESS_KEY, SECRET_KEY)
    loaded = service.load(service.Target(location.root_address, location.v2_address, None, location), verify_blobs=True)
    on_bucket = [report.finding_record(f) for f in service.judge(loaded, checks.Policy(now=datetime.now(timezone.utc))).findings]
    assert "blob-digest-mismatch" in {r["id"] for r in on_bucket}
    assert _comparable(on_bucket) == _comparable(audit_records(disk, verify=True))
    blobs = sum(1 for k in keys if k.endswith("/data"))
    assert loaded.store.requests.gets >= blobs


def test_verify_reads_a_large_blob_by_ranges_and_finds_a_change_in_its_last_part(
    built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ranges of 100 bytes, so that most blobs are read by ranged GETs: one GET per range, the findings
    those on disk, a changed last byte found."""
    pushed = built("orphans")
    client = built.swift.client()
    source = pushed.storage.rootdirectory.strip("/") + "/"
    copy = "verify-ranged/orphans/"
    keys = built.swift.keys(BUCKET, source)
    for key in keys:
        client.copy_object(Bucket=BUCKET, Key=copy + key[len(source):], CopySource={"Bucket": BUCKET, "Key": key})
    disk = tmp_path / "root"
    shutil.copytree(pushed.disk_root, disk, symlinks=True)
    blobs = {k[len(source):]: size for k, (size, _) in keys.items() if k.endswith("/data") and "/blobs/" in k}
    largest = max(blobs, key=blobs.get)
    assert blobs[largest] > 1000
    changed = bytearray((disk / largest).read_bytes())
    changed[-1] ^= 1
    (disk / largest).write_bytes(bytes(changed))
    client.put_object(Bucket=BUCKET, Key=copy + largest, Body=bytes(changed))
    monkeypatch.setattr(s3, "RANGE_BYTES", 100)
    location = s3.Location(BUCKET, "verify-ranged/orphans", built.swift.endpoint, "us-east-1", ACCESS_KEY, SECRET_KEY)
    target = service.Target(location.root_address, location.v2_address, None, location)
    plain = service.load(target).store.requests.gets
    loaded = service.load(target, verify_blobs=True)
    on_bucket = [report.finding_record(f) for f in service.judge(loaded, checks.Policy(now=datetime.now(timezone.utc))).findings]
    mismatched = [r for r in on_bucket if r["id"] == "blob-digest-mismatch"]
    assert [r["digest"] for r in mismatched] == ["sha256:" + largest.split("/")[-2]], mismatched
    assert _comparable(on_bucket) == _comparable(audit_records(disk, verify=True))
    ranges = sum(-(-size // 100) if size > 100 else 1 for size in blobs.values())
    assert loaded.store.requests.gets - plain == ranges


def test_the_text_report_on_a_bucket_suggests_the_repair(built: Built) -> None:
    pushed = built("deleted_manifests")
    result = run_cli("audit", "--config", str(pushed.config))
    assert result.returncode == 4, result.stderr
    assert "garbage" in result.stdout and "blob-orphan" in result.stdout
    assert "registry-fsck repair" in result.stdout


@pytest.mark.parametrize("command", [["du", "--json"], ["ls", "--json"]])
def test_du_and_ls_read_a_bucket_by_url_as_by_config(built: Built, command: list[str]) -> None:
    import orjson

    pushed = built("orphans")
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1"}
    by_url = run_cli(command[0], f"s3://{BUCKET}/scenarios/orphans", *command[1:], "--endpoint-url",
                     built.swift.endpoint, env=env)
    by_config = run_cli(*command, "--config", str(pushed.config))
    assert by_url.returncode == by_config.returncode == 0, by_url.stderr + by_config.stderr
    url_doc, config_doc = orjson.loads(by_url.stdout), orjson.loads(by_config.stdout)
    url_doc.pop("generated_at", None)
    config_doc.pop("generated_at", None)
    assert url_doc == config_doc and url_doc["repositories"]


def test_the_json_report_on_a_bucket_counts_the_requests_by_kind(built: Built) -> None:
    """What the audit asked of the store, as `S3Store.requests` counted it; a report on disk has no `store` key."""
    import orjson

    pushed = built("orphans")
    on_bucket = run_cli("audit", "--json", "--config", str(pushed.config))
    on_disk = run_cli("audit", "--json", str(pushed.disk_root))
    assert on_bucket.returncode == on_disk.returncode == 4, on_bucket.stderr + on_disk.stderr
    document = orjson.loads(on_bucket.stdout)
    _, requests = _s3_records(pushed)
    counted = requests.as_dict()
    assert document["store"] == {"kind": "s3", "requests": counted}
    assert document["store"]["requests"]["gets"] > 0 and document["store"]["requests"]["copies"] == 0
    assert list(document)[-1] == "findings" and "store" not in orjson.loads(on_disk.stdout)
