"""The browser tests' fixtures: Debian's chromium driven by Playwright against pytest-django's
live server, with the localstripe sandbox taking the card payments and posting its signed
webhooks back to that server.

The live server is a thread of the test process: Celery tasks run eagerly in it, outbox rows
are dispatched when its transactions commit, and its e-mails land in ``django.core.mail.outbox``
like the test's own. Playwright's driver comes with its Python package; the browser is never
downloaded: without chromium or Playwright these tests skip on a laptop and fail with CI=true.

Each test keeps screenshots of its key pages in ``artifacts/browser/<test>/`` (``shot``), and
one of the page it failed on.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests
from django.core.servers.basehttp import WSGIServer
from pytest_django.live_server_helper import LiveServer

from tests.conftest import missing
from tests.stripe_fake import (  # noqa: F401 (the sandbox's fixtures, for this package)
    WEBHOOK_SECRET,
    Sandbox,
    _stripe_sandbox_process,
    stripe_sandbox,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page, Response

ROOT = Path(__file__).resolve().parent.parent.parent
ARTIFACTS = ROOT / "artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
# This machine has no network beyond the registries: keep chromium from calling home
# (component updates, sync, field trials), which would only slow each launch.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Bounds for each step: a page of this site answers in well under a second.
STEP_TIMEOUT_MS = 10_000
NAVIGATION_TIMEOUT_MS = 15_000
ASYNC_UNSAFE = "DJANGO_ALLOW_ASYNC_UNSAFE"
WEBHOOK_NAME = "browser-tests"
WEBHOOK_PATH = "/stripe/webhook/"


def chromium_path() -> str | None:
    if Path(CHROMIUM).exists():
        return CHROMIUM
    return shutil.which("chromium")


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One chromium for the browser tests, closed when they are done.

    Playwright's sync API keeps an asyncio loop marked as running on this thread for as long
    as it is started, and Django then refuses every ORM call from the thread (the test's
    factories and reads, the database set-up and flush) as if made from async code. Nothing
    here is async, so Django is told to allow them, for as long as Playwright runs and no
    longer: the package scope ends both before the rest of the suite runs.
    """
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        missing("playwright is not installed (pip install -e '.[dev]')")
        raise  # missing() never returns; this keeps the type checker informed
    executable = chromium_path()
    if executable is None:
        missing("chromium is not installed (apt-get install chromium)")
    assert executable is not None
    playwright = sync_playwright().start()
    try:
        # launch() gives the browser a fresh temporary profile (user-data-dir) of its own
        # and removes it on close.
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS, timeout=30_000
        )
    except Error as error:
        playwright.stop()
        missing(f"chromium at {executable} did not start: {error}")
        raise
    previous = os.environ.get(ASYNC_UNSAFE)
    os.environ[ASYNC_UNSAFE] = "true"
    try:
        yield launched
    finally:
        launched.close()
        playwright.stop()
        if previous is None:
            os.environ.pop(ASYNC_UNSAFE, None)
        else:
            os.environ[ASYNC_UNSAFE] = previous


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # Keep each phase's report on the test, so the page fixture knows a test failed.
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@dataclass
class PageProblems:
    """What a person would have seen go wrong that a test might not look for."""

    script_errors: list[str] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)
    policy_violations: list[str] = field(default_factory=list)
    # Not a failure by itself (a refused card logs a 402), but it explains one.
    console: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.script_errors or self.server_errors or self.policy_violations)

    def on_console(self, message: ConsoleMessage) -> None:
        self.console.append(f"{message.type}: {message.text}")
        if message.type == "error" and "Content Security Policy" in message.text:
            self.policy_violations.append(message.text)


def artifact_directory(node_name: str) -> Path:
    return ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "-", node_name).strip("-")


@pytest.fixture
def page_problems() -> PageProblems:
    return PageProblems()


@pytest.fixture
def page(
    browser: Browser, request: pytest.FixtureRequest, page_problems: PageProblems
) -> Iterator[Page]:
    """A fresh browser context (no cookies) in English, with bounded waits."""
    context = browser.new_context(
        locale="en-GB", viewport={"width": 1280, "height": 1000}, timezone_id="UTC"
    )
    context.set_default_timeout(STEP_TIMEOUT_MS)
    context.set_default_navigation_timeout(NAVIGATION_TIMEOUT_MS)
    opened = context.new_page()
    opened.on("pageerror", lambda error: page_problems.script_errors.append(str(error)))

    def on_response(response: Response) -> None:
        if response.status >= 500:
            page_problems.server_errors.append(f"{response.status} {response.url}")

    opened.on("response", on_response)
    opened.on("console", page_problems.on_console)
    opened.on(
        "requestfailed",
        lambda failed: page_problems.console.append(
            f"request failed: {failed.url} {failed.failure}"
        ),
    )
    try:
        yield opened
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            print("browser console:", *page_problems.console, sep="\n  ")
            directory = artifact_directory(request.node.name)
            directory.mkdir(parents=True, exist_ok=True)
            try:
                opened.screenshot(path=str(directory / "99-failure.png"), full_page=True)
            except Exception as error:  # the page may be what broke; the failure says more
                print(f"no failure screenshot: {error}")
        context.close()


Shot = Callable[[str], Path]


@pytest.fixture
def shot(page: Page, request: pytest.FixtureRequest) -> Shot:
    """``shot("paid")`` saves the whole page as artifacts/browser/<test>/NN-paid.png."""
    directory = artifact_directory(request.node.name)
    if directory.exists():
        shutil.rmtree(directory)  # only this run's pictures, numbered from 01
    directory.mkdir(parents=True)
    taken: list[Path] = []

    def take(step: str) -> Path:
        path = directory / f"{len(taken) + 1:02d}-{step}.png"
        page.screenshot(path=str(path), full_page=True)
        taken.append(path)
        return path

    return take


# --- the live server -----------------------------------------------------------------------

# Held while the live server answers a request, and by a test while it reads the database.
SITE_LOCK = threading.Lock()


class SerialWSGIServer(WSGIServer):
    """Answers one request at a time, under ``SITE_LOCK``.

    On an in-memory SQLite database the live server and the test share one connection
    (there is no other way to see the same data), and one connection used from two
    threads at once fails ("database table is locked") or mixes their transactions. Two
    webhooks arriving together, or a test reading while a webhook is processed, would do
    exactly that. PostgreSQL needs none of this: there the server stays threaded.
    """

    def __init__(self, *args: Any, connections_override: Any = None, **kwargs: Any) -> None:
        # The server's own thread already uses the shared connection.
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        with SITE_LOCK:
            super().process_request(request, client_address)


@contextmanager
def quiet_site() -> Iterator[None]:
    """Read the database between two of the live server's requests, never during one."""
    with SITE_LOCK:
        yield


@pytest.fixture(scope="session")
def live_server(django_db_setup: None) -> Iterator[LiveServer]:
    """pytest-django's live server, answering one request at a time on in-memory SQLite.

    It is made after the test database (pytest would otherwise start this session fixture
    first): only then can it find the in-memory connection to share, instead of opening
    connections of its own that lock each other's tables.
    """
    server = LiveServer("localhost", start=False)
    if server.thread.connections_override:
        # Typed as the threaded server; any server taking the same arguments will do.
        server.thread.server_class = SerialWSGIServer  # type: ignore[assignment]
    server.start()
    try:
        yield server
    finally:
        server.stop()


def allow_sandbox_in_policy(settings: Any, base_url: str) -> None:
    """Let the pay page load the sandbox's Stripe.js and call its API, as the content
    security policy does for a sandbox named when the settings load (this one's port is only
    known now). Without a policy there is nothing to widen."""
    policy = getattr(settings, "CONTENT_SECURITY_POLICY", None)
    if not policy or "DIRECTIVES" not in policy:
        return
    directives = {name: list(values) for name, values in policy["DIRECTIVES"].items()}
    for name in ("script-src", "connect-src"):
        if name in directives and base_url not in directives[name]:
            directives[name].append(base_url)
    settings.CONTENT_SECURITY_POLICY = {**policy, "DIRECTIVES": directives}


@pytest.fixture
def sandbox_webhooks(
    live_server: LiveServer,
    stripe_sandbox: Sandbox,  # noqa: F811 (the fixture imported above)
    settings: Any,
) -> Iterator[str]:
    """The sandbox posts its signed events to the live server, as Stripe posts to the site,
    and the site's pages may load its Stripe.js.

    Registrations outlive the sandbox's data resets, so on the way out this one is narrowed
    to no event type: a late event cannot reach the next test's server or database.
    """
    allow_sandbox_in_policy(settings, stripe_sandbox.base_url)
    port = live_server.thread.port
    # 127.0.0.1 rather than "localhost": the live server listens on IPv4 only.
    url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
    register = f"{stripe_sandbox.base_url}/_config/webhooks/{WEBHOOK_NAME}"
    requests.post(
        register, json={"url": url, "secret": WEBHOOK_SECRET}, timeout=5
    ).raise_for_status()
    try:
        yield url
    finally:
        requests.post(
            register, json={"url": url, "secret": WEBHOOK_SECRET, "events": []}, timeout=5
        ).raise_for_status()
        with quiet_site():
            pass  # a webhook being answered now finishes before the database is emptied
