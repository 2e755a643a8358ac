"""`du` as text for people, CSV for spreadsheets and one JSON document for machines."""

from __future__ import annotations

import csv
import io

import orjson

from .report import Context, display, size
from .usage import Row, Selection, Totals, Usage

FORMAT = "registry-fsck/du/1"

CSV_FIELDS = (
    "repository", "kind", "repositories", "tags", "manifests_live", "manifests_untagged", "blobs",
    "referenced_bytes", "exclusive_bytes", "shared_bytes", "reclaimable_bytes", "frees_on_rm_bytes", "uploads_bytes",
)


def row_record(row: Row) -> dict:
    return {
        "repository": display(row.name),
        "kind": "namespace" if row.namespace else "repository",
        "repositories": row.repositories,
        "tags": row.tags,
        "manifests_live": row.manifests_live,
        "manifests_untagged": row.manifests_untagged,
        "blobs": row.blobs,
        "referenced_bytes": row.referenced_bytes,
        "exclusive_bytes": row.exclusive_bytes,
        "shared_bytes": row.shared_bytes,
        "reclaimable_bytes": row.reclaimable_bytes,
        "frees_on_rm_bytes": row.frees_on_rm_bytes,
        "uploads_bytes": row.uploads_bytes,
    }


def totals_record(totals: Totals) -> dict:
    return {
        "repositories": totals.repositories,
        "stored_bytes": totals.stored_bytes,
        "live_bytes": totals.live_bytes,
        "exclusive_bytes": totals.exclusive_bytes,
        "shared_bytes": totals.shared_bytes,
        "garbage_bytes": totals.garbage_bytes,
        "damage_held_bytes": totals.damage_held_bytes,
        "reclaimable_bytes": totals.reclaimable_bytes,
        "shared_reclaimable_bytes": totals.shared_reclaimable_bytes,
        "live_adds_up": totals.live_adds_up,
        "stored_adds_up": totals.stored_adds_up,
    }


def to_json(usage: Usage, shown: Selection, context: Context, exit_code: int) -> bytes:
    document = {
        "format": FORMAT,
        "root": display(context.root),
        "v2": display(context.v2),
        "generated_at": context.generated_at.isoformat(timespec="seconds"),
        "complete": usage.complete,
        "exit_code": exit_code,
        "totals": totals_record(usage.totals),
        "repositories": [row_record(r) for r in shown.rows],
        "namespaces": [row_record(r) for r in shown.namespaces],
        "more": _more_record(shown),
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def _more_record(shown: Selection) -> dict:
    """The rows --top left out, summed."""
    return {
        "repositories": len(shown.cut),
        "exclusive_bytes": sum(r.exclusive_bytes for r in shown.cut),
        "referenced_bytes": sum(r.referenced_bytes for r in shown.cut),
    }


def to_csv(shown: Selection) -> str:
    """One line per row shown: repositories, then the namespace subtotals. Bytes as integers."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in (*shown.rows, *shown.namespaces):
        writer.writerow(row_record(row))
    return out.getvalue()


_HEADINGS = ("repository", "tags", "live", "untagged", "blobs", "referenced", "exclusive", "shared", "reclaimable",
             "frees on rm")


def _cells(row: Row) -> tuple[str, ...]:
    name = display(row.name)
    if row.namespace:
        name += f" ({row.repositories} {'repository' if row.repositories == 1 else 'repositories'})"
    return (
        name, str(row.tags), str(row.manifests_live), str(row.manifests_untagged), str(row.blobs),
        size(row.referenced_bytes), size(row.exclusive_bytes), size(row.shared_bytes), size(row.reclaimable_bytes),
        size(row.frees_on_rm_bytes),
    )


def to_text(usage: Usage, shown: Selection, context: Context) -> str:
    lines = [f"registry-fsck du of {display(context.v2)}"]
    if not usage.complete:
        lines.append(
            "WARNING: INCOMPLETE: part of the tree could not be read or was not followed (see `registry-fsck audit`); "
            "the figures that depend on it may be wrong."
        )
    table = [_HEADINGS, *(_cells(r) for r in shown.rows)]
    if shown.namespaces:
        table += [_cells(r) for r in shown.namespaces]
    widths = [max(len(cells[i]) for cells in table) for i in range(len(_HEADINGS))]
    lines.append("")
    for number, cells in enumerate(table):
        if number == len(table) - len(shown.namespaces) and shown.namespaces:
            lines.append("  " + "-" * (sum(widths) + 2 * (len(widths) - 1)))
        line = "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(cells, widths, strict=True)))
        lines.append(("  " + line).rstrip())
    if not shown.rows and not shown.namespaces:
        lines.append("  (no repositories)")
    if shown.cut:
        exclusive = sum(r.exclusive_bytes for r in shown.cut)
        lines.append(
            f"  ... and {len(shown.cut)} more {'repository' if len(shown.cut) == 1 else 'repositories'}, "
            f"{size(exclusive)} exclusive (--top 0 shows all)"
        )
    lines.append("")
    lines.extend(totals_lines(usage.totals))
    return "\n".join(lines) + "\n"


def totals_lines(totals: Totals) -> list[str]:
    """The two identities the table rests on, with their figures (for the whole store, whatever is shown)."""
    live = (
        f"live {size(totals.live_bytes)} = exclusive {size(totals.exclusive_bytes)} "
        f"+ shared {size(totals.shared_bytes)} (counted once); "
        f"in bytes {totals.live_bytes} = {totals.exclusive_bytes} + {totals.shared_bytes}"
    )
    stored = (
        f"stored {size(totals.stored_bytes)} = live {size(totals.live_bytes)} + garbage {size(totals.garbage_bytes)} "
        f"+ held by damage {size(totals.damage_held_bytes)}; in bytes {totals.stored_bytes} = {totals.live_bytes} "
        f"+ {totals.garbage_bytes} + {totals.damage_held_bytes}"
    )
    lines = [
        f"totals over {totals.repositories} {'repository' if totals.repositories == 1 else 'repositories'}:",
        "  " + live + ("" if totals.live_adds_up else "  (DOES NOT ADD UP: please report this)"),
        "  " + stored + ("" if totals.stored_adds_up else "  (DOES NOT ADD UP: please report this)"),
        f"  reclaimable now: {size(totals.reclaimable_bytes)} (blobs, uploads, leftovers: `registry-fsck audit`); "
        f"shared garbage {size(totals.shared_reclaimable_bytes)}",
    ]
    return lines
