"""The S3 tests' fixtures: Swift with s3api on 127.0.0.1 (`swift`), and the scenarios pushed into its
bucket by the registry's own s3 driver, each also onto a filesystem registry (`built`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import scenarios
from tests.harness.registry import Registry, S3Storage, missing_binaries, write_config
from tests.harness.scenarios import Scenario
from tests.harness.swift import ACCESS_KEY, PACKAGES, SECRET_KEY, Swift
from tests.harness.swift import missing_binaries as missing_swift

BUCKET = "registry"


def _require_packages() -> None:
    missing = missing_swift() + missing_binaries()
    if not missing:
        return
    message = f"the S3 tests need {', '.join(missing)} on PATH (Debian packages {PACKAGES} docker-registry skopeo)"
    if os.environ.get("CI"):  # CI must never pass by skipping them
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def swift(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swift]:
    """Swift with s3api on 127.0.0.1, started once per session, with the bucket the scenarios go into."""
    _require_packages()
    with Swift(tmp_path_factory.mktemp("swift")) as store:
        store.create_bucket(BUCKET)
        yield store


@dataclass(frozen=True, slots=True)
class Pushed:
    topic: str
    scenario: Scenario
    storage: S3Storage  # where the registry on S3 wrote it
    config: Path  # a registry config on that storage (for garbage-collect and --config)
    disk_root: Path  # the same scenario, pushed by a registry on the filesystem driver


def storage_of(swift: Swift, rootdirectory: str) -> S3Storage:
    return S3Storage(swift.endpoint, BUCKET, ACCESS_KEY, SECRET_KEY, rootdirectory)


class Built:
    def __init__(self, swift: Swift, base: Path) -> None:
        self.swift = swift
        self.base = base
        self.pushed: dict[str, Pushed] = {}

    def __call__(self, topic: str) -> Pushed:
        if topic not in self.pushed:
            work = self.base / topic
            storage = storage_of(self.swift, f"/scenarios/{topic}")

            def push(registry: Registry) -> Scenario:
                with registry:
                    return scenarios.build(registry, topic)

            with ThreadPoolExecutor(2) as both:  # each waits on its registry and skopeo, not on this process
                on_s3 = both.submit(push, Registry(work / "unused-root", workdir=work / "s3-registry", s3=storage))
                on_disk = both.submit(push, Registry(work / "root", workdir=work / "fs-registry")).result()
                scenario = on_s3.result()
            assert on_disk.blobs == scenario.blobs and on_disk.tags == scenario.tags  # the very same images
            config = write_config(work / "unused-root", work / "s3-config.yml", s3=storage)
            self.pushed[topic] = Pushed(topic, scenario, storage, config, work / "root")
        return self.pushed[topic]


@pytest.fixture(scope="session")
def built(swift: Swift, tmp_path_factory: pytest.TempPathFactory) -> Built:
    return Built(swift, tmp_path_factory.mktemp("s3-scenarios"))


