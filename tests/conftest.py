"""Shared fixtures: where the real public reference data live (skip cleanly when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from magn_lib.config import project_root


def reference_data_root() -> Path | None:
    """``$MAGN_REFERENCE_DATA`` or ``../shared/reference-data`` beside the checkout, if present."""
    candidates = [
        os.environ.get("MAGN_REFERENCE_DATA"),
        project_root().parent / "shared" / "reference-data",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def reference_data() -> Path:
    root = reference_data_root()
    if root is None:
        pytest.skip(
            "real reference data not found: set MAGN_REFERENCE_DATA or place it at "
            "../shared/reference-data beside the checkout"
        )
    return root


def chromium_path() -> str | None:
    """The system Chromium, if any (``$MAGN_CHROMIUM`` overrides)."""
    import shutil

    for candidate in (os.environ.get("MAGN_CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium page factory (playwright driving the system browser)."""
    executable = chromium_path()
    if executable is None:
        pytest.skip("Chromium is not installed (make test installs it with apt-get as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=executable,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        yield chromium
        chromium.close()


def open_in_browser(browser, path: Path, screenshot: Path) -> tuple[object, list[str]]:
    """Load ``path`` in a new page, screenshot it; return the page and every console error,
    page error and failed request."""
    page = browser.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")
    page.screenshot(path=str(screenshot), full_page=True)
    return page, problems
