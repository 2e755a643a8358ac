"""`registry-fsck audit`: report garbage and damage; never writes to the registry."""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Optional

import typer

from .. import checks, report, service
from ..catalogue import Severity
from . import prometheus
from .options import (
    Bars,
    ConfigOption,
    EndpointUrlOption,
    JobsOption,
    JsonOption,
    LimitOption,
    OutputOption,
    PathArgument,
    QuarantineOption,
    QuietOption,
    UploadAgeOption,
    VerifyOption,
    VerifySubsetOption,
    emit,
    finding_ids,
    parse_duration,
    quarantine,
    refuse_inside,
    target,
    verify_subset,
    write_atomically,
)


class FailOn(str, Enum):
    """The severities `--fail-on` takes: the least severe finding that makes the exit code 4."""

    DAMAGE = Severity.DAMAGE.value
    GARBAGE = Severity.GARBAGE.value


@prometheus.on_every_run
def audit(
    path: Optional[Path] = PathArgument,
    config: Optional[Path] = ConfigOption,
    json_output: bool = JsonOption,
    output: Optional[Path] = OutputOption,
    verify_blobs: bool = VerifyOption,
    verify_subset_text: Optional[str] = VerifySubsetOption,
    limit: int = LimitOption,
    upload_age: str = UploadAgeOption,
    ignore: Optional[str] = typer.Option(
        None, "--ignore", help="Leave these finding ids (comma-separated) out of the report and the exit code."
    ),
    fail_on: FailOn = typer.Option(
        FailOn.GARBAGE, "--fail-on",
        help="Exit 4 on garbage or damage (garbage), or on damage alone (damage).",
    ),
    quarantine_dir: Optional[Path] = QuarantineOption,
    quiet: bool = QuietOption,
    jobs: Optional[int] = JobsOption,
    prometheus_file: Optional[Path] = prometheus.PrometheusOption,
    prometheus_repositories: bool = prometheus.PrometheusRepositoriesOption,
    html_file: Optional[Path] = typer.Option(
        None, "--html", metavar="FILE",
        help="Also write the report as one self-contained HTML page (findings by id, a treemap of where the "
        "space goes) to FILE, atomically.",
    ),
    endpoint_url: Optional[str] = EndpointUrlOption,
) -> None:
    """Report garbage and damage. Never writes to the registry."""
    age = parse_duration(upload_age)
    ignored = finding_ids(ignore, "--ignore")
    subset = verify_subset(verify_subset_text)
    where = target(path, config, endpoint_url)
    if html_file is not None:
        refuse_inside(html_file, where.root)
    policy = checks.Policy(now=datetime.now(timezone.utc), upload_age=age)
    store: list[dict | None] = []
    keep = lambda loaded: store.append(service.store_facts(where, loaded))  # noqa: E731
    if html_file is None:
        result = service.audit(
            where, policy, verify_blobs=verify_blobs, ignore=ignored, progress=Bars(quiet), jobs=jobs, subset=subset,
            loaded_with=keep,
        )
    else:
        result, usage = service.audit_and_usage(
            where, policy, verify_blobs=verify_blobs, ignore=ignored, progress=Bars(quiet), jobs=jobs, subset=subset,
            loaded_with=keep,
        )
    code = int(service.exit_code(result, fail_on=Severity(fail_on.value)))
    context = report.Context(
        where.root, where.v2, policy.now, verify_blobs and subset is None,
        verified_subset=str(subset) if subset is not None else None, store=store[0] if store else None,
    )
    prometheus.record(prometheus_file, prometheus_repositories, result, where, policy.now, code)
    if html_file is not None:
        try:
            from .. import html  # only here: an audit without --html does without the renderer

            write_atomically(str(html_file), html.to_html(result, context, usage, limit).encode())
        except OSError as error:
            raise service.OperationalError(f"{html_file}: cannot write: {error.strerror or error}") from None
    if json_output:
        data = partial(report.write_json, result, context, code)
    else:
        held = _held(where, quarantine(quarantine_dir, where))
        data = report.to_text(result, context, limit, held).encode()
    emit(data, output, where, code)


def _held(where: service.Target, kept_in: str) -> report.Held | None:
    """What earlier repairs still hold in the quarantine (read only); None when it cannot be read."""
    try:
        holding = [r for r in service.runs(where, kept_in) if r.holding and r.bytes]
    except service.OperationalError:
        return None
    return report.Held(kept_in, len(holding), sum(r.bytes for r in holding), min((r.started for r in holding), default=None))
