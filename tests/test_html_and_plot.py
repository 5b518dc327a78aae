"""``--format html`` opened in a real headless Chromium, and ``--plot`` PNGs checked against the reports."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import SAMPLES, run_cli

import decay_audit
from decay_audit.inventory import Inventory, VariableRecord
from decay_audit.report import OutputFormat, Subject, render
from decay_audit.stages.scan import scan_inventory

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
needs_browser = pytest.mark.skipif(BROWSER is None, reason="no Chromium installed (Debian: apt-get install chromium)")


@pytest.fixture(scope="module")
def verify_report():
    """A real probe run: AdamW without exclusions, so both biases decay against kernels-only."""
    import keras
    import verify_setups

    return decay_audit.verify(verify_setups.compiled(keras.optimizers.AdamW(1e-2, weight_decay=0.1), exclude=False))


def _browser(url: str, tmp_path: Path, *extra: str) -> str:
    result = subprocess.run(
        [
            BROWSER,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _shown(dom: str) -> int:
    match = re.search(r'id="status"[^>]*data-shown="(\d+)"', dom)
    assert match, "the page's script did not run"
    return int(match.group(1))


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_scan_html_is_self_contained_and_escapes_names():
    hostile = "dense<script>alert(1)</script>"
    records = tuple(
        VariableRecord(
            path=f"{hostile}/{leaf}",
            leaf=leaf,
            layer=hostile,
            layer_class="Dense",
            shape=shape,
            dtype="float32",
            trainable=True,
            origin="test",
        )
        for leaf, shape in (("kernel", (3, 4)), ("bias", (4,)))
    )
    page = render(Subject.SCAN, OutputFormat.HTML, scan_inventory(Inventory('x"<b>.keras', "test", records)))
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page
    assert not re.search(r"""(src|href)\s*=|<link|@import|url\(|https?://""", page)
    assert "default-src 'none'" in page
    assert page.count('<tr class="var"') == 2


@needs_browser
def test_scan_html_renders_filters_and_sorts_in_chromium(tmp_path):
    page = tmp_path / "zoo.html"
    assert run_cli("scan", str(SAMPLES / "zoo.keras"), "--format", "html", "-o", str(page)).returncode == 0
    report = json.loads(run_cli("scan", str(SAMPLES / "zoo.keras"), "--format", "json").stdout)
    variables = report["variables"]
    dom = _browser(page.as_uri(), tmp_path, "--dump-dom")
    assert _shown(dom) == len(variables) == dom.count('<tr class="var"')
    groups = len({(v["layer"], v["layer_class"]) for v in variables})
    assert dom.count('<tr class="group"') == groups
    bias = sum(1 for v in variables if v["kind"] == "bias")
    assert _shown(_browser(page.as_uri() + "#kind=bias", tmp_path, "--dump-dom")) == bias > 0
    decayed_high = sum(1 for v in variables if v["decay"] and v["confidence"] == "high")
    assert _shown(_browser(page.as_uri() + "#decision=decayed&confidence=high", tmp_path, "--dump-dom")) == decayed_high
    by_size = _browser(page.as_uri() + "#sort=size&dir=desc", tmp_path, "--dump-dom")
    first = re.search(r'<tr class="var" data-group="\d+" data-path="([^"]+)"', by_size).group(1)
    assert first == max(variables, key=lambda v: v["parameters"])["path"]
    shot = tmp_path / "shot.png"
    _browser(page.as_uri(), tmp_path, f"--screenshot={shot}", "--window-size=1200,900")
    assert _png_size(shot) == (1200, 900) and shot.stat().st_size > 20_000  # a rendered page, not a blank one


@needs_browser
def test_verify_html_verdicts_in_chromium(tmp_path, verify_report):
    page = tmp_path / "verify.html"
    page.write_text(render(Subject.VERIFY, OutputFormat.HTML, verify_report))
    dom = _browser(page.as_uri(), tmp_path, "--dump-dom")
    assert _shown(dom) == len(verify_report.measurements) == 4
    wrong = _browser(page.as_uri() + "#verdict=decayed-against-intent", tmp_path, "--dump-dom")
    assert _shown(wrong) == len(verify_report.mismatches) == 2
    assert dom.count('class="var fail"') == 2


def test_scan_plot_png_and_bar_heights(tmp_path):
    from decay_audit.report.plot import DPI, SCAN_SIZE, scan_figure

    png = tmp_path / "scan.png"
    result = run_cli("scan", str(SAMPLES / "zoo.keras"), "--plot", str(png), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert _png_size(png) == (int(SCAN_SIZE[0] * DPI), int(SCAN_SIZE[1] * DPI))
    variables = json.loads(result.stdout)["variables"]
    figure = scan_figure(decay_audit.scan(SAMPLES / "zoo.keras"))
    axes = figure.axes[0]
    kinds = [label.get_text() for label in axes.get_xticklabels()]
    heights = {
        gid: [bar.get_height() for bar in axes.patches if bar.get_gid() == gid] for gid in ("decayed", "excluded")
    }
    for gid in heights:  # each bar's gid is its container's; fall back to containers
        if not heights[gid]:
            heights[gid] = [bar.get_height() for c in axes.containers if c.get_label() == gid for bar in c]
    for index, kind in enumerate(kinds):
        members = [v for v in variables if v["kind"] == kind]
        assert heights["decayed"][index] == sum(v["parameters"] for v in members if v["decay"])
        assert heights["excluded"][index] == sum(v["parameters"] for v in members if not v["decay"])
    assert sorted(kinds) == sorted({v["kind"] for v in variables})


def test_verify_plot_points_are_the_reports_ratios(tmp_path, verify_report):
    from decay_audit.report.plot import DPI, NONE_FLOOR, VERIFY_SIZE, plot_verify, verify_figure

    png = tmp_path / "verify.png"
    points = plot_verify(verify_report, png)
    assert _png_size(png) == (int(VERIFY_SIZE[0] * DPI), int(VERIFY_SIZE[1] * DPI))
    axes = verify_figure(verify_report).axes[0]
    labels = [label.get_text() for label in axes.get_xticklabels()]
    assert sorted(labels) == sorted(m.path for m in verify_report.measurements)
    by_path = {m.path: m for m in verify_report.measurements}
    drawn = {}
    for collection in axes.collections:
        for x, y in collection.get_offsets():
            drawn[labels[int(round(x))]] = (collection.get_gid(), y)
    for path, (series, y) in drawn.items():
        measurement = by_path[path]
        expected = measurement.decoupled_ratio if measurement.decoupled_ratio else NONE_FLOOR
        assert y == pytest.approx(expected)
        assert series == ("mismatch" if not measurement.ok else "as intended")
    assert len(drawn) == len(points.paths) == 4
    assert axes.get_yscale() == "log"


def test_plot_without_matplotlib_is_a_usage_error(tmp_path):
    blocker = tmp_path / "matplotlib"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('blocked for this test')\n")
    result = run_cli(
        "scan",
        str(SAMPLES / "seed.keras"),
        "--plot",
        str(tmp_path / "x.png"),
        env={"PYTHONPATH": f"{tmp_path}:{Path(decay_audit.__file__).parents[1]}"},
    )
    assert result.returncode == 2 and "decay-audit[plot]" in result.stderr and result.stdout == ""
    assert not (tmp_path / "x.png").exists()
    nowhere = run_cli("scan", str(SAMPLES / "seed.keras"), "--plot", str(tmp_path / "no" / "x.png"))
    assert nowhere.returncode == 2 and nowhere.stdout == "" and "directory of --plot" in nowhere.stderr
