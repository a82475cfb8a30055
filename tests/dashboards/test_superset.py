"""A fresh Superset against a PostgreSQL filled with generated data: the bundle imports,
every chart's query succeeds with rows (API), and every dashboard draws (real browser).

One Superset per module (the `served` fixture); the tests share it.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from tripflow import dashboards
from tripflow.dashboards import catalog, superset
from tripflow.settings import Settings

TITLES = {d.title for d in catalog.dashboards()}


def _dashboards(api: Any) -> dict[str, int]:
    found = api.call("GET", "/api/v1/dashboard/?q=(page_size:100)")["result"]
    return {d["dashboard_title"]: d["id"] for d in found}


def test_every_chart_query_succeeds_with_rows(api: Any) -> None:
    ids = _dashboards(api)
    assert set(ids) == TITLES
    checked = 0
    for dashboard in catalog.dashboards():
        charts = api.call("GET", f"/api/v1/dashboard/{ids[dashboard.title]}/charts")["result"]
        assert sorted(c["slice_name"] for c in charts) == sorted(
            c.title for c in dashboard.charts()), dashboard.title
        for chart in charts:
            # The chart's stored query (query_context), run by Superset as the reader.
            data = api.call("GET", f"/api/v1/chart/{chart['id']}/data/?force=true")
            for result in data["result"]:
                assert result.get("error") is None, (chart["slice_name"], result["error"])
                assert result["rowcount"] > 0, f"{chart['slice_name']}: no rows"
            checked += 1
    assert checked == len(catalog.charts())


def test_reimport_updates_instead_of_duplicating(api: Any, dash_settings: Settings) -> None:
    before = _dashboards(api)
    charts_before = api.call("GET", "/api/v1/chart/?q=(page_size:100)")["count"]
    datasets_before = api.call("GET", "/api/v1/dataset/?q=(page_size:100)")["count"]
    result = dashboards.import_bundle(dash_settings)
    assert result["dashboards"] == before
    assert api.call("GET", "/api/v1/chart/?q=(page_size:100)")["count"] == charts_before
    assert api.call("GET", "/api/v1/dataset/?q=(page_size:100)")["count"] == datasets_before
    assert charts_before == len(catalog.charts())
    assert datasets_before == len(catalog.DATASETS)


def test_a_second_serve_reuses_the_running_superset(served: dashboards.ServeResult,
                                                  dash_settings: Settings) -> None:
    assert served.new_password  # a fresh Superset: its admin was created now
    began = time.monotonic()
    again = dashboards.serve_info(dash_settings, background=True)
    assert again.url == served.url
    assert again.new_password is None  # printed once, on the first serve only
    assert again.dashboards == served.dashboards
    assert time.monotonic() - began < 60


def test_secrets_stay_out_of_bundle_and_are_private(served: dashboards.ServeResult,
                                                    dash_settings: Settings) -> None:
    from zipfile import ZipFile

    from tripflow import db

    paths = superset.SupersetPaths.of(dash_settings)
    reader_password = db.reader_password(dash_settings)
    with ZipFile(paths.bundle) as bundle:
        text = "".join(bundle.read(name).decode() for name in bundle.namelist())
    assert reader_password not in text
    assert served.password_file.read_text().strip() not in text
    for secret in (served.password_file, paths.secret_key, paths.config):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    assert stat.S_IMODE(paths.dir.stat().st_mode) == 0o700


# --- the browser -----------------------------------------------------------------------

# Evaluated in the page for one chart: its state ("loading", "error", "empty", "drawn",
# "blank") and a detail. "drawn" needs visible output: non-blank canvas pixels (ECharts),
# table rows, an SVG with marks, or a big number.
CHART_STATE = """
el => {
  const body = el.querySelector('.dashboard-chart') || el;
  const text = body.innerText || '';
  if (body.querySelector('.loading, [data-test="loading-indicator"], .ant-skeleton'))
    return ['loading', ''];
  const alert = body.querySelector('.ant-alert-error, [role="alert"]');
  if (alert) return ['error', alert.innerText.slice(0, 300)];
  if (body.querySelector('.ant-empty') || /No results were returned/.test(text))
    return ['empty', text.slice(0, 200)];
  for (const canvas of body.querySelectorAll('canvas')) {
    if (!canvas.width || !canvas.height) continue;
    const ctx = canvas.getContext('2d');
    if (!ctx) continue;
    const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    let painted = 0;
    for (let i = 3; i < pixels.length; i += 16) if (pixels[i] > 0) painted++;
    if (painted > 50) return ['drawn', 'canvas'];
  }
  const rows = body.querySelectorAll('table tbody tr').length;
  if (rows > 0) return ['drawn', rows + ' rows'];
  if (body.querySelectorAll('svg path, svg rect').length > 5) return ['drawn', 'svg'];
  const big = body.querySelector('.header-line, [class*="big-number"]');
  if (big && /\\d/.test(big.innerText)) return ['drawn', 'big number ' + big.innerText];
  return ['blank', text.slice(0, 200)];
}
"""

BROWSER_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def _chart_states(page: Any) -> dict[str, tuple[str, str]]:
    states = {}
    for element in page.query_selector_all('[data-test="chart-grid-component"]'):
        name = element.get_attribute("data-test-chart-name") or "?"
        states[name] = tuple(element.evaluate(CHART_STATE))
    return states


def _wait_for_charts(page: Any, expected: int, timeout_s: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    states: dict[str, Any] = {}
    while time.monotonic() < deadline:
        states = _chart_states(page)
        # "blank" is not final: a chart can be between its data and its paint.
        if len(states) == expected and all(
                s[0] in {"drawn", "error", "empty"} for s in states.values()):
            return states
        time.sleep(0.5)
    return states


def test_every_dashboard_draws_in_a_browser(served: dashboards.ServeResult,
                                           screenshots_dir: Path) -> None:
    from playwright.sync_api import sync_playwright

    password = served.password_file.read_text().strip()
    print(f"\nscreenshots: {screenshots_dir}")
    problems = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_chromium(), args=BROWSER_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{served.url}/login/")
        page.fill("#username", superset.ADMIN_USER)
        page.fill("#password", password)
        page.click('button[type="submit"]')
        page.wait_for_url(lambda url: "/login" not in url, timeout=60_000)
        for dashboard in catalog.dashboards():
            page.goto(f"{served.url}/superset/dashboard/{dashboard.slug}/")
            expected = len(dashboard.charts())
            states = _wait_for_charts(page, expected)
            page.wait_for_timeout(1000)  # let animations settle before the picture
            shot = screenshots_dir / f"{dashboard.key}.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"  {dashboard.title}: {shot}")
            if len(states) != expected:
                problems.append(f"{dashboard.title}: {len(states)} of {expected} charts")
            problems += [f"{dashboard.title} / {name}: {state} {detail}"
                         for name, (state, detail) in states.items() if state != "drawn"]
        browser.close()
    assert not problems, "\n".join(problems)


def _chromium() -> str:
    path = os.environ.get("TRIPFLOW_CHROMIUM") or shutil.which("chromium")
    if not path:
        pytest.fail("no chromium: `apt-get install chromium` (.ci/run does)")
    return path
