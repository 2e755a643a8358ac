"""benchmarks/s3bench.py end to end at its smoke shape: a bucket in a real Swift (s3api), the registry's GC and the
audit through the counting proxy; every correctness check must say MATCH. Also what the proxy calls each request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import s3bench  # noqa: E402

from tests.harness.registry import missing_binaries  # noqa: E402
from tests.harness.swift import PACKAGES  # noqa: E402
from tests.harness.swift import missing_binaries as missing_swift  # noqa: E402


def _require_packages() -> None:
    missing = missing_swift() + [name for name in missing_binaries() if name == "docker-registry"]
    if not missing:
        return
    message = f"the S3 benchmark needs {', '.join(missing)} on PATH (Debian packages {PACKAGES} docker-registry)"
    if os.environ.get("CI"):  # CI must never pass by skipping it
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.mark.registry
def test_the_smoke_benchmark_runs_end_to_end_and_every_check_matches(tmp_path: Path) -> None:
    _require_packages()
    result_path = tmp_path / "s3bench.json"
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "s3bench.py"), "--smoke", "--quiet", "--no-ceiling", "--dir", str(tmp_path / "work"),
         "--json", str(result_path)],
        capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(result_path.read_text())
    checks = result["checks"]
    assert checks and all(verdict.startswith("MATCH") for verdict in checks.values()), checks
    assert {"gc eligible = 2.8's --delete-untagged rules on the tree @0ms",
            "audit blob-orphan + blob-unreachable = gc eligible - index-children-only @0ms",
            "audit on the bucket = audit on disk"} <= checks.keys()
    gc, audit = result["runs"]["0"]["gc"], result["runs"]["0"]["audit"]
    assert gc["exit_code"] == 0 and audit["exit_code"] == 4  # the smoke tree holds garbage
    # Both went through the proxy, which saw only reads; the audit lists without a delimiter, in few pages.
    assert gc["requests"]["GET GetObject"] > 0 and audit["requests"]["GET GetObject"] > 0
    assert {k.split()[0] for k in (*gc["requests"], *audit["requests"])} <= {"GET", "HEAD"}
    assert 0 < audit["requests"]["GET ListObjectsV2"] < gc["total"] // 10
    assert audit["total"] < gc["total"]
    # The audit GETs each manifest once; every link, a tag's current one too, its listing vouches for.
    tree = result["tree"]
    assert audit["parts"].get("GetObject: tag current link", 0) == 0
    assert audit["parts"]["GetObject: blob data"] == tree["revisions"]
    assert audit["requests"]["GET GetObject"] == tree["revisions"]


@pytest.mark.parametrize(("method", "target", "headers", "operation"), [
    ("GET", "/registry?list-type=2&prefix=bench%2F&max-keys=1000", {}, "GET ListObjectsV2"),
    ("GET", "/registry?delimiter=%2F&marker=&max-keys=1000&prefix=a%2F", {}, "GET ListObjects"),
    ("GET", "/registry/bench/docker/registry/v2/blobs/sha256/ab/ab12/data", {}, "GET GetObject"),
    ("HEAD", "/registry/bench/docker/registry/v2/repositories/a/_layers/sha256/ab/link", {}, "HEAD HeadObject"),
    ("HEAD", "/registry", {}, "HEAD HeadBucket"),
    ("GET", "/", {}, "GET ListBuckets"),
    ("PUT", "/registry/k", {}, "PUT PutObject"),
    ("PUT", "/registry/k", {"X-Amz-Copy-Source": "/registry/j"}, "PUT CopyObject"),
    ("PUT", "/registry/k?partNumber=1&uploadId=u", {}, "PUT UploadPart"),
    ("POST", "/registry/k?uploads", {}, "POST CreateMultipartUpload"),
    ("POST", "/registry/k?uploadId=u", {}, "POST CompleteMultipartUpload"),
    ("POST", "/registry?delete", {}, "POST DeleteObjects"),
    ("DELETE", "/registry/k", {}, "DELETE DeleteObject"),
    ("DELETE", "/registry/k?uploadId=u", {}, "DELETE AbortMultipartUpload"),
    ("GET", "/registry?uploads", {}, "GET ListMultipartUploads"),
])
def test_the_proxy_names_each_request_as_its_s3_operation(method, target, headers, operation) -> None:
    assert s3bench.s3_operation(method, target, headers) == operation
