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
    report = json.loads(run_cli("scan", str(SAMPLES / "zoo.keras"), "--format", "json").stdout)["result"]
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
    variables = json.loads(result.stdout)["result"]["variables"]
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


def _drawn(axes, names) -> dict:
    """Each point of ``axes`` as (series, y), keyed by the variable its x position stands for."""
    return {
        names[int(round(x))]: (collection.get_gid(), y)
        for collection in axes.collections
        if collection.get_gid() != "coupled"
        for x, y in collection.get_offsets()
    }


def test_verify_plot_points_are_the_reports_ratios(tmp_path, verify_report):
    from decay_audit.report.plot import DPI, VERIFY_SIZE, plot_verify, verify_figure

    png = tmp_path / "verify.png"
    points = plot_verify(verify_report, png)
    assert _png_size(png) == (int(VERIFY_SIZE[0] * DPI), int(VERIFY_SIZE[1] * DPI))
    measured_axes, strip = verify_figure(verify_report).axes
    labels = [label.get_text() for label in strip.get_xticklabels()]
    assert sorted(labels) == sorted(m.path for m in verify_report.measurements)
    by_path = {m.path: m for m in verify_report.measurements}
    drawn = _drawn(measured_axes, labels)
    for path, (series, y) in drawn.items():
        measurement = by_path[path]
        assert y == pytest.approx(measurement.decoupled_ratio)
        assert series == ("mismatch" if not measurement.ok else "as intended")
    assert len(drawn) == len(points.paths) == 4 and not _drawn(strip, labels)  # AdamW decays all four
    assert measured_axes.get_yscale() == "log"


def _synthetic_verify(count: int):
    """``count`` variables of five kinds, every 37th wrong, the ones not decayed by design unmeasured."""
    from decay_audit.findings import Outcome
    from decay_audit.kinds import Kind
    from decay_audit.results import Measurement, VerifyReport

    kinds = [Kind.KERNEL, Kind.BIAS, Kind.NORM, Kind.EMBEDDING, Kind.SCALE]
    measurements = []
    for i in range(count):
        kind = kinds[i * 3 % len(kinds)]
        decays, wrong = kind is Kind.KERNEL, i % 37 == 5
        measured = decays != wrong
        measurements.append(
            Measurement(
                path=f"block_{i // 5}/{kind.value}_{i}",
                expected_decay=decays,
                intent=f"{kind.value} under kernels-only",
                steps=3,
                decoupled_steps=3 if measured else 0,
                coupled_steps=3 if i % 50 == 1 else 0,
                decoupled_ratio=1.0 + (i % 7) / 100 if measured else None,
                coupled_relative=0.0,
                outcome=Outcome.OK if not wrong else Outcome.NOT_DECAYED if decays else Outcome.DECAYED_AGAINST_INTENT,
                detail="synthetic",
            )
        )
    return VerifyReport("train.py:make", "AdamW", 0.01, 3, "CPU", tuple(measurements))


def test_verify_plot_of_500_variables_keeps_not_measured_off_the_log_axis(tmp_path):
    from decay_audit.report.plot import DPI, LISTED, VERIFY_SIZE, plot_verify, verify_figure

    report = _synthetic_verify(500)
    points = plot_verify(report, tmp_path / "verify.png")
    assert _png_size(tmp_path / "verify.png") == (int(VERIFY_SIZE[0] * DPI), int(VERIFY_SIZE[1] * DPI))
    figure = verify_figure(report)
    measured_axes, strip = figure.axes
    by_path = {m.path: m for m in report.measurements}
    on_axis, off_axis = _drawn(measured_axes, points.paths), _drawn(strip, points.paths)
    assert len(on_axis) + len(off_axis) == 500 and not set(on_axis) & set(off_axis)
    assert {p for p, m in by_path.items() if m.decoupled_ratio is None} == set(off_axis)
    for path, (series, y) in on_axis.items():
        assert y == pytest.approx(by_path[path].decoupled_ratio) and series in ("as intended", "mismatch")
        assert (series == "mismatch") == (not by_path[path].ok)
    for path, (series, _) in off_axis.items():  # not measured: its own strip and legend entry, not a height
        assert series == ("not measured: mismatch" if not by_path[path].ok else "not measured: as intended")
    legend = [text.get_text() for text in measured_axes.get_legend().get_texts()]
    assert "not measured (no decoupled decay)" in legend and "not measured, mismatch" in legend
    assert min(y for _, y in on_axis.values()) > measured_axes.get_ylim()[0]  # nothing sits on the bottom edge
    assert not strip.get_xticklabels()  # 500 names would overlap: the kinds label the groups instead
    groups = [t.get_text() for t in measured_axes.texts if t.get_gid() == "kind"]
    assert groups == [f"{kind} (100)" for kind in ("kernel", "bias", "norm", "embedding", "scale")]
    listed = next(t.get_text() for t in measured_axes.texts if t.get_gid() == "mismatch list")
    wrong = [m.path for m in report.measurements if not m.ok]
    assert listed.startswith(f"mismatches ({len(wrong)}):") and f"and {len(wrong) - LISTED} more" in listed
    assert sum(1 for path in wrong if path in listed.splitlines()) == LISTED


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
