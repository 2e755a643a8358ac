"""An audit as Prometheus text-format metrics, for node_exporter's textfile collector.

Every series is a gauge (each run replaces the file: nothing here only goes up, so no `_total`) in
base units, and carries the registry's `root`: node_exporter merges every `*.prom` file of its
directory, and two registries audited on one host must not give the same series twice. What a
failed run writes is the success gauge at 0 with the run's time and duration, nothing else: a stale
count of damage would read as the current one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from .catalogue import CATALOGUE
from .checks import Audit
from .report import display, findings_of, summary

PREFIX = "registry_fsck_"


@dataclass(frozen=True, slots=True)
class Gauge:
    name: str  # without the prefix
    help: str
    samples: tuple[tuple[Mapping[str, str], float], ...]  # (labels besides `root`, value)


def _escape(value: str) -> str:
    """A label value as the text format wants it: backslash, double quote and line feed escaped."""
    return display(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) and not value.is_integer() else str(int(value))


def render(gauges: Iterable[Gauge], root: str) -> str:
    lines = []
    for gauge in gauges:
        name = PREFIX + gauge.name
        lines.append(f"# HELP {name} {gauge.help}")
        lines.append(f"# TYPE {name} gauge")
        for labels, value in gauge.samples:
            shown = ",".join(f'{key}="{_escape(text)}"' for key, text in {"root": root, **labels}.items())
            lines.append(f"{name}{{{shown}}} {_number(value)}")
    return "\n".join(lines) + "\n"


def _one(name: str, help_text: str, value: float) -> Gauge:
    return Gauge(name, help_text, (({}, value),))


def _run(success: bool, at: datetime, duration: float) -> list[Gauge]:
    return [
        _one("last_run_success", "1 if the last audit ran to its end (whatever it found), 0 if it failed.",
             1 if success else 0),
        _one("last_run_timestamp_seconds", "When the last audit ran, in seconds since the epoch.", at.timestamp()),
        _one("last_run_duration_seconds", "How long the last audit took.", round(duration, 3)),
    ]


def failed(root: str, at: datetime, duration: float) -> str:
    return render(_run(False, at, duration), root)


def succeeded(
    audit: Audit, root: str, at: datetime, duration: float, exit_code: int, *, per_repository: bool = False
) -> str:
    """`at`: the audit's time (its JSON report's `generated_at`)."""
    counted = summary(audit, findings_of(audit))
    by_id = counted["by_id"]
    gauges = [
        *_run(True, at, duration),
        _one("exit_code", "The exit code of the last audit (fsck(8) bits: 4 problems found, 8 partial view).",
             exit_code),
        _one("complete", "1 if the last audit read the whole tree, 0 if part of it could not be read (verdicts "
             "may be wrong).", 1 if audit.complete else 0),
        _one("repositories", "Repositories in the storage tree.", counted["repositories"]),
        _one("tags", "Tags in the storage tree.", counted["tags"]),
        _one("manifests", "Manifest revision links in the storage tree.", counted["manifests"]),
        _one("blobs", "Blobs stored.", counted["blobs"]),
        _one("stored_bytes", "Bytes of every blob stored.", counted["blob_bytes"]),
        _one("reclaimable_bytes", "Bytes the garbage findings would free.", counted["reclaimable_bytes"]),
        _one("shared_reclaimable_bytes", "Reclaimable blob bytes no one repository alone uses.",
             counted["shared_reclaimable_bytes"]),
        _one("recent_uploads", "Uploads started in the last 15 minutes: non-zero means the registry looks live.",
             audit.recent_uploads),
        Gauge("findings", "Findings of the last audit, per finding id (every id, 0 when none).", tuple(
            ({"id": check.id.value, "severity": check.severity.value}, by_id.get(check.id.value, {}).get("count", 0))
            for check in CATALOGUE
        )),
        Gauge("finding_bytes", "Bytes removing the findings of each id would free.", tuple(
            ({"id": check.id.value, "severity": check.severity.value}, by_id.get(check.id.value, {}).get("bytes", 0))
            for check in CATALOGUE
        )),
    ]
    if "ignored" in counted:
        gauges.append(Gauge("ignored_findings", "Findings left out with --ignore, per finding id.", tuple(
            ({"id": finding_id}, count) for finding_id, count in counted["ignored"].items()
        )))
    if per_repository:
        repositories = counted["by_repository"]
        gauges.append(Gauge("repository_findings", "Findings located in each repository (those that have any).",
                            tuple(({"repository": name}, e["findings"]) for name, e in repositories.items())))
        gauges.append(Gauge("repository_reclaimable_bytes", "Reclaimable bytes each repository alone holds.",
                            tuple(({"repository": name}, e["reclaimable_bytes"]) for name, e in repositories.items())))
    return render(gauges, root)
