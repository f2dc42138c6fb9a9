"""The operator console driven in a real browser (Debian's Chromium through Playwright).

Every page opened here is watched: a request to any host but the service's own, a script error
or a console error (a refused inline style or script included, which the console's policy
blocks) fails the test that opened it.

PONYSERVE_CONSOLE_SCREENSHOTS=<dir> also writes a laptop-size screenshot of each page there
(that is how docs/console/ is made).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from console_deploy import Console, auth
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Request, expect, sync_playwright
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.queue.models import Job

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
SCREENSHOTS = os.environ.get("PONYSERVE_CONSOLE_SCREENSHOTS")


@dataclass
class Watch:
    """What a page did that it must not: reach another host, log an error, throw."""

    origin: str
    foreign: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # Statuses a test provokes on purpose (a refused form answers 403); Chromium logs those as errors.
    expected_statuses: set[int] = field(default_factory=set)

    def on_request(self, request: Request) -> None:
        parts = urlsplit(request.url)
        if parts.scheme in ("http", "https", "ws", "wss") and parts.netloc != self.origin:
            self.foreign.append(request.url)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        status = re.search(r"status of (\d{3})", message.text)
        if status and int(status.group(1)) in self.expected_statuses:
            return
        self.errors.append(message.text)

    def check(self) -> None:
        assert self.foreign == [], f"requests to other hosts: {self.foreign}"
        assert self.errors == [], f"console errors: {self.errors}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


OpenPage = Callable[..., tuple[Page, Watch]]


@pytest.fixture
def open_page(browser: Browser, console: Console) -> Iterator[OpenPage]:
    opened: list[tuple[BrowserContext, Watch]] = []

    def make(viewport: dict[str, int] | None = None, storage_state: object = None) -> tuple[Page, Watch]:
        context = browser.new_context(viewport=viewport or LAPTOP, accept_downloads=True,
                                      storage_state=storage_state)  # type: ignore[arg-type]
        page = context.new_page()
        page.set_default_timeout(20_000)
        watch = Watch(origin=urlsplit(console.url).netloc)
        page.on("request", watch.on_request)
        page.on("console", watch.on_console)
        page.on("pageerror", lambda exc: watch.errors.append(f"page error: {exc}"))
        # The console asks before destructive changes; the tests say yes.
        page.on("dialog", lambda dialog: dialog.accept())
        opened.append((context, watch))
        return page, watch

    yield make
    for context, watch in opened:
        context.close()
        watch.check()


def sign_in(page: Page, console: Console, key: str) -> None:
    page.goto(f"{console.url}/console/login")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


def audit_entries(api: httpx.Client, console: Console, **filters: str) -> list[dict[str, object]]:
    r = api.get("/admin/moderation/audit", params=filters, headers=auth(console.admin_key))
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def generate(api: httpx.Client, headers: dict[str, str], prompt: str, n: int = 1) -> httpx.Response:
    return api.post("/v1/images/generations", json={"prompt": prompt, "size": "64x64", "steps": 2, "n": n,
                                                     "response_format": "b64_json"}, headers=headers)


def test_admin_creates_an_account_and_a_key_whose_secret_is_shown_once(console, api, open_page) -> None:
    page, _ = open_page()
    sign_in(page, console, console.admin_key)
    expect(page).to_have_url(f"{console.url}/console/")
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Accounts").click()
    name = f"Browser Co {secrets.token_hex(3)}"
    page.get_by_label("Name").fill(name)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(name)
    account_id = page.url.rsplit("/", 1)[1]
    assert account_id.startswith("acct_")

    page.locator("form[action$='/keys'] input[name=name]").fill("browser key")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#new-key-secret").inner_text().strip()
    assert api.get("/v1/models", headers=auth(secret)).status_code == 200
    prefix = secret.rsplit("_", 1)[0]
    expect(page.get_by_role("table").filter(has_text="browser key")).to_contain_text(prefix[:12])

    page.reload()
    expect(page.locator("#new-key-secret")).to_have_count(0)
    assert secret not in page.content()

    created = audit_entries(api, console, target_id=account_id, action="account.create")
    assert [(e["actor_key_id"], e["detail"]["name"]) for e in created] == [(console.admin_key_id, name)]
    keys = api.get(f"/admin/accounts/{account_id}/keys", headers=auth(console.admin_key)).json()
    made = audit_entries(api, console, target_id=keys[0]["id"], action="key.create")
    assert [e["actor_key_id"] for e in made] == [console.admin_key_id]


def test_a_limit_changed_in_the_console_is_what_the_admin_api_returns(console, api, open_page) -> None:
    cust = console.customer(api)
    page, _ = open_page()
    sign_in(page, console, console.admin_key)
    page.goto(f"{console.url}/console/accounts/{cust.account_id}")
    page.locator("input[name=monthly_image_quota]").fill("4321")
    page.locator("select[name=max_rating]").select_option("questionable")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator(".flash.info")).to_contain_text("limit_overrides")

    detail = api.get(f"/admin/accounts/{cust.account_id}", headers=auth(console.admin_key)).json()
    assert detail["limit_overrides"] == {"monthly_image_quota": 4321}
    assert detail["max_rating"] == "questionable"
    expect(page.locator("input[name=monthly_image_quota]")).to_have_value("4321")
    [entry] = audit_entries(api, console, target_id=cust.account_id, action="account.update")
    assert entry["actor_key_id"] == console.admin_key_id
    assert entry["detail"]["changes"] == {"limit_overrides": {"monthly_image_quota": 4321},
                                          "max_rating": "questionable"}


def test_a_moderator_sees_only_moderation_and_approves_a_withheld_image(console, api, open_page) -> None:
    cust = console.customer(api, withheld=True)
    made = generate(api, cust.headers, "a lighthouse at dusk")
    assert made.status_code == 200, made.text
    [image] = made.json()["data"]
    assert image["status"] == "withheld"
    [review] = api.get("/admin/moderation/reviews", params={"account_id": cust.account_id},
                       headers=auth(console.moderator_key)).json()["data"]

    page, watch = open_page()
    sign_in(page, console, console.moderator_key)
    expect(page).to_have_url(f"{console.url}/console/moderation/reviews")
    nav = page.get_by_role("navigation", name="Sections")
    expect(nav.get_by_role("link")).to_have_text(["Moderation"])
    watch.expected_statuses.add(403)
    refused = page.goto(f"{console.url}/console/accounts")
    assert refused is not None and refused.status == 403
    expect(page.get_by_role("heading", level=1)).to_have_text("Not for this key")

    page.goto(f"{console.url}/console/moderation/reviews?account={cust.account_id}")
    card = page.locator(f"#review-{review['id']}")
    picture = card.get_by_role("img")
    expect(picture).to_be_visible()
    picture.scroll_into_view_if_needed()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=picture.element_handle())
    card.get_by_label("Note").fill("benign seascape")
    card.get_by_role("button", name="Approve").click()
    expect(page.locator(".flash.info")).to_contain_text("approved")
    expect(page.locator(f"#review-{review['id']}")).to_have_count(0)

    released = api.get(f"/v1/images/{image['id']}", headers=cust.headers)
    assert released.status_code == 200 and released.headers["content-type"] == "image/png"
    [entry] = audit_entries(api, console, target_id=review["id"], action="review.approve")
    assert (entry["actor_key_id"], entry["detail"]["note"]) == (console.moderator_key_id, "benign seascape")


def test_usage_chart_is_drawn_and_its_csv_is_the_admin_apis(console, api, open_page) -> None:
    cust = console.customer(api)
    assert generate(api, cust.headers, "a red bicycle", n=2).status_code == 200
    page, _ = open_page()
    sign_in(page, console, console.admin_key)
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Usage").click()
    page.get_by_label("Group by").select_option("model")
    page.get_by_role("button", name="Show").click()

    today = datetime.now(UTC).date()
    bars = page.locator("svg.chart rect.bar")
    expect(bars).to_have_count(today.day)
    bar = page.locator(f"svg.chart rect.bar[data-day='{today.isoformat()}']")
    assert int(bar.get_attribute("data-value") or 0) >= 2
    box = bar.bounding_box()
    assert box is not None and box["height"] > 1 and box["width"] > 1
    expect(page.get_by_role("table")).to_contain_text("demo")

    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV").click()
    exported = Path(download.value.path()).read_bytes()
    first = today.replace(day=1).isoformat()
    from_api = api.get("/admin/usage", params={"group_by": "model", "from": first, "to": today.isoformat()},
                       headers={**auth(console.admin_key), "Accept": "text/csv"})
    assert from_api.status_code == 200
    assert exported == from_api.content
    assert exported.splitlines()[0] == b"model,images,megapixel_steps,gpu_seconds,price_units"
    assert download.value.suggested_filename == f"usage-model-{first}-{today.isoformat()}.csv"


def test_a_generate_key_cannot_sign_in(console, api, open_page) -> None:
    cust = console.customer(api)
    page, watch = open_page()
    watch.expected_statuses.add(403)
    sign_in(page, console, cust.key)
    expect(page.locator(".flash.error")).to_contain_text("Generate-only keys cannot sign in")
    page.goto(f"{console.url}/console/")
    expect(page).to_have_url(re.compile(r"/console/login\?next="))
    assert api.get("/console/accounts", follow_redirects=False,
                   headers=auth(cust.key)).status_code == 303  # a bearer key is no session either


def test_a_form_posted_without_its_csrf_token_is_refused(console, api, open_page) -> None:
    page, watch = open_page()
    watch.expected_statuses.add(403)
    sign_in(page, console, console.admin_key)
    page.goto(f"{console.url}/console/accounts")
    form = page.locator("form[action$='/console/accounts'][method=post]")
    form.locator("input[name=csrf_token]").evaluate("input => input.remove()")
    name = f"Forged {secrets.token_hex(3)}"
    form.get_by_label("Name").fill(name)
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        form.get_by_role("button", name="Create account").click()
    assert posted.value.status == 403
    expect(page.get_by_role("heading", level=1)).to_have_text("Form refused")
    # Nor a token of the right shape but not this session's.
    forged = page.request.post(f"{console.url}/console/accounts", form={"name": name, "csrf_token": "x" * 43},
                               max_redirects=0)
    assert forged.status == 403
    everyone = api.get("/admin/accounts", params={"limit": 500}, headers=auth(console.admin_key)).json()["data"]
    assert name not in {a["name"] for a in everyone}


def test_sign_out_ends_the_session_even_for_a_copied_cookie(console, open_page) -> None:
    page, _ = open_page()
    sign_in(page, console, console.admin_key)
    [cookie] = [c for c in page.context.cookies() if c["name"] == "ponyserve_console"]
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"], cookie["secure"]) == (True, "Strict",
                                                                                          "/console", False)
    copied = page.context.storage_state()
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator(".flash.info")).to_have_text("You are signed out.")
    assert [c for c in page.context.cookies() if c["name"] == "ponyserve_console" and c["value"] == cookie["value"]] \
        == []

    replay, _ = open_page(storage_state=copied)
    replay.goto(f"{console.url}/console/accounts")
    expect(replay).to_have_url(re.compile(r"/console/login\?next=%2Fconsole%2Faccounts"))


def _stuck_job(console: Console, account_id: str, key_id: str) -> str:
    """A queued job for a model no worker serves: it waits until someone cancels it."""
    job_id = f"gen_{secrets.token_hex(12)}"
    with Session(console.engine) as session:
        session.add(Job(id=job_id, account_id=account_id, api_key_id=key_id, status="queued", model="retired-model",
                        prompt="a harbour", revised_prompt="a harbour", width=64, height=64, steps=2,
                        guidance_scale=5.0, sampler="euler", seed=7, n=1, output_format="png",
                        batch_key="retired-model", created_at=datetime.now(UTC)))
        session.commit()
    return job_id


def _stuck_billing(console: Console, account_id: str) -> int:
    """One of the account's billed images set aside because Stripe refused it; the account past due."""
    now = datetime.now(UTC)
    with console.engine.begin() as conn:
        usage_id = conn.execute(text("SELECT min(id) FROM usage_ledger WHERE account_id = :a"),
                                {"a": account_id}).scalar_one()
        conn.execute(text("INSERT INTO billing_outbox (usage_id, account_id, stripe_customer_id, value, occurred_at, "
                          "status, attempts, failures, next_attempt_at, last_error, created_at) VALUES (:u, :a, "
                          "'cus_gone', 1, :now, 'failed', 1, 1, :now, :error, :now)"),
                     {"u": usage_id, "a": account_id, "now": now, "error": "No such customer: cus_gone"})
        conn.execute(text("INSERT INTO billing_invoices (id, account_id, status, amount_due, amount_paid, currency, "
                          "failed_at, event_created, updated_at) VALUES (:id, :a, 'payment_failed', 4900, 0, 'usd', "
                          ":now, :now, :now)"), {"id": f"in_{secrets.token_hex(6)}", "a": account_id, "now": now})
        conn.execute(text("UPDATE accounts SET billing_past_due_since = :now, billing_grace_until = :later "
                          "WHERE id = :a"), {"a": account_id, "now": now, "later": now + timedelta(days=3)})
    return int(usage_id)


def _paid_invoice(console: Console, account_id: str, cents: int) -> None:
    now = datetime.now(UTC)
    with console.engine.begin() as conn:
        conn.execute(text("INSERT INTO billing_invoices (id, account_id, status, amount_due, amount_paid, currency, "
                          "paid_at, event_created, updated_at) VALUES (:id, :a, 'paid', :c, :c, 'usd', :now, :now, "
                          ":now)"), {"id": f"in_{secrets.token_hex(6)}", "a": account_id, "c": cents, "now": now})


# What sticks out of the page (table cells scroll inside their box, so they do not count).
OVERFLOWING = """[...document.querySelectorAll('body *')]
  .filter(e => !e.closest('.table-wrap table')
               && e.getBoundingClientRect().right > document.documentElement.clientWidth)
  .slice(0, 5).map(e => e.tagName + '.' + e.className + ': ' + (e.textContent || '').trim().slice(0, 40))"""

PAGES = [
    ("overview", "/console/", "Overview"),
    ("accounts", "/console/accounts", "Accounts"),
    ("account", "/console/accounts/{account}", None),
    ("plans", "/console/plans", "Plans"),
    ("plan", "/console/plans/free", "Plan free"),
    ("usage", "/console/usage?group_by=plan", "Usage"),
    ("billing", "/console/billing", "Billing"),
    ("licenses", "/console/licenses", "Licences"),
    ("jobs", "/console/jobs", "Jobs"),
    ("job", "/console/jobs/{job}", None),
    ("moderation-reviews", "/console/moderation/reviews", "Moderation"),
    ("moderation-incidents", "/console/moderation/incidents", "Moderation"),
    ("moderation-optouts", "/console/moderation/optouts", "Moderation"),
    ("moderation-audit", "/console/moderation/audit", "Moderation"),
]


def test_every_page_works_on_a_laptop_and_a_phone(console, api, open_page, tmp_path) -> None:
    """Each page answers, says what it is, fits a phone's width (wide tables scroll inside their
    box), starts keyboard navigation at the skip link; changes made on the way work end to end."""
    cust = console.customer(api)
    assert generate(api, cust.headers, "a quiet garden", n=2).status_code == 200
    operator = api.get("/v1/usage", headers=auth(console.admin_key)).json()["account_id"]
    _paid_invoice(console, operator, 1234)
    job_id = _stuck_job(console, cust.account_id, cust.key_id)

    page, _ = open_page()
    sign_in(page, console, console.admin_key)
    expect(page.locator("a.tile").filter(has_text="Revenue this month")).to_contain_text("$12.34")
    expect(page.locator("a.tile[href$='/console/jobs?status=queued']")).to_contain_text("oldest waiting")

    # The opt-out registry, by form and by CSV file, then a prompt it refuses shows up as an incident.
    page.goto(f"{console.url}/console/moderation/optouts")
    page.locator("form[action$='/optouts'] input[name=name]").fill("Jane Example")
    page.locator("form[action$='/optouts'] input[name=aliases]").fill("janeexample; j. example")
    page.get_by_role("button", name="Add opt-out").click()
    expect(page.locator(".flash.info")).to_contain_text("Jane Example")
    csv_file = tmp_path / "optouts.csv"
    csv_file.write_text("name,aliases,require_context\nMoon Painter,moonpainter,false\nRiver Inks,,true\n")
    page.get_by_label("CSV file").set_input_files(str(csv_file))
    page.get_by_role("button", name="Import").click()
    expect(page.locator(".flash.info")).to_have_text("Imported: 2 new, 0 updated, 0 unchanged.")
    refused = generate(api, cust.headers, "a castle in the style of Jane Example")
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "artist_opted_out")

    page.goto(f"{console.url}/console/jobs/{job_id}")
    page.get_by_role("button", name="Cancel job").click()
    expect(page.locator(".flash.info")).to_contain_text("Job cancelled")
    expect(page.get_by_role("heading", level=1)).to_contain_text("cancelled")
    with console.engine.connect() as conn:
        status = conn.execute(text("SELECT status, reservation_state FROM jobs WHERE id = :id"), {"id": job_id}).one()
    assert tuple(status) == ("cancelled", "none")
    assert [e["actor_key_id"] for e in audit_entries(api, console, target_id=job_id)] == [console.admin_key_id]

    usage_id = _stuck_billing(console, cust.account_id)
    page.goto(f"{console.url}/console/billing")
    stuck = page.get_by_role("row").filter(has_text="cus_gone")
    expect(stuck).to_contain_text("No such customer: cus_gone")
    past_due = page.get_by_role("table").filter(has_text="Past due since")
    expect(past_due).to_contain_text(cust.account_id)
    expect(past_due).to_contain_text("$49.00")
    stuck.get_by_role("button", name="dismiss").click()
    expect(page.locator(".flash.info")).to_contain_text(f"Outbox event {usage_id}: dismiss → dismissed")
    page.get_by_role("button", name="Run reconciliation").click()
    expect(page.locator(".flash.info")).to_contain_text("Reconciled")
    expect(page.get_by_role("main")).to_contain_text("Stripe not configured")

    page.goto(f"{console.url}/console/licenses")
    with page.expect_download() as report:
        page.get_by_role("button", name="Download report").click()
    assert Path(report.value.path()).read_bytes().startswith(b"month,license,model,images")
    page.reload()
    month = report.value.suggested_filename.removeprefix("license-report-").removesuffix(".csv")
    expect(page.get_by_role("table").filter(has_text="Checksum")).to_contain_text(month)

    withheld = console.customer(api, withheld=True)
    assert generate(api, withheld.headers, "a paper boat").json()["data"][0]["status"] == "withheld"

    shots = Path(SCREENSHOTS) if SCREENSHOTS else None
    phone, _ = open_page(viewport=PHONE, storage_state=page.context.storage_state())
    for name, path, heading in PAGES:
        url = console.url + path.format(account=cust.account_id, job=job_id)
        for view in (page, phone):
            response = view.goto(url)
            assert response is not None and response.status == 200, (url, response and response.status)
            expect(view.get_by_role("heading", level=1)).to_contain_text(heading or "")
            overflow = view.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            wide = view.evaluate(OVERFLOWING) if overflow > 0 else []
            assert overflow <= 0, f"{path} is {overflow}px wider than the screen at {view.viewport_size}: {wide}"
            if name in ("overview", "account", "usage"):
                expect(view.locator("svg.chart rect.bar")).not_to_have_count(0)
        if shots is not None:
            shots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shots / f"{name}.png"), full_page=False)
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
