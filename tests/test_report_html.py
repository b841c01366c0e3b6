"""The self-contained HTML report (carcell/report/html.py) of a real cohort and of a trial directory.

The cohort is simulated for real (tisa-cel B-ALL, 20 patients, 120 days) and written with the
same functions as ``carcell run``; the trial directory is synthetic (trial.json as in
docs/trial-outputs.md plus tiny PNGs), because the trial writer is developed separately. The
expected numbers come from summary.json / trial.json and are formatted here, not by the report.
The browser test renders the page in headless Chromium and is skipped when playwright or
/usr/bin/chromium is absent.
"""

from __future__ import annotations

import base64
import json
import shutil
import struct
import subprocess
import sys
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from carcell.cohort.run import run_cohort
from carcell.errors import CarcellError
from carcell.io.outputs import write_outputs
from carcell.report.html import build_report, write_report
from carcell.report.plots import write_plots
from carcell.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
URL_ATTRS = {"src", "href", "srcset", "poster", "data", "action", "formaction", "background", "xlink:href"}


class Page(HTMLParser):
    """Everything the tests look at: URLs, images, ids, tag nesting, table rows and text."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.urls: list[tuple[str, str, str]] = []
        self.images: list[dict] = []
        self.ids: set[str] = set()
        self.classes: set[str] = set()
        self.tags: list[str] = []
        self.stack: list[str] = []
        self.nesting_errors: list[str] = []
        self.styles: list[str] = []
        self.rows: list[list[str]] = []
        self.h1: list[str] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in: dict[str, int] = {"h1": 0, "style": 0}
        self.text_parts: list[str] = []
        self.feed(text)
        self.close()
        self.text = " ".join(" ".join(self.text_parts).split())

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag not in VOID:
            self.stack.append(tag)
        if "id" in a:
            self.ids.add(a["id"])
        self.classes.update((a.get("class") or "").split())
        for k, v in a.items():
            if k in URL_ATTRS and v is not None:
                self.urls.append((tag, k, v))
            if k == "style" and v:
                self.styles.append(v)
        if tag == "img":
            self.images.append(a)
        if tag == "tr":
            self._row = []
        if tag in ("td", "th") and self._row is not None:
            self._cell = []
        if tag in self._in:
            self._in[tag] += 1

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.nesting_errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        if tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None
        if tag in self._in:
            self._in[tag] -= 1

    def handle_data(self, data):
        if self._in["style"]:
            self.styles.append(data)
            return
        self.text_parts.append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._in["h1"]:
            self.h1.append(data)

    def row(self, label: str) -> list[str]:
        found = [r for r in self.rows if r and r[0] == label]
        assert len(found) == 1, f"expected one table row {label!r}, found {len(found)}"
        return found[0]


def assert_self_contained(page: Page) -> None:
    """Only data: URIs and #anchors that exist; no scripts, stylesheets or remote CSS; tags balanced."""
    assert page.nesting_errors == [] and page.stack == [], (page.nesting_errors, page.stack)
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    for tag, attr, url in page.urls:
        assert url.startswith(("data:", "#")), f"<{tag} {attr}={url[:80]!r}> is not a data: URI or #anchor"
        if url.startswith("#"):
            assert url[1:] in page.ids, f"anchor {url} points nowhere"
    css = " ".join(page.styles)
    assert "@import" not in css and "url(" not in css, "CSS must not load anything"


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A valid single-colour RGB PNG, written by hand (no plotting code involved)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def embedded_pngs(page: Page) -> list[bytes]:
    prefix = "data:image/png;base64,"
    return [base64.b64decode(i["src"][len(prefix):]) for i in page.images if i.get("src", "").startswith(prefix)]


def pct(v: float) -> str:
    return f"{100 * v:.0f}%"


def rate_ci(r: dict) -> str:
    lo, hi = r["ci95"]
    text = f"{100 * r['estimate']:.0f}% ({100 * lo:.0f}\u2013{100 * hi:.0f})"
    return text + f"; {r['events']}/{r['n']}" if "events" in r else text


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory) -> Path:
    """A real ``carcell run`` output directory, written as cli.run writes it."""
    sc = load_scenario(ROOT / "examples" / "tisacel_ball.yaml", ["population.n=20", "trial.follow_up_days=120"])
    result = run_cohort(sc)
    out = tmp_path_factory.mktemp("cohort")
    write_outputs(result, out, {"command": "tests/test_report_html.py"})
    write_plots(result, out)
    return out


def trial_json() -> dict:
    def rate(est, lo, hi, events, n=170):  # as the trial writer stores them: events of n (infused) patients
        return {"estimate": est, "ci95": [lo, hi], "events": events, "n": n}

    def endpoint(med, lo, hi, l6, l12):
        return {"median_days": med, "median_ci95": [lo, hi],
                "landmarks": {"180": {"estimate": l6, "ci95": [l6 - 0.1, l6 + 0.1]},
                              "365": {"estimate": l12, "ci95": [l12 - 0.1, l12 + 0.1]},
                              "730": {"estimate": None, "ci95": [None, None]}}}  # beyond follow-up

    tox_soc = {k: None for k in ("crs_any", "crs_grade3plus", "icans_any", "icans_grade3plus",
                                 "tocilizumab_use", "steroid_use")}
    return {
        "name": "ZUMA-7-like <virtual> trial", "disease": "LBCL", "response_criteria": "lugano",
        "follow_up_days": 730.0, "seed": 7,
        "arms": {
            "axi-cel": {"kind": "car", "n_randomised": 180, "n_infused": 170,
                        "orr": rate(0.83, 0.77, 0.88, 149, 180), "cr": rate(0.65, 0.58, 0.72, 117, 180),
                        "pfs": endpoint(452.0, 300.0, None, 0.62, 0.48),
                        "os": endpoint(None, 600.0, None, 0.85, 0.72),
                        "toxicity": {
                            "crs_any": rate(0.92, 0.87, 0.95, 156), "crs_grade3plus": rate(0.06, 0.03, 0.11, 10),
                            "icans_any": rate(0.6, 0.52, 0.67, 102), "icans_grade3plus": rate(0.21, 0.15, 0.28, 36),
                            "tocilizumab_use": rate(0.65, 0.57, 0.72, 110), "steroid_use": rate(0.25, 0.19, 0.32, 42)},
                        "deaths": {"total": 60, "progression": 52, "crs": 1, "icans": 0, "infection": 7}},
            "SOC": {"kind": "soc", "n_randomised": 179, "n_infused": 168,
                    "orr": rate(0.5, 0.42, 0.57, 89, 179), "cr": rate(0.32, 0.25, 0.39, 57, 179),
                    "pfs": endpoint(61.0, 50.0, 90.0, 0.33, 0.16),
                    "os": endpoint(500.0, 380.0, 700.0, 0.75, 0.6),
                    "toxicity": tox_soc,
                    "deaths": {"total": 80, "progression": 75, "crs": 0, "icans": 0, "infection": 5}},
        },
        "comparisons": [
            {"arm": "axi-cel", "reference": "SOC", "endpoint": "pfs", "hazard_ratio": 0.398,
             "ci95": [0.308, 0.514], "logrank_p": 1e-9,
             "n_arm": 180, "n_reference": 179, "events_arm": 90, "events_reference": 140},
            {"arm": "axi-cel", "reference": "SOC", "endpoint": "os", "hazard_ratio": 0.73,
             "ci95": [0.54, 0.98], "logrank_p": 0.0412},
        ],
        "populations": {"itt": 359, "mitt": 338},
    }


@pytest.fixture(scope="module")
def trial_dir(tmp_path_factory) -> Path:
    """A trial directory without provenance.json: trial.json and two tiny PNGs."""
    out = tmp_path_factory.mktemp("trial")
    (out / "trial.json").write_text(json.dumps(trial_json(), indent=2))
    (out / "km_pfs.png").write_bytes(png(40, 24, (31, 95, 139)))
    (out / "dose_finding_grid.png").write_bytes(png(16, 16, (200, 60, 40)))
    return out


# --------------------------------------------------------------------------------------------
# structure and content


def test_cohort_report_is_self_contained_and_shows_the_run(cohort_dir, tmp_path):
    out = write_report(cohort_dir, tmp_path / "sub" / "report.html")
    page = Page(out.read_text(encoding="utf-8"))
    assert_self_contained(page)

    summ = json.loads((cohort_dir / "summary.json").read_text())
    prov = json.loads((cohort_dir / "provenance.json").read_text())
    pngs = sorted(cohort_dir.glob("*.png"))
    assert len(pngs) >= 4
    assert embedded_pngs(page) == [p.read_bytes() for p in pngs], "every PNG, byte for byte, in name order"
    assert all(i.get("alt") for i in page.images)

    assert " ".join(page.h1).strip() == summ["scenario"]
    assert prov["scenario_sha256"] in page.text and str(prov["seed"]) in page.text
    assert prov["carcell_version"] in page.text

    n_ok = summ["cohort_size"] - summ["solver_failures"]
    cr, orr = summ["complete_response_rate"], summ["objective_response_rate"]
    assert page.row("Complete response rate")[1] == f"{pct(cr)} ({round(cr * n_ok)}/{n_ok})"
    assert page.row("Objective response rate")[1] == f"{pct(orr)} ({round(orr * n_ok)}/{n_ok})"
    crs = summ["toxicity"]["crs_any"]
    assert page.row("CRS, any grade (ASTCT)")[1] == f"{pct(crs)} ({round(crs * n_ok)}/{n_ok})"
    # a share of the patients given tocilizumab, not of the cohort: no cohort count beside it
    toci = summ["toxicity"]["tocilizumab_response"]
    assert page.row("CRS resolved after tocilizumab (of those given it; FDA definition)")[1] == pct(toci)
    med, p5, p95 = (summ["tmax_days"][k] for k in ("median", "p5", "p95"))
    assert page.row("Tmax, days")[1] == f"{med:.1f} ({p5:.1f}\u2013{p95:.1f})"
    assert page.row("Antigen-negative relapses")[1] == str(summ["antigen_negative_relapses"])

    refs = prov["citations"]["references"]
    assert refs and all(" ".join(r.split()) in page.text for r in refs)
    ledger = [r for r in page.rows if len(r) == 5]
    assert len(ledger) == len(prov["design"]["parameters"]) + 1  # + header
    assert "product:" in page.text and "tisa-cel" in page.text  # the scenario YAML
    assert "Simulated data." in page.text
    # everything optional is present here: no "not available" paragraph or cell
    assert "na" not in page.classes and not any("not available" in c for r in page.rows for c in r)


def test_trial_report_shows_both_arms_and_the_hazard_ratio(trial_dir):
    page = Page(build_report(trial_dir))
    assert_self_contained(page)
    t = trial_json()
    a, s = t["arms"]["axi-cel"], t["arms"]["SOC"]
    assert " ".join(page.h1).strip() == t["name"]  # escaped in the source, literal in the text
    assert page.row("Measure")[1:] == ["axi-cel (CAR)", "SOC"]
    assert page.row("Randomised (ITT), n")[1:] == ["180", "179"]
    assert page.row("Objective response (ORR)")[1:] == [rate_ci(a["orr"]), rate_ci(s["orr"])]
    assert page.row("Complete response (CR)")[1:] == [rate_ci(a["cr"]), rate_ci(s["cr"])]
    months = 30.4375
    assert page.row("Median PFS, months (95% CI)")[1:] == [
        f"{452 / months:.1f} ({300 / months:.1f}\u2013NR)",
        f"{61 / months:.1f} ({50 / months:.1f}\u2013{90 / months:.1f})"]
    assert page.row("Median OS, months (95% CI)")[1] == f"NR ({600 / months:.1f}\u2013NR)"
    assert page.row("PFS at 12 months (day 365), % (95% CI)")[1:] == [
        rate_ci(a["pfs"]["landmarks"]["365"]), rate_ci(s["pfs"]["landmarks"]["365"])]
    assert page.row("CRS, grade \u2265 3")[1:] == [rate_ci(a["toxicity"]["crs_grade3plus"]), "n/a"]
    assert page.row("Corticosteroids given")[1] == rate_ci(a["toxicity"]["steroid_use"])
    assert not any(r[0].startswith("PFS at 24 months") for r in page.rows)  # not estimable in any arm
    assert page.row("from infection")[1:] == ["7", "5"] and page.row("All causes")[1:] == ["60", "80"]
    assert not any(r[0] == "from ICANS" for r in page.rows)  # no arm had one
    assert page.row("PFS") == ["PFS", "axi-cel vs SOC", "90/180 vs 140/179", "0.40 (0.31\u20130.51)", "< 0.001"]
    assert page.row("OS") == ["OS", "axi-cel vs SOC", "\u2013", "0.73 (0.54\u20130.98)", "0.041"]

    assert embedded_pngs(page) == [(trial_dir / n).read_bytes() for n in ("dose_finding_grid.png", "km_pfs.png")]
    assert "Progression-free survival by arm (Kaplan-Meier, numbers at risk below)" in page.text
    assert "Dose finding grid" in page.text
    for section in ("provenance.json: not available", "Citations: not available"):
        assert section in page.text
    assert "na" in page.classes
    assert "Cohort summary" not in page.text


def test_trial_directory_with_a_summary_shows_both(trial_dir, cohort_dir, tmp_path):
    shutil.copytree(trial_dir, tmp_path / "both")
    shutil.copy(cohort_dir / "summary.json", tmp_path / "both" / "summary.json")
    page = Page(build_report(tmp_path / "both"))
    assert_self_contained(page)
    assert page.row("Objective response (ORR)") and page.row("Complete response rate")


def test_text_is_escaped(tmp_path):
    t = trial_json()
    t["arms"] = {"<b>A&B</b>": t["arms"]["axi-cel"]}
    t["comparisons"] = []
    (tmp_path / "trial.json").write_text(json.dumps(t))
    text = build_report(tmp_path)
    assert "<b>A&B</b>" not in text and "&lt;b&gt;A&amp;B&lt;/b&gt;" in text
    assert "<virtual>" not in text
    page = Page(text)
    assert_self_contained(page)
    assert "Comparisons: not available (a single arm)." in page.text


def test_directory_without_results_is_a_one_line_error(tmp_path):
    (tmp_path / "provenance.json").write_text("{}")
    with pytest.raises(CarcellError, match="neither summary.json nor trial.json"):
        build_report(tmp_path)
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(CarcellError, match="summary.json: not valid JSON"):
        build_report(tmp_path)
    with pytest.raises(CarcellError, match="no such directory"):
        build_report(tmp_path / "missing")


def test_cli_report(cohort_dir, tmp_path):
    run = subprocess.run([sys.executable, "-m", "carcell", "report", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert "neither summary.json nor trial.json" in run.stderr

    shutil.copytree(cohort_dir, tmp_path / "run")
    run = subprocess.run([sys.executable, "-m", "carcell", "report", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    default = tmp_path / "run" / "report.html"
    assert default.is_file() and str(default) in run.stdout.replace("\n", "") and "kB" in run.stdout
    target = tmp_path / "elsewhere" / "r.html"
    run = subprocess.run([sys.executable, "-m", "carcell", "report", str(tmp_path / "run"), "-o", str(target)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and target.stat().st_size > 100_000


# --------------------------------------------------------------------------------------------
# a real browser


@pytest.mark.parametrize("which", ["cohort_dir", "trial_dir"])
def test_report_renders_in_headless_chromium(which, request, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not installed")
    run_dir = request.getfixturevalue(which)
    report = write_report(run_dir, tmp_path / "report.html")
    n_png = len(list(run_dir.glob("*.png")))
    shot = tmp_path / "report.png"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            requests: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report.as_uri(), wait_until="load")
            images = page.eval_on_selector_all(
                "img", "els => Promise.all(els.map(e => e.decode().then(() => [e.complete, e.naturalWidth],"
                       " () => [false, e.naturalWidth])))")
            height = page.evaluate("document.documentElement.scrollHeight")
            width = page.evaluate("document.documentElement.scrollWidth")
            page.screenshot(path=str(shot), full_page=True)
            page.emulate_media(media="print")
            ledger_printed = page.locator("table.ledger").count() == 0 or page.locator("table.ledger").is_visible()
            pdf = page.pdf(format="A4", print_background=True)
        finally:
            browser.close()
    assert errors == []
    assert all(u == report.as_uri() or u.startswith("data:") for u in requests), requests
    assert len(images) == n_png and all(done and w > 0 for done, w in images), images
    assert width <= 1280, f"the page scrolls sideways ({width} px)"
    # about 5,400 px for 20 patients; Chromium's full-page screenshot stalls near 16 M pixels
    assert 600 < height < (11_000 if which == "cohort_dir" else 4_000), height
    assert ledger_printed, "the collapsed parameters ledger must be printed"
    assert pdf.startswith(b"%PDF") and len(pdf) > 20_000
    data = shot.read_bytes()
    w, h = struct.unpack(">II", data[16:24])
    assert data.startswith(b"\x89PNG") and len(data) > 30_000 and w == 1280 and h >= height - 1
