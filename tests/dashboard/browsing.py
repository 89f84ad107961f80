"""Opening the dashboard of a given server in a fresh browser context, signed in, with a guard that
fails the test if any script from a stored value shows a dialog."""

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from playwright.sync_api import Browser, Dialog, Page, ViewportSize

from tests.dashboard.test_dashboard import sign_in
from tests.support import ServerProcess

DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}


def browser_backend_only(backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("the dashboard runs the same queries on both backends; the browser tests use SQLite")


@contextmanager
def dashboard(browser: Browser, server: ServerProcess, viewport: ViewportSize = DESKTOP) -> Iterator[Page]:
    context = browser.new_context(base_url=server.base_url, viewport=viewport)
    page = context.new_page()
    dialogs: list[str] = []

    def refuse(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", refuse)
    sign_in(page)
    yield page
    assert dialogs == [], "a script ran from a stored value"
    context.close()
