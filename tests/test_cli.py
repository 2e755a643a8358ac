"""The command line as an admin meets it: exit codes, one-line errors, no tracebacks, no writes."""

import re

import orjson
import pytest
from clirun import DEMO, make_non_registry, run_cli

from tests.harness import tree


def assert_one_line_error(result, code):
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("registry-fsck: error:"), result.stderr


@pytest.mark.parametrize("kind", ["missing", "file", "empty-dir", "dangling-symlink"])
def test_path_that_is_no_registry_is_one_line_and_exit_8(tmp_path, kind):
    target = make_non_registry(tmp_path, kind)
    assert_one_line_error(run_cli("audit", str(target)), 8)


def test_usage_errors_exit_16():
    assert run_cli("audit", "--no-such-flag").returncode == 16
    assert run_cli("audit").returncode == 16  # neither PATH nor --config
    assert run_cli("audit", str(DEMO), "--config", "x.yml").returncode == 16
    assert run_cli("audit", str(DEMO), "--upload-age", "soon").returncode == 16
    assert run_cli("no-such-command").returncode == 16


def test_help_exits_0():
    result = run_cli("audit", "--help")
    assert result.returncode == 0 and "--verify" in result.stdout


def test_demo_audit_reports_garbage_with_exit_4():
    result = run_cli("audit", str(DEMO))
    assert result.returncode == 4, result.stderr
    assert "blob-orphan" in result.stdout and "reclaimable" in result.stdout
    assert result.stderr == ""  # no progress bars without a terminal


def test_json_report_is_one_document(tmp_path):
    result = run_cli("audit", str(DEMO), "--json")
    document = orjson.loads(result.stdout)
    assert document["format"] == "registry-fsck/report/1"
    assert document["exit_code"] == result.returncode == 4
    ids = {f["id"] for f in document["findings"]}
    assert {"blob-orphan", "tag-index-stale", "manifest-untagged"} <= ids
    assert document["summary"]["reclaimable_bytes"] == sum(
        f["bytes"] for f in document["findings"] if f["severity"] == "garbage"
    )


def test_output_file_is_refused_inside_the_registry(tmp_path):
    import shutil

    tree = tmp_path / "reg"
    shutil.copytree(DEMO, tree, symlinks=True)
    result = run_cli("audit", str(tree), "--json", "--output", str(tree / "report.json"))
    assert result.returncode == 16
    assert not (tree / "report.json").exists()
    outside = tmp_path / "report.json"
    result = run_cli("audit", str(tree), "--json", "--output", str(outside))
    assert result.returncode == 4 and result.stdout == ""
    assert orjson.loads(outside.read_bytes())["format"] == "registry-fsck/report/1"


def test_config_file_locates_the_root(tmp_path):
    config = tmp_path / "config.yml"
    config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {DEMO}\n")
    by_config = orjson.loads(run_cli("audit", "--config", str(config), "--json").stdout)
    by_path = orjson.loads(run_cli("audit", str(DEMO / "docker/registry/v2"), "--json").stdout)
    assert by_config["findings"] == by_path["findings"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("storage:\n  gcs:\n    bucket: x\n", "not supported"),  # s3 is read: tests/test_s3.py
        ("storage: [unclosed\n", "not valid YAML"),
        ("- a list\n", "not a registry config"),
    ],
)
def test_bad_config_is_one_line_and_exit_8(tmp_path, text, message):
    config = tmp_path / "config.yml"
    config.write_text(text)
    result = run_cli("audit", "--config", str(config))
    assert_one_line_error(result, 8)
    assert message in result.stderr


def test_config_env_override(tmp_path):
    config = tmp_path / "config.yml"
    config.write_text("storage:\n  filesystem:\n    rootdirectory: /nonexistent\n")
    result = run_cli("audit", "--config", str(config), env={"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(DEMO)})
    assert result.returncode == 4, result.stderr


@pytest.mark.parametrize("command", [
    ("audit", str(DEMO), "--upload-age", "99999999999999999999w"),
    ("repair", str(DEMO), "-n", "--min-age", "99999999999999999999w"),
    ("purge", str(DEMO), "--older-than", "99999999999999999999w"),
])
def test_an_absurdly_long_duration_is_a_usage_error_not_a_traceback(command):
    result = run_cli(*command)
    assert result.returncode == 16, result.stderr
    assert "Traceback" not in result.stderr and "longer than this tool can count" in result.stderr


def test_a_bare_zero_is_a_duration_as_zero_seconds_is():
    bare = orjson.loads(run_cli("audit", str(DEMO), "--json", "--upload-age", "0").stdout)
    seconds = orjson.loads(run_cli("audit", str(DEMO), "--json", "--upload-age", "0s").stdout)
    assert bare["summary"]["by_id"]["upload-stale"] == seconds["summary"]["by_id"]["upload-stale"]


@pytest.mark.parametrize("options, says", [
    (("--only", "tag-index-stale", "--skip", "tag-index-stale"), "--only and --skip both name tag-index-stale"),
    (("--only", "manifest-untagged"), "--only manifest-untagged: give --untagged too"),
    (("--only", "tag-broken"), "--only tag-broken: give --fix-damage too"),
    (("--only", "link-mismatch"), "--only link-mismatch: repair never acts on it"),
])
def test_an_only_that_can_select_nothing_is_a_usage_error(options, says):
    result = run_cli("repair", str(DEMO), "-n", *options)
    assert result.returncode == 16 and says in result.stderr, result.stderr


def test_an_only_that_names_what_its_options_enable_is_accepted():
    result = run_cli("repair", str(DEMO), "-n", "--json", "--untagged", "--only", "manifest-untagged")
    plan = orjson.loads(result.stdout)
    assert result.returncode == 4 and set(plan["summary"]["by_finding"]) == {"manifest-untagged"}


def test_version_prints_the_package_version_and_exits_0():
    from fsck import __version__

    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"registry-fsck {__version__}"


def test_one_notice_is_said_in_the_singular(tree_copy):
    root = tree_copy(DEMO)
    (root / "docker" / "registry" / "v2" / "repositories" / "NOTES.txt").write_text("kept by hand\n")
    summary = [line for line in run_cli("audit", str(root)).stdout.splitlines() if " garbage, " in line]
    assert summary and summary[0].split("; ")[0].endswith(", 1 notice"), summary


def test_fail_on_damage_ignores_garbage_in_the_exit_code_and_the_report():
    for options, code in (([], 4), (["--fail-on", "garbage"], 4), (["--fail-on", "damage"], 0)):
        result = run_cli("audit", str(DEMO), "--json", *options)
        document = orjson.loads(result.stdout)
        assert result.returncode == document["exit_code"] == code, (options, result.stderr)
        assert document["summary"]["by_severity"]["garbage"] > 0 and document["summary"]["by_severity"]["damage"] == 0


@pytest.mark.registry
def test_fail_on_damage_exits_4_on_damage(demo):
    repo, digest = "plain/app", demo.scenario.tags["plain/app"]["v1"]
    tree.layer_link(demo.root, repo, demo.scenario.manifests[digest].config).unlink()  # pulls of v1 now fail
    result = run_cli("audit", str(demo.root), "--json", "--fail-on", "damage")
    document = orjson.loads(result.stdout)
    assert result.returncode == document["exit_code"] == 4, result.stderr
    assert {f["id"] for f in document["findings"] if f["severity"] == "damage"} == {"layer-link-missing"}


def test_fail_on_takes_only_damage_or_garbage():
    result = run_cli("audit", str(DEMO), "--fail-on", "notice")
    assert result.returncode == 16 and "--fail-on" in result.stderr and "Traceback" not in result.stderr


def _commands():
    import fsck.cli  # noqa: F401  (registers the commands)
    from fsck.commands.app import app

    return [command.callback.__name__ for command in app.registered_commands]


def _option_help(help_text, option):
    """The help of one option: its line and the indented lines that continue it."""
    lines = help_text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"\s+(-\w, )?{option}\b", line))
    rest = lines[start + 1:]
    end = next((i for i, line in enumerate(rest) if re.match(r"\s+-", line) or not line.strip()), len(rest))
    return " ".join(" ".join([lines[start], *rest[:end]]).split())


@pytest.mark.parametrize("command", [[], *[[name] for name in _commands()]], ids=lambda c: c[0] if c else "top")
def test_help_shows_no_type_on_flags(command):
    result = run_cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "<bool>" not in result.stdout
    assert "--help" in result.stdout and "Show this message and exit." in result.stdout


def test_json_help_says_what_each_command_prints():
    assert "report" in _option_help(run_cli("audit", "--help").stdout, "--json")
    repair = _option_help(run_cli("repair", "--help").stdout, "--json")
    assert "plan" in repair and "outcome" in repair
    assert "runs" in _option_help(run_cli("runs", "--help").stdout, "--json")
