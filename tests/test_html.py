"""`audit --html FILE`: the squarified treemap as a pure function, and the page in a real headless browser
(Debian's chromium and chromium-driver, driven by selenium): it renders with nothing in the console,
the biggest repositories are on it, and a screenshot is kept in tests/artifacts/html/ (git-ignored)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsck.html import Rect, squarify
from tests.clirun import invoke, run_cli

SCREENSHOTS = Path(__file__).parent / "artifacts" / "html"  # git-ignored: the test's artifacts
BOX = (0.0, 0.0, 960.0, 540.0)


# The treemap, as a pure function.


def _overlap(a: Rect, b: Rect) -> float:
    width = min(a.x + a.width, b.x + b.width) - max(a.x, b.x)
    height = min(a.y + a.height, b.y + b.height) - max(a.y, b.y)
    return max(0.0, width) * max(0.0, height)


def _aspect(rect: Rect) -> float:
    return max(rect.width / rect.height, rect.height / rect.width)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=40))
def test_squarify_tiles_the_box_with_areas_in_proportion(values: list[int]) -> None:
    values = sorted(values, reverse=True)
    x, y, width, height = BOX
    rects = squarify(values, x, y, width, height)
    assert len(rects) == len(values)
    total = sum(values)
    for value, rect in zip(values, rects, strict=True):
        expected = value / total * width * height if total else 0.0
        assert rect.area == pytest.approx(expected, rel=1e-6, abs=1e-6)
        assert rect.x >= x - 1e-6 and rect.y >= y - 1e-6
        assert rect.x + rect.width <= x + width + 1e-6 and rect.y + rect.height <= y + height + 1e-6
    for a, b in itertools.combinations(rects, 2):
        assert _overlap(a, b) <= 1e-6 * width * height
    if total:
        assert sum(r.area for r in rects) == pytest.approx(width * height)


def test_squarify_keeps_tiles_close_to_square() -> None:
    """Nine equal values in a square are a 3x3 grid, not nine slivers (what slice-and-dice would give)."""
    rects = squarify([1] * 9, 0, 0, 300, 300)
    assert max(_aspect(r) for r in rects) == pytest.approx(1.0)
    # A long tail beside one big value: no tile thinner than the layout needs.
    rects = squarify([60, 10, 10, 10, 5, 5], 0, 0, 600, 400)
    assert max(_aspect(r) for r in rects) < 3


def test_squarify_gives_zero_values_empty_tiles_and_refuses_negative_ones() -> None:
    rects = squarify([5, 0, 3], 0, 0, 10, 10)
    assert rects[1].area == 0 and rects[0].area == pytest.approx(62.5) and rects[2].area == pytest.approx(37.5)
    assert all(r.area == 0 for r in squarify([0, 0], 0, 0, 10, 10))
    assert squarify([], 0, 0, 10, 10) == []
    with pytest.raises(ValueError):
        squarify([1, -1], 0, 0, 10, 10)


# The page.


class _References(HTMLParser):
    """Every tag and every attribute that could make the page load something."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.references: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.references += [value or "" for name, value in attrs if name in ("src", "href", "srcset", "action")]


def _write_page(root: Path, out: Path, *args: str) -> tuple[int, str]:
    code, stdout = invoke("audit", str(root), "--html", str(out), *args)
    assert out.is_file()
    return code, out.read_text()


@pytest.mark.registry
def test_the_page_is_self_contained(demo, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    code, page = _write_page(demo.root, tmp_path / "out" / "report.html")
    assert code == 4  # the audit's exit code, as without --html
    found = _References()
    found.feed(page)
    assert "script" not in found.tags and "img" not in found.tags and "iframe" not in found.tags
    assert all(ref.startswith("#") or ref.startswith("data:") for ref in found.references), found.references
    assert "@import" not in page and "@font-face" not in page
    assert all(use == "url(#hatch)" for use in _urls(page))
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["report.html"]  # no temporary file left beside it


def _urls(page: str) -> list[str]:
    found, start = [], 0
    while (start := page.find("url(", start)) >= 0:
        end = page.index(")", start)
        found.append(page[start:end + 1])
        start = end
    return found


@pytest.mark.registry
def test_findings_are_grouped_by_id_and_bounded_by_limit(demo, tmp_path: Path) -> None:
    records = json.loads(invoke("audit", str(demo.root), "--json")[1])
    _, page = _write_page(demo.root, tmp_path / "report.html", "--limit", "2")
    orphans = [r for r in records["findings"] if r["id"] == "blob-orphan"]
    assert len(orphans) > 2
    assert f"… and {len(orphans) - 2} more blob-orphan" in page
    assert page.count('<h3 id="') == len(records["summary"]["by_id"])
    stale = next(r for r in records["findings"] if r["id"] == "tag-index-stale")
    assert f"<td>{stale['repository']}</td><td>{stale['tag']}</td>" in page


@pytest.mark.registry
def test_the_file_is_replaced_atomically_and_never_written_inside_the_root(demo, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "report.html"
    out.write_text("old")
    _write_page(demo.root, out)
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"]
    inside = run_cli("audit", str(demo.root), "--html", str(demo.root / "report.html"))
    assert inside.returncode == 16 and "refusing to write inside the registry's root" in inside.stderr
    assert not (demo.root / "report.html").exists()
    missing = run_cli("audit", str(demo.root), "--html", str(tmp_path / "no-such-dir" / "report.html"))
    assert missing.returncode == 8
    assert missing.stderr.strip().startswith("registry-fsck: error:") and len(missing.stderr.strip().splitlines()) == 1


# In a real browser.


def _require_browser() -> None:
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (the test extra)")
    if not missing:
        return
    message = f"the browser tests need {', '.join(missing)} (Debian packages chromium, chromium-driver)"
    if os.environ.get("CI"):  # CI must never pass by skipping them
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1100,1600", "--disable-extensions", "--no-first-run"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _open(driver, page: Path) -> list[dict]:
    """Load the page; what its console said."""
    driver.get_log("browser")  # what earlier pages left
    driver.get(page.resolve().as_uri())
    driver.execute_script("return document.readyState")
    return driver.get_log("browser")


def test_the_console_check_sees_errors(browser, tmp_path: Path) -> None:
    """The check below can fail: a page with a script error and a missing image is caught."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
                    '<img src="missing.png"><script>console.error("broken on purpose")</script></body></html>')
    messages = " ".join(entry["message"] for entry in _open(browser, page))
    assert "broken on purpose" in messages and "missing.png" in messages


@pytest.mark.registry
def test_the_page_renders_in_chromium_without_console_errors_and_shows_the_biggest_repositories(
    browser, demo, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    out = tmp_path / "report.html"
    _write_page(demo.root, out)
    console = _open(browser, out)
    assert console == [], console
    assert browser.title.startswith("registry-fsck audit of ")
    rows = json.loads(invoke("du", str(demo.root), "--json")[1])["repositories"]
    biggest = [r["repository"] for r in rows[:3]]
    tiles = {}
    for tile in browser.find_elements(By.CSS_SELECTOR, "svg.treemap g.tile"):
        box = tile.find_element(By.TAG_NAME, "rect").rect
        tiles[tile.get_attribute("data-repository")] = (box["width"] * box["height"], tile.text)
    for name in biggest:
        area, label = tiles[name]
        assert area > 0 and name in label  # drawn, and labelled legibly on the page
    areas = [tiles[r["repository"]][0] for r in rows if r["exclusive_bytes"]]
    assert _close_to_sorted(areas)
    assert tiles["shared"][0] > 0  # the shared bytes have their tile
    table = browser.find_element(By.CSS_SELECTOR, "table.du").text
    assert all(name in table for name in biggest)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / "audit-demo.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000


def _close_to_sorted(areas: list[float]) -> bool:
    """Rendered areas follow the byte counts; pixel rounding may swap two near-equal ones."""
    return all(later <= earlier * 1.02 for earlier, later in itertools.pairwise(areas))
