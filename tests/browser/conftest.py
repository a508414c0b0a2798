"""
Browser tests: pytest-playwright driving Debian's chromium (/usr/bin/chromium, never a
downloaded build) against pytest-django's live server. Select them with `-m browser`.
"""

import os
import shutil
from pathlib import Path

import pytest

from tests.admin_helpers import patch_source

CHROMIUM = "/usr/bin/chromium"
# This machine's closed network refuses Chromium's background connections: turn them off.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"  # gitignored
PASSWORD = "browser-test-password-1"
VIEWPORT = {"width": 1400, "height": 900}


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: drives Debian's chromium through the admin (Playwright)")


def pytest_collection_modifyitems(session, config, items):
    # Playwright's sync API keeps an event loop running in the main thread for the rest
    # of the session, and Django refuses ORM calls there: run the browser tests last.
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: `make browser` (apt-get install -y chromium) installs it")
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS, "headless": True}


@pytest.fixture(scope="session")
def base_url():
    return None  # pages are opened by the live server's URL


@pytest.fixture(scope="session", autouse=True)
def _django_next_to_playwright():
    # Once Playwright's loop runs, the ORM in this thread (fixtures, database teardown)
    # would be refused; the browser tests run last, so nothing async ever shares it.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"


@pytest.fixture
def admin_page(page, live_server, django_user_model):
    """A logged-in admin session in the browser, through the login form."""
    django_user_model.objects.create_superuser("ops", "ops@epsilon.example", PASSWORD)
    page.set_default_timeout(15_000)
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "ops")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
    page.get_by_text("Billing overview").first.wait_for()
    return page


@pytest.fixture
def recorded_source(billing):
    with patch_source(billing.source):
        yield billing.source


@pytest.fixture
def screenshot(page):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(name: str, full_page: bool = True, locator=None):
        path = SCREENSHOTS / f"{name}.png"
        if locator is not None:
            locator.screenshot(path=str(path))  # one element: e.g. the usage panel for the README
        else:
            page.screenshot(path=str(path), full_page=full_page)
        return path

    return take


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    # An operator's laptop window: every page must read at this width without scrolling sideways.
    return {**browser_context_args, "viewport": {"width": VIEWPORT["width"], "height": VIEWPORT["height"]}}
