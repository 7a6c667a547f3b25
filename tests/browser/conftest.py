"""Headless Chromium for the chat page's tests: Debian's ``chromium`` package driven by Playwright for
Python with ``executable_path`` (Playwright's own browser download is not used: the machines that run
these tests cannot download browsers). Without Playwright or the chromium binary every browser test
is skipped with the reason printed (``.ci/run`` installs chromium with apt-get when it can).

Screenshots go to ``var/artifacts/browser/`` (CI keeps them); the console of every page is collected
so a test can assert that the Content-Security-Policy refused nothing."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "artifacts" / "browser"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    configured = os.environ.get("CHROMIUM_PATH")
    if configured:
        return configured if Path(configured).exists() else None
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def _skip_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "browser tests need the playwright package (pip install -r requirements/dev.txt)"
    if chromium_path() is None:
        return "browser tests need a system Chromium: apt-get install chromium (or set CHROMIUM_PATH)"
    return None


SKIP_REASON = _skip_reason()


def pytest_collection_modifyitems(config, items):
    if SKIP_REASON is None:
        return
    here = Path(__file__).parent
    marker = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(marker)


def pytest_report_header(config):
    return f"browser tests: {'skipped: ' + SKIP_REASON if SKIP_REASON else 'chromium at ' + str(chromium_path())}"


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root in a container, where Chromium's sandbox cannot start.
        instance = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        yield instance
        instance.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


class Console(list):
    def csp_violations(self) -> list[str]:
        return [text for text in self if "Content Security Policy" in text or "Content-Security-Policy" in text]


@pytest.fixture
def open_page(browser, stack):
    """``open_page(width=…, height=…)`` → (page, console): a fresh browser context (its own cookies)."""
    contexts = []

    def make(width: int = 1280, height: int = 800):
        context = browser.new_context(viewport={"width": width, "height": height}, base_url=stack.api_url)
        context.set_default_timeout(20_000)
        contexts.append(context)
        page = context.new_page()
        console = Console()
        page.on("console", lambda message: console.append(message.text))
        page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
        return page, console

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def model_pace(stack):
    """Set the scripted model's pace (tokens/s after a first-token delay); reset afterwards."""
    def pace(token_rate: float, first_token_delay: float = 0.0) -> None:
        httpx.post(f"{stack.model_url}/_control", json={"token_rate": token_rate,
                                                        "first_token_delay": first_token_delay}).raise_for_status()

    yield pace
    pace(0, 0)
