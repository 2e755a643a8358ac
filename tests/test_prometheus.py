"""`audit --prometheus FILE`: the file read back with prometheus_client's own text parser, its values
against the same run's JSON report, on the registry's demo tree with damage added; written atomically,
and on every run (a failed one with the success gauge at 0)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import threading
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fsck.catalogue import CATALOGUE
from fsck.commands.options import write_atomically
from tests.clirun import REPO, run_cli
from tests.harness import tree

PREFIX = "registry_fsck_"


def _families(path: Path) -> dict:
    return {family.name: family for family in text_string_to_metric_families(path.read_text())}


def _value(families: dict, name: str, **labels: str) -> float:
    samples = [s for s in families[PREFIX + name].samples if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(samples) == 1, (name, labels, samples)
    return samples[0].value


def _extract(dest: Path) -> Path:
    with tarfile.open(REPO / "fixtures" / "demo.tar.gz") as tar:
        tar.extractall(dest, filter="tar")
    return dest


@pytest.fixture
def damaged(tmp_path: Path) -> Path:
    """The demo tree the registry wrote (garbage: untagged manifests, orphans, stale uploads...), with damage:
    an empty current link and a layer truncated to nothing."""
    root = _extract(tmp_path / "root")
    tree.tag_current_link(root, "plain/app", "v1").write_bytes(b"")
    manifest = orjson.loads(tree.blob_data(root, tree.tag_current(root, "org/team/app", "latest")).read_bytes())
    tree.blob_data(root, manifest["layers"][0]["digest"]).write_bytes(b"")
    return root


def test_metrics_agree_with_the_json_report_of_the_same_run(damaged: Path, tmp_path: Path) -> None:
    out = tmp_path / "metrics" / "registry.prom"
    out.parent.mkdir()
    result = run_cli("audit", str(damaged), "--json", "--prometheus", str(out))
    report = orjson.loads(result.stdout)
    summary = report["summary"]
    assert result.returncode == report["exit_code"] == 4
    assert summary["by_severity"]["damage"] > 0 and summary["by_severity"]["garbage"] > 0  # both are there
    families = _families(out)
    root = str(damaged)
    for name, family in families.items():
        assert name.startswith(PREFIX) and not name.endswith("_total"), name
        assert family.type == "gauge" and family.documentation, name
        assert all(sample.labels["root"] == root for sample in family.samples), name
    assert _value(families, "last_run_success") == 1
    assert _value(families, "complete") == 1
    assert _value(families, "exit_code") == 4
    for name, key in (("repositories", "repositories"), ("tags", "tags"), ("manifests", "manifests"),
                      ("blobs", "blobs"), ("stored_bytes", "blob_bytes"), ("reclaimable_bytes", "reclaimable_bytes"),
                      ("shared_reclaimable_bytes", "shared_reclaimable_bytes")):
        assert _value(families, name) == summary[key], name
    assert _value(families, "recent_uploads") == report["recent_uploads"]
    for check in CATALOGUE:  # every id, so an alert's series exists before its first finding
        found = summary["by_id"].get(check.id.value, {"count": 0, "bytes": 0})
        labels = {"id": check.id.value, "severity": check.severity.value}
        assert _value(families, "findings", **labels) == found["count"]
        assert _value(families, "finding_bytes", **labels) == found["bytes"]
    for severity, count in summary["by_severity"].items():
        assert sum(s.value for s in families[PREFIX + "findings"].samples if s.labels["severity"] == severity) == count
    generated = datetime.fromisoformat(report["generated_at"]).timestamp()
    assert generated <= _value(families, "last_run_timestamp_seconds") < generated + 1
    assert 0 <= _value(families, "last_run_duration_seconds") < 120
    assert PREFIX + "repository_findings" not in families  # only on request
    assert sorted(os.listdir(out.parent)) == ["registry.prom"]  # no temporary file left


def test_per_repository_series_and_ignored_ids_on_request(damaged: Path, tmp_path: Path) -> None:
    out = tmp_path / "registry.prom"
    result = run_cli("audit", str(damaged), "--json", "--prometheus", str(out), "--prometheus-repositories",
                     "--ignore", "blob-orphan")
    summary = orjson.loads(result.stdout)["summary"]
    families = _families(out)
    by_repository = summary["by_repository"]
    assert len(by_repository) > 3
    findings = {s.labels["repository"]: s.value for s in families[PREFIX + "repository_findings"].samples}
    reclaimable = {s.labels["repository"]: s.value for s in families[PREFIX + "repository_reclaimable_bytes"].samples}
    assert findings == {name: entry["findings"] for name, entry in by_repository.items()}
    assert reclaimable == {name: entry["reclaimable_bytes"] for name, entry in by_repository.items()}
    assert summary["ignored"]["blob-orphan"] > 0
    assert _value(families, "ignored_findings", id="blob-orphan") == summary["ignored"]["blob-orphan"]
    assert _value(families, "findings", id="blob-orphan", severity="garbage") == 0


def test_label_values_are_escaped(tmp_path: Path) -> None:
    odd = tmp_path / 'a "quoted" \\ name'
    root = _extract(odd)
    out = tmp_path / "registry.prom"
    assert run_cli("audit", str(root), "--prometheus", str(out)).returncode == 4
    assert '\\"quoted\\" \\\\ name' in out.read_text()
    families = _families(out)
    assert {s.labels["root"] for f in families.values() for s in f.samples} == {str(root)}


def test_a_partial_view_is_recorded_as_incomplete(damaged: Path, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    os.symlink(tmp_path / "a-file", tree.repo_dir(damaged, "plain") / "evil")  # not followed: the view is partial
    out = tmp_path / "registry.prom"
    assert run_cli("audit", str(damaged), "--prometheus", str(out)).returncode == 4 | 8
    families = _families(out)
    assert _value(families, "last_run_success") == 1  # it ran to its end ...
    assert _value(families, "complete") == 0  # ... on a partial view
    assert _value(families, "exit_code") == 12


@pytest.mark.parametrize("args, code", [
    (["/nonexistent/registry"], 8),  # not a registry
    (["fixtures/demo", "--upload-age", "soon"], 16),  # a usage error found by the command
])
def test_a_failed_run_writes_success_0_and_nothing_else(tmp_path: Path, args: list[str], code: int) -> None:
    out = tmp_path / "registry.prom"
    out.write_text("# an earlier run's file\n")
    result = run_cli("audit", *args, "--prometheus", str(out))
    assert result.returncode == code and "Traceback" not in result.stderr
    families = _families(out)
    assert set(families) == {PREFIX + "last_run_success", PREFIX + "last_run_timestamp_seconds",
                             PREFIX + "last_run_duration_seconds"}
    assert _value(families, "last_run_success") == 0
    expected_root = str(REPO / "fixtures" / "demo") if args[0] == "fixtures/demo" else args[0]
    assert families[PREFIX + "last_run_success"].samples[0].labels["root"] == expected_root
    assert sorted(os.listdir(tmp_path)) == ["registry.prom"]


def test_the_file_is_replaced_whole_never_rewritten_in_place(damaged: Path, tmp_path: Path) -> None:
    out = tmp_path / "registry.prom"
    assert run_cli("audit", str(damaged), "--prometheus", str(out)).returncode == 4
    first = out.read_text()
    seen: list[str] = []
    stop = threading.Event()

    def read_all_the_time() -> None:
        while not stop.is_set():
            seen.append(out.read_text())

    with open(out) as held:  # a reader with the old file open, as the collector may be
        reader = threading.Thread(target=read_all_the_time)
        reader.start()
        try:
            for _ in range(3):
                assert run_cli("audit", str(damaged), "--prometheus", str(out)).returncode == 4
        finally:
            stop.set()
            reader.join()
        assert held.read() == first  # the old file whole: the new one came by rename, not by truncation
    assert os.stat(out).st_mode & 0o777 == 0o644  # readable by a collector running as another user
    # Every read saw one whole file: its last series and the final newline.
    assert seen and all(text.endswith("\n") and PREFIX + "finding_bytes" in text for text in seen)
    assert sorted(os.listdir(tmp_path)) == ["registry.prom", "root"]


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    place = tmp_path / "textfiles"
    (place / "registry.prom").mkdir(parents=True)  # the rename onto a directory fails after the write
    (place / "registry.prom" / "x").write_text("x")
    with pytest.raises(IsADirectoryError):
        write_atomically(str(place / "registry.prom"), b"registry_fsck_last_run_success 1\n")
    assert sorted(os.listdir(place)) == ["registry.prom"]
    result = run_cli("audit", "fixtures/demo", "--prometheus", str(place / "registry.prom"))
    assert result.returncode == 8
    assert result.stderr.splitlines() == [
        f"registry-fsck: error: {place / 'registry.prom'}: cannot write the metrics: Is a directory"
    ]
    assert sorted(os.listdir(place)) == ["registry.prom"]


def test_an_unwritable_directory_is_one_line_exit_8_before_the_audit(tmp_path: Path) -> None:
    missing = run_cli("audit", "fixtures/demo", "--prometheus", str(tmp_path / "no" / "registry.prom"))
    assert missing.returncode == 8
    assert missing.stderr.splitlines() == [
        f"registry-fsck: error: {tmp_path / 'no' / 'registry.prom'}: cannot write the metrics: No such file or directory"
    ]
    assert missing.stdout == ""  # refused before the audit ran
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to make permission bits real for root")
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    try:
        # As root, drop the capabilities that bypass permission bits, so the mode is real.
        result = subprocess.run(
            ["setpriv", "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-m", "fsck",
             "audit", "fixtures/demo", "--prometheus", str(locked / "registry.prom")],
            capture_output=True, text=True, timeout=120, cwd=REPO,
        )
    finally:
        os.chmod(locked, 0o755)
    assert result.returncode == 8, result.stderr
    assert result.stderr.splitlines() == [
        f"registry-fsck: error: {locked / 'registry.prom'}: cannot write the metrics: Permission denied"
    ]
    assert os.listdir(locked) == []


def test_the_metrics_file_is_never_written_inside_the_registry(damaged: Path) -> None:
    result = run_cli("audit", str(damaged), "--prometheus", str(damaged / "registry.prom"))
    assert result.returncode == 16 and "refusing to write inside the registry's root" in result.stderr
    assert not (damaged / "registry.prom").exists()


def test_prometheus_repositories_needs_prometheus() -> None:
    result = run_cli("audit", "fixtures/demo", "--prometheus-repositories")
    assert result.returncode == 16 and "--prometheus-repositories needs --prometheus FILE" in result.stderr
