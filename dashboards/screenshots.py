"""Render every dashboards page in headless Chromium (Debian's `chromium` package, driven
by Playwright) and save a screenshot of each; exits non-zero if a page shows an error or a
traceback, or has no chart.

    python -m dashboards.screenshots --url http://127.0.0.1:8501 \\
        --email demo@chatlake.local --password … --out screenshots/

Without --email/--password it signs in with the demo login that `chatlake up` keeps in
`$CHATLAKE_HOME/demo-tenant.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from chatlake.settings import get_settings

PAGES = ["Overview", "Conversations", "Intents and failure points", "Model usage and cost",
         "Billing and invoices", "Data quality"]  # fmt: skip
# what the probe of this machine found Chromium needs headless, with no network
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip


def _slug(title: str) -> str:
    return title.lower().replace(" ", "-")


def capture(
    url: str, email: str, password: str, out: Path, chromium: str = "/usr/bin/chromium"
) -> list[dict[str, Any]]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    report = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.goto(url)
        page.get_by_role("textbox", name="Email").fill(email)
        page.get_by_role("textbox", name="Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("heading", name="Overview").wait_for(timeout=60_000)
        # the pages the signed-in role may open: the sidebar lists only those
        shown = [t for t in PAGES if t == "Overview" or page.get_by_role("link", name=t).count()]
        for n, title in enumerate(shown, start=1):
            if n > 1:  # the sidebar's links switch pages inside the signed-in session
                page.get_by_role("link", name=title).click()
                page.get_by_role("heading", name=title).wait_for(timeout=60_000)
            page.wait_for_load_state("networkidle")
            # Streamlit marks a rerun in progress; wait until the page stops changing
            page.wait_for_selector("[data-testid='stStatusWidget']", state="detached",
                                   timeout=60_000)  # fmt: skip
            page.wait_for_timeout(1500)  # charts draw after their data arrives
            path = out / f"{n:02d}-{_slug(title)}.png"
            page.screenshot(path=str(path), full_page=True)
            report.append({
                "page": title,
                "screenshot": str(path),
                "charts": page.locator("[data-testid='stVegaLiteChart']").count(),
                "errors": page.locator("[data-testid='stAlertContentError']").count(),
                "tracebacks": page.locator("[data-testid='stException']").count(),
            })  # fmt: skip
        browser.close()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8501")
    parser.add_argument("--email")
    parser.add_argument("--password")
    parser.add_argument("--out", default="screenshots", type=Path)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    if not args.email or not args.password:
        demo_file = get_settings().home / "demo-tenant.json"
        if not demo_file.exists():
            sys.exit(f"error: no --email/--password and no demo login in {demo_file}")
        demo = json.loads(demo_file.read_text())
        args.email, args.password = demo["dashboard_email"], demo["dashboard_password"]
    if not Path(args.chromium).exists():
        sys.exit(f"error: no Chromium at {args.chromium} (apt-get install chromium)")
    report = capture(args.url, args.email, args.password, args.out, args.chromium)
    print(json.dumps({"pages": report}, indent=2))
    if any(p["errors"] or p["tracebacks"] or not p["charts"] for p in report):
        sys.exit(1)


if __name__ == "__main__":
    main()
