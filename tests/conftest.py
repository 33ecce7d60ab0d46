"""Shared fixtures: torch threads, the small embedded cohort, the toy lesion dataset, the real
reference data (skipped cleanly when absent) and a headless browser."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import ToyCrops, make_small_cohort, reference_data_root


@pytest.fixture(scope="session", autouse=True)
def torch_threads():
    """One torch thread for the whole session: two spin-wait badly on a busy 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory) -> Path:
    """The small embedded cohort (:data:`tests.helpers.SMALL_COHORT`), generated once per test
    process: its folder, with ``manifest/`` and ``truth/`` inside."""
    return make_small_cohort(tmp_path_factory.mktemp("cohort"))


@pytest.fixture
def toy_crops() -> type[ToyCrops]:
    """The toy lesion dataset class (:class:`tests.helpers.ToyCrops`): call it to build one."""
    return ToyCrops


@pytest.fixture(scope="session")
def reference_data() -> Path:
    root = reference_data_root()
    if root is None:
        pytest.skip(
            "real reference data not found: set MAGN_REFERENCE_DATA or place it at "
            "../shared/reference-data beside the checkout"
        )
    return root


def _chromium_path() -> str | None:
    """The system Chromium, if any (``$MAGN_CHROMIUM`` overrides)."""
    for candidate in (os.environ.get("MAGN_CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium (playwright driving the system browser)."""
    executable = _chromium_path()
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


@pytest.fixture
def open_page(browser) -> Callable[[Path, Path], tuple[object, list[str]]]:
    """``open_page(path, screenshot)``: load ``path`` in a new page of :func:`browser`,
    screenshot it; returns the page and every console error or warning, page error and failed
    request."""

    def open_(path: Path, screenshot: Path) -> tuple[object, list[str]]:
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

    return open_
