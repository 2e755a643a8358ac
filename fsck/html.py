"""An audit as one self-contained HTML page to mail to the team: the summary, the findings by id, and
where the space goes (`du`) as a squarified treemap in inline SVG. No script, no font, no request:
everything the page shows is in the file."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape

from . import layout
from .catalogue import BY_ID, Finding, Id
from .checks import Audit
from .report import Context, display, findings_of, size, summary
from .usage import Row, Usage, sort_rows


@dataclass(frozen=True, slots=True)
class Rect:
    x: float
    y: float
    width: float
    height: float

    @property
    def area(self) -> float:
        return self.width * self.height


def squarify(values: Sequence[float], x: float, y: float, width: float, height: float) -> list[Rect]:
    """Rectangles tiling the box, one per value in the order given, each with an area in proportion to its
    value (Bruls, Huizing, van Wijk: rows laid along the shorter side, a row grown while that keeps its
    worst aspect ratio from getting worse). Give the values largest first; a value of 0 gets an empty
    rectangle."""
    if any(v < 0 for v in values):
        raise ValueError("a treemap's values cannot be negative")
    total = sum(values)
    if total <= 0 or width <= 0 or height <= 0:
        return [Rect(x, y, 0.0, 0.0) for _ in values]
    scale = width * height / total
    placed: list[Rect | None] = [None] * len(values)
    pending = [(i, v * scale) for i, v in enumerate(values) if v > 0]
    start = 0
    while start < len(pending):
        side = min(width, height)
        end = start + 1
        while end < len(pending) and _worst(pending[start:end + 1], side) <= _worst(pending[start:end], side):
            end += 1
        row = pending[start:end]
        row_area = sum(a for _, a in row)
        last = end == len(pending)
        if width >= height:  # a column at the left, as wide as the row's area needs
            thickness = width if last else min(width, row_area / height)
            offset = y
            for index, area in row:
                extent = area / thickness
                placed[index] = Rect(x, offset, thickness, extent)
                offset += extent
            x, width = x + thickness, max(0.0, width - thickness)
        else:  # a row at the top
            thickness = height if last else min(height, row_area / width)
            offset = x
            for index, area in row:
                extent = area / thickness
                placed[index] = Rect(offset, y, extent, thickness)
                offset += extent
            y, height = y + thickness, max(0.0, height - thickness)
        start = end
    return [r if r is not None else Rect(x, y, 0.0, 0.0) for r in placed]


def _worst(row: Sequence[tuple[int, float]], side: float) -> float:
    """The worst aspect ratio of the row's rectangles when laid along `side`."""
    total = sum(a for _, a in row)
    squared = side * side
    return max(max(squared * a / (total * total), total * total / (squared * a)) for _, a in row)


_WIDTH, _HEIGHT = 960.0, 540.0
_SMALLEST = 36.0  # px²: a repository drawn smaller than this joins its namespace's "more" tile
_HEADER = 16.0  # px: a namespace's label above its repositories
_PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#e15759", "#9c755f", "#ff9da7")


@dataclass(frozen=True, slots=True)
class Tile:
    label: str
    value: int  # exclusive bytes (or the shared bytes, counted once)
    detail: str  # the tooltip
    colour: str
    rect: Rect
    kind: str = "repository"  # repository, more, shared, namespace (a frame around its repositories)


def namespace_of(name: str) -> str:
    """The first component, as a prefix (`org/`); a name of one component is its own namespace."""
    return name.split("/", 1)[0] + "/" if "/" in name else name


def layout_treemap(usage: Usage, width: float = _WIDTH, height: float = _HEIGHT) -> list[Tile]:
    """The treemap in two levels: namespaces (first name component) tiled by their exclusive bytes, with one
    tile for the bytes several repositories share (counted once), so the whole area is the live bytes; in
    each namespace its repositories by exclusive bytes, those too small to see merged into one tile."""
    groups: dict[str, list[Row]] = {}
    for row in sort_rows(usage.rows):
        if row.exclusive_bytes > 0:
            groups.setdefault(namespace_of(row.name), []).append(row)
    outer = sorted(groups.items(), key=lambda item: (-sum(r.exclusive_bytes for r in item[1]), item[0]))
    values = [sum(r.exclusive_bytes for r in rows) for _, rows in outer]
    shared = usage.totals.shared_bytes
    rects = squarify(sorted([*values, shared], reverse=True), 0, 0, width, height)
    # squarify wants its values sorted: place the shared tile where its size puts it.
    order = sorted(range(len(values) + 1), key=lambda i: -([*values, shared][i]))
    placed = {index: rects[position] for position, index in enumerate(order)}
    tiles: list[Tile] = []
    if shared:
        tiles.append(Tile("shared", shared, f"shared by several repositories (counted once): {size(shared)}",
                          "url(#hatch)", placed[len(values)], "shared"))
    for number, (namespace, rows) in enumerate(outer):
        colour = _PALETTE[number % len(_PALETTE)]
        box = placed[number]
        if len(rows) == 1:
            tiles.append(Tile(display(rows[0].name), rows[0].exclusive_bytes, _row_detail(rows[0]), colour, box))
            continue
        tiles.append(Tile(display(namespace), values[number],
                          f"{display(namespace)}: {len(rows)} repositories, {size(values[number])} exclusive",
                          "#ffffff", box, "namespace"))
        header = _HEADER if box.height > 3 * _HEADER and box.width > 80 else 0.0
        inner = Rect(box.x + 1, box.y + header + 1, max(0.0, box.width - 2), max(0.0, box.height - header - 2))
        tiles.extend(_repositories_in(rows, inner, colour))
    return tiles


def _repositories_in(rows: list[Row], box: Rect, colour: str) -> list[Tile]:
    first = squarify([r.exclusive_bytes for r in rows], box.x, box.y, box.width, box.height)
    count = sum(1 for rect in first if rect.area >= _SMALLEST)  # the largest come first
    if count >= len(rows) - 1:
        count = len(rows)  # never a "1 more" tile
    shown, rest = rows[:count], rows[count:]
    rest_bytes = sum(r.exclusive_bytes for r in rest)
    rects = squarify([*(r.exclusive_bytes for r in shown), *([rest_bytes] if rest else [])],
                     box.x, box.y, box.width, box.height)
    tiles = [Tile(display(r.name), r.exclusive_bytes, _row_detail(r), colour, rect)
             for r, rect in zip(shown, rects, strict=False)]
    if rest:
        tiles.append(Tile(f"{len(rest)} more", rest_bytes,
                          f"{len(rest)} more repositories: {size(rest_bytes)} exclusive", "#bab0ac", rects[-1], "more"))
    return tiles


def _row_detail(row: Row) -> str:
    return (
        f"{display(row.name)}: {size(row.exclusive_bytes)} exclusive, {size(row.shared_bytes)} shared, "
        f"{size(row.referenced_bytes)} referenced; rm frees {size(row.frees_on_rm_bytes)}"
    )


def treemap_svg(usage: Usage) -> str:
    tiles = layout_treemap(usage)
    if not tiles:
        return '<p class="empty">No live bytes: nothing to draw.</p>'
    parts = [
        f'<svg class="treemap" viewBox="0 0 {_WIDTH:.0f} {_HEIGHT:.0f}" role="img" '
        'aria-label="Exclusive bytes per repository" xmlns="http://www.w3.org/2000/svg">',
        '<defs><pattern id="hatch" width="8" height="8" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
        '<rect width="8" height="8" fill="#e6e6e6"/><line x1="0" y1="0" x2="0" y2="8" stroke="#bdbdbd" '
        'stroke-width="3"/></pattern></defs>',
    ]
    for tile in tiles:
        rect = tile.rect
        namespace = tile.kind == "namespace"
        parts.append(
            f'<g class="tile {tile.kind}" data-{"namespace" if namespace else "repository"}="{escape(tile.label)}">'
            f"<title>{escape(tile.detail)}</title>"
            f'<rect x="{rect.x:.2f}" y="{rect.y:.2f}" width="{rect.width:.2f}" height="{rect.height:.2f}" '
            f'fill="{tile.colour}" stroke="{"#888888" if namespace else "#ffffff"}" '
            f'stroke-width="{1 if namespace else 1.5}"/>'
        )
        characters = max(4, int(rect.width / 7.5))
        label = tile.label if len(tile.label) <= characters else tile.label[: characters - 1] + "…"
        if namespace and rect.height > 3 * _HEADER and rect.width > 80:
            parts.append(f'<text x="{rect.x + 4:.2f}" y="{rect.y + 12:.2f}" class="namespace">'
                         f"{escape(label)} {escape(size(tile.value))}</text>")
        elif not namespace and rect.width >= 60 and rect.height >= 34:
            parts.append(
                f'<text x="{rect.x + 6:.2f}" y="{rect.y + 18:.2f}" class="label">{escape(label)}</text>'
                f'<text x="{rect.x + 6:.2f}" y="{rect.y + 32:.2f}" class="bytes">{escape(size(tile.value))}</text>'
            )
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


_STYLE = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1000px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; width: 100%; margin: .5em 0; }
th, td { text-align: left; padding: .2em .6em; border-bottom: 1px solid #eee; vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.damage { color: #b00020; } .garbage { color: #8a5a00; } .notice { color: #555; }
.warning { background: #fff3cd; border: 1px solid #e0c36c; padding: .5em 1em; }
.more { color: #666; font-style: italic; }
code { font: 12px ui-monospace, monospace; word-break: break-all; }
svg.treemap { width: 100%; height: auto; display: block; }
svg.treemap text.label { font: bold 13px system-ui, sans-serif; fill: #fff; }
svg.treemap text.bytes { font: 12px system-ui, sans-serif; fill: #fff; }
svg.treemap g.shared text { fill: #333; }
svg.treemap text.namespace { font: bold 11px system-ui, sans-serif; fill: #333; }
.totals { font-variant-numeric: tabular-nums; }
"""


def to_html(audit: Audit, context: Context, usage: Usage, limit: int = 20) -> str:
    """The page. `limit`: findings listed per id (0 for all), as the text report's --limit."""
    log = findings_of(audit)
    counts = summary(audit, log)
    totals = audit.totals
    title = f"registry-fsck audit of {display(context.v2)}"
    body: list[str] = [f"<h1>{escape(title)}</h1>",
                       f"<p>Generated {escape(context.generated_at.isoformat(timespec='seconds'))}."
                       f"{' Every blob re-hashed.' if context.verified else ''}</p>"]
    if not audit.complete:
        body.append('<p class="warning">INCOMPLETE: part of the tree could not be read or was not followed; '
                    "verdicts and figures that depend on it may be wrong.</p>")
    if audit.recent_uploads:
        body.append(f'<p class="warning">{audit.recent_uploads} upload(s) started in the last minutes: '
                    "the registry looks live.</p>")
    severities = counts["by_severity"]
    body.append("<h2>Summary</h2>")
    body.append(
        f"<p>{totals.repositories} repositories, {totals.tags} tags, {totals.manifests} manifests, "
        f"{totals.blobs} blobs ({escape(size(totals.blob_bytes))}). "
        f'<span class="damage">{severities["damage"]} damage</span>, '
        f'<span class="garbage">{severities["garbage"]} garbage</span>, '
        f'<span class="notice">{severities["notice"]} notices</span>; '
        f"reclaimable: <b>{escape(size(counts['reclaimable_bytes']))}</b>.</p>"
    )
    if counts["by_id"]:
        body.append('<table class="by-id"><tr><th>severity</th><th>id</th><th class="n">count</th>'
                    '<th class="n">bytes</th></tr>')
        for check_id, entry in counts["by_id"].items():
            body.append(
                f'<tr><td class="{entry["severity"]}">{entry["severity"]}</td><td><a href="#{check_id}">{check_id}</a></td>'
                f'<td class="n">{entry["count"]}</td><td class="n">{escape(size(entry["bytes"]))}</td></tr>'
            )
        body.append("</table>")
    else:
        body.append("<p>No problems found.</p>")
    body.extend(_usage_section(usage, limit))
    body.extend(_findings_section(log, limit))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>\n"
        + "\n".join(body) + "\n</body></html>\n"
    )


def _usage_section(usage: Usage, limit: int) -> list[str]:
    t = usage.totals
    lines = [
        "<h2>Where the space goes</h2>",
        "<p>Each tile's area is a repository's <b>exclusive</b> bytes (what no other repository's live manifests "
        "reach: deleting the repository makes them garbage), framed by namespace (the first part of the name); "
        "the hatched tile is the bytes several repositories share, counted once. Together they are the live "
        "bytes. Hover over a tile for its figures.</p>",
        treemap_svg(usage),
        f'<p class="totals">live {escape(size(t.live_bytes))} = exclusive {escape(size(t.exclusive_bytes))} + shared '
        f"{escape(size(t.shared_bytes))}; stored {escape(size(t.stored_bytes))} = live {escape(size(t.live_bytes))} + "
        f"garbage {escape(size(t.garbage_bytes))} + held by damage {escape(size(t.damage_held_bytes))}</p>",
    ]
    rows = sort_rows(usage.rows)
    shown = rows[:limit] if limit > 0 else rows
    lines.append(
        '<table class="du"><tr><th>repository</th><th class="n">tags</th><th class="n">manifests</th>'
        '<th class="n">untagged</th><th class="n">referenced</th><th class="n">exclusive</th><th class="n">shared</th>'
        '<th class="n">reclaimable</th><th class="n">frees on rm</th></tr>'
    )
    for r in shown:
        lines.append(
            f"<tr><td>{escape(display(r.name))}</td><td class=\"n\">{r.tags}</td><td class=\"n\">{r.manifests_live}</td>"
            f'<td class="n">{r.manifests_untagged}</td>'
            + "".join(f'<td class="n">{escape(size(v))}</td>' for v in (
                r.referenced_bytes, r.exclusive_bytes, r.shared_bytes, r.reclaimable_bytes, r.frees_on_rm_bytes))
            + "</tr>"
        )
    lines.append("</table>")
    if len(shown) < len(rows):
        lines.append(f'<p class="more">… and {len(rows) - len(shown)} more repositories '
                     "(registry-fsck du lists all).</p>")
    return lines


def _findings_section(findings: Iterable[Finding], limit: int) -> list[str]:
    """Findings by id, in report order (each id's findings follow each other), at most `limit` of each."""
    lines = ["<h2>Findings</h2>"]
    current: Id | None = None
    shown = hidden = 0

    def close() -> None:
        if current is None:
            return
        lines.append("</table>")
        if hidden:
            lines.append(f'<p class="more">… and {hidden} more {escape(current.value)} '
                         "(--limit 0 shows all; registry-fsck audit --json lists all).</p>")

    for finding in findings:
        if finding.id is not current:
            close()
            current, shown, hidden = finding.id, 0, 0
            check = BY_ID[current]
            lines.append(f'<h3 id="{current.value}" class="{check.severity.value}">{current.value} '
                         f"<small>({check.severity.value})</small></h3><p>{escape(check.meaning)}</p>")
            lines.append('<table class="findings"><tr><th>repository</th><th>tag</th><th>what</th>'
                         '<th class="n">bytes</th><th>message</th></tr>')
        if limit > 0 and shown >= limit:
            hidden += 1
            continue
        shown += 1
        what = layout.format_digest(finding.digest) if finding.digest else finding.path
        lines.append(
            f"<tr><td>{escape(display(finding.repository or ''))}</td><td>{escape(display(finding.tag or ''))}</td>"
            f'<td><code>{escape(display(what))}</code></td>'
            f'<td class="n">{escape(size(finding.bytes)) if finding.bytes else ""}</td>'
            f"<td>{escape(display(finding.message))}</td></tr>"
        )
    close()
    if current is None:
        lines.append("<p>None.</p>")
    return lines
