"""A local stand-in for the parts of Stripe's API that ponyserve uses, for the real ``stripe`` library.

It speaks Stripe's wire format (form-encoded bodies with bracketed keys, JSON objects and Stripe's
error shape), de-duplicates meter events by ``identifier`` the way Stripe does within its window,
answers meter event summaries from what it accepted, and can be told to misbehave per meter
event request: ``500`` (refused before processing), ``500_after`` (processed, then a 500), ``429``,
``hang`` (processed, then no answer until the client gives up), ``reject`` (400), or to hold one
request (processed, answer withheld) until released — or be stopped altogether (connection refused).

Object creations (customers, Checkout sessions, subscriptions) honour ``Idempotency-Key`` as Stripe
does: the same key with the same parameters replays the stored answer (``Idempotent-Replayed: true``),
with other parameters (or on another endpoint) it is a 400 ``idempotency_error``. They can be told to
``drop`` their answer (processed and stored, the connection closed unanswered) and made to wait for
one another (``gate_creations``), as two attempts in flight at once would.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

API_KEY = "sk_test_ponyserve_fake"
METER_ID = "mtr_test_ponyserve"
# The POST endpoints that create an object, under Stripe's idempotency rules.
CREATION_PATHS = frozenset({"/v1/customers", "/v1/checkout/sessions", "/v1/subscriptions"})

_KEY_PART = re.compile(r"[^\[\]]+")


def decode_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """``a[b][0][c]=v`` pairs back into nested dicts and lists, as Stripe reads them."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = _KEY_PART.findall(key)
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    def listify(obj: Any) -> Any:
        if isinstance(obj, dict):
            obj = {k: listify(v) for k, v in obj.items()}
            if obj and all(k.isdigit() for k in obj):
                return [obj[k] for k in sorted(obj, key=int)]
        return obj

    return listify(root)


@dataclass
class MeterEvent:
    identifier: str
    event_name: str
    customer: str
    value: float
    timestamp: int


@dataclass(frozen=True)
class StoredAnswer:
    """The first answer to an idempotency key, and what it answered."""

    path: str
    params: dict[str, Any]
    status: int
    body: dict[str, Any]


@dataclass
class FakeState:
    meter_event_name: str
    # First acceptance of each identifier: what Stripe bills.
    events: dict[str, MeterEvent] = field(default_factory=dict)
    # Every meter event request, in arrival order: (identifier, mode applied).
    requests: list[tuple[str, str]] = field(default_factory=list)
    # Identifiers received again after they had been accepted (Stripe de-duplicated them).
    duplicates: list[str] = field(default_factory=list)
    # Accepted, but the client never got a success answer (500_after, hang, held).
    unacknowledged: set[str] = field(default_factory=set)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    idempotent: dict[str, StoredAnswer] = field(default_factory=dict)
    # Requests answered from ``idempotent`` instead of creating anything: (path, key).
    replays: list[tuple[str, str]] = field(default_factory=list)
    # The parameters of each session and subscription created, in order.
    checkout_sessions: list[dict[str, Any]] = field(default_factory=list)
    subscriptions: list[dict[str, Any]] = field(default_factory=list)
    # Subscriptions as Stripe keeps (and lists) them, by id.
    subscription_objects: dict[str, dict[str, Any]] = field(default_factory=dict)


class FakeStripe:
    def __init__(self, *, meter_event_name: str = "ponyserve_images", hang_seconds: float = 1.5) -> None:
        self.lock = threading.Lock()
        self.state = FakeState(meter_event_name=meter_event_name)
        self.hang_seconds = hang_seconds
        self.script: deque[str] = deque()
        # Modes for the next object creations ("drop"), like ``script`` for meter events.
        self.create_script: deque[str] = deque()
        self.gate: threading.Barrier | None = None
        # A mode for every meter event of these customers (e.g. {"cus_x": "reject"}).
        self.customer_modes: dict[str, str] = {}
        self.rates: dict[str, float] = {}
        self.rng = random.Random(7)
        self.hold_at: int | None = None
        self.held = threading.Event()
        self.release = threading.Event()
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control -------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeStripe:
        fake = self

        class Handler(_Handler):
            stripe = fake

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stripe is down: connections are refused until start() again (same port)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def reset(self) -> None:
        with self.lock:
            self.state = FakeState(meter_event_name=self.state.meter_event_name)
            self.script.clear()
            self.create_script.clear()
            self.gate = None
            self.rates = {}
            self.customer_modes = {}
            self.hold_at = None
            self.held.clear()
            self.release.clear()

    def fail_next(self, *modes: str) -> None:
        with self.lock:
            self.script.extend(modes)

    def fail_next_create(self, *modes: str) -> None:
        """Modes for the next object creations: ``drop`` (created and stored, the answer never sent)."""
        with self.lock:
            self.create_script.extend(modes)

    def gate_creations(self, n: int) -> None:
        """The next ``n`` object creations wait until all ``n`` have arrived, then run one by one."""

        def open_gate() -> None:
            self.gate = None

        self.gate = threading.Barrier(n, action=open_gate, timeout=10)

    def cancel_subscription(self, sub_id: str) -> None:
        """What canceling in Stripe's dashboard does to the subscription."""
        with self.lock:
            self.state.subscription_objects[sub_id]["status"] = "canceled"

    def fail_randomly(self, **rates: float) -> None:
        """Per meter event request, e.g. ``fail_randomly(**{"500": .03, "429": .03})``."""
        with self.lock:
            self.rates = dict(rates)

    def hold_request(self, n: int) -> None:
        """The n-th meter event request from now is processed, then its answer held until release."""
        with self.lock:
            self.hold_at = len(self.state.requests) + n
            self.held.clear()
            self.release.clear()

    # -- reading -------------------------------------------------------------------------------------

    def accepted(self) -> dict[str, MeterEvent]:
        with self.lock:
            return dict(self.state.events)

    def total_for(self, customer: str) -> float:
        with self.lock:
            return sum(e.value for e in self.state.events.values() if e.customer == customer)

    def subscriptions_of(self, customer: str) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(sub) for sub in self.state.subscription_objects.values() if sub["customer"] == customer]

    # -- request handling (server threads) ---------------------------------------------------------

    def _mode(self) -> str:
        if self.script:
            return self.script.popleft()
        roll = self.rng.random()
        for mode, rate in self.rates.items():
            if roll < rate:
                return mode
            roll -= rate
        return "ok"

    def meter_event(self, params: dict[str, Any]) -> tuple[int, dict[str, Any], float, bool]:
        """(status, body, seconds to wait before answering, whether to wait for release)."""
        identifier = params.get("identifier") or f"auto_{secrets.token_hex(8)}"
        payload = params.get("payload") or {}
        with self.lock:
            mode = self.customer_modes.get(str(payload.get("stripe_customer_id"))) or self._mode()
            self.state.requests.append((identifier, mode))
            hold = self.hold_at is not None and len(self.state.requests) == self.hold_at
            if mode == "500":
                return 500, _error("api_error", "Injected failure before processing."), 0.0, False
            if mode == "429":
                return 429, _error("invalid_request_error", "Too many requests.", code="rate_limit"), 0.0, False
            if mode == "reject":
                return 400, _error("invalid_request_error", "Injected rejection.", code="parameter_invalid"), 0.0, \
                    False
            if params.get("event_name") != self.state.meter_event_name or "stripe_customer_id" not in payload:
                return 400, _error("invalid_request_error", "No meter for that event or customer."), 0.0, False
            timestamp = int(params.get("timestamp") or time.time())
            if timestamp < time.time() - 35 * 86400:
                return 400, _error("invalid_request_error", "Timestamp too old.", code="timestamp_too_far_in_past"), \
                    0.0, False
            if identifier in self.state.events:
                self.state.duplicates.append(identifier)
            else:
                self.state.events[identifier] = MeterEvent(identifier, params["event_name"],
                                                           payload["stripe_customer_id"], float(payload["value"]),
                                                           timestamp)
            body = {"object": "billing.meter_event", "created": int(time.time()), "event_name": params["event_name"],
                    "identifier": identifier, "livemode": False, "payload": payload, "timestamp": timestamp}
            if mode == "500_after":
                self.state.unacknowledged.add(identifier)
                return 500, _error("api_error", "Injected failure after processing."), 0.0, False
            if mode == "hang":
                self.state.unacknowledged.add(identifier)
                return 200, body, self.hang_seconds, False
            if hold:
                self.state.unacknowledged.add(identifier)
            return 200, body, 0.0, hold

    def summaries(self, meter_id: str, query: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if meter_id != METER_ID:
            return 404, _error("invalid_request_error", "No such meter.", code="resource_missing")
        start, end = int(query["start_time"]), int(query["end_time"])
        if start % 60 or end % 60:
            return 400, _error("invalid_request_error", "start_time and end_time must be minute-aligned.")
        with self.lock:
            total = sum(e.value for e in self.state.events.values()
                        if e.customer == query["customer"] and start <= e.timestamp < end)
        summary = {"object": "billing.meter_event_summary", "id": f"mtrusg_{secrets.token_hex(6)}",
                   "aggregated_value": total, "start_time": start, "end_time": end, "livemode": False,
                   "meter": METER_ID}
        return 200, _list([summary], f"/v1/billing/meters/{METER_ID}/event_summaries")

    def create_customer(self, params: dict[str, Any], idem: str | None = None) -> dict[str, Any]:
        return self.create("/v1/customers", params, idem)[1]

    def create(self, path: str, params: dict[str, Any], idem: str | None) -> tuple[int, dict[str, Any], bool]:
        """One object creation under Stripe's idempotency rules: (status, body, replayed)."""
        gate = self.gate
        if gate is not None:
            # A broken gate: the other attempt never came, so this one goes on alone.
            with contextlib.suppress(threading.BrokenBarrierError):
                gate.wait()
        with self.lock:
            stored = self.state.idempotent.get(idem) if idem else None
            if stored is not None:
                if (stored.path, stored.params) != (path, params):
                    return 400, _error("idempotency_error", "Keys for idempotent requests can only be used with "
                                       f"the same parameters they were first used with (key '{idem}')."), False
                self.state.replays.append((path, str(idem)))
                return stored.status, stored.body, True
            body = self._creators()[path](params)
            if idem:
                self.state.idempotent[idem] = StoredAnswer(path, params, 200, body)
            return 200, body, False

    def _creators(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        return {"/v1/customers": self._new_customer, "/v1/checkout/sessions": self._new_checkout_session,
                "/v1/subscriptions": self._new_subscription}

    # The _new_* methods run under the lock.

    def _new_customer(self, params: dict[str, Any]) -> dict[str, Any]:
        customer = {"id": f"cus_{secrets.token_hex(7)}", "object": "customer", "name": params.get("name"),
                    "email": params.get("email"), "metadata": params.get("metadata") or {}, "livemode": False}
        self.state.customers[customer["id"]] = customer
        return customer

    def _new_checkout_session(self, params: dict[str, Any]) -> dict[str, Any]:
        self.state.checkout_sessions.append(params)
        return {"id": f"cs_test_{secrets.token_hex(8)}", "object": "checkout.session",
                "url": "https://checkout.stripe.test/c/pay/session", "expires_at": int(time.time()) + 86400,
                "mode": params.get("mode"), "customer": params.get("customer"), "livemode": False}

    def _new_subscription(self, params: dict[str, Any]) -> dict[str, Any]:
        self.state.subscriptions.append(params)
        sub_id = f"sub_{secrets.token_hex(8)}"
        items = [{"id": f"si_{secrets.token_hex(6)}", "object": "subscription_item",
                  "price": {"id": item["price"], "object": "price"}, "quantity": int(item.get("quantity") or 1)}
                 for item in params.get("items") or []]
        sub = {"id": sub_id, "object": "subscription", "status": "incomplete", "customer": params.get("customer"),
               "metadata": params.get("metadata") or {}, "livemode": False,
               "items": _list(items, f"/v1/subscription_items?subscription={sub_id}")}
        self.state.subscription_objects[sub_id] = sub
        # The creation's answer is a snapshot: later changes (a cancellation) show in the list only.
        return json.loads(json.dumps(sub))

    def list_subscriptions(self, query: dict[str, Any]) -> dict[str, Any]:
        wanted = query.get("status")
        with self.lock:
            # Stripe leaves canceled subscriptions out unless asked for a status (or "all").
            subs = [sub for sub in self.state.subscription_objects.values()
                    if sub["customer"] == query.get("customer")
                    and (wanted in ("all", sub["status"]) or (wanted is None and sub["status"] != "canceled"))]
            return _list(json.loads(json.dumps(subs)), "/v1/subscriptions")

    def next_create_mode(self) -> str:
        with self.lock:
            return self.create_script.popleft() if self.create_script else "ok"


def _error(kind: str, message: str, *, code: str | None = None) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message, **({"code": code} if code else {})}}


def _list(data: list[dict[str, Any]], url: str) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": False, "url": url}


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one connection per request, so stop() really refuses the very next request.
    stripe: FakeStripe

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _reply(self, status: int, body: dict[str, Any], *, replayed: bool = False) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Request-Id", f"req_{secrets.token_hex(6)}")
            if replayed:
                self.send_header("Idempotent-Replayed", "true")
            if status == 429:
                self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout) before the answer

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {API_KEY}":
            self._reply(401, _error("invalid_request_error", "Invalid API Key provided."))
            return False
        return True

    def do_GET(self) -> None:
        if not self._authorised():
            return
        parts = urlsplit(self.path)
        query = decode_form(parse_qsl(parts.query, keep_blank_values=True))
        fake = self.stripe
        if parts.path == "/v1/billing/meters":
            meter = {"id": METER_ID, "object": "billing.meter", "event_name": fake.state.meter_event_name,
                     "status": "active", "livemode": False}
            self._reply(200, _list([meter], "/v1/billing/meters"))
            return
        match = re.fullmatch(r"/v1/billing/meters/([^/]+)/event_summaries", parts.path)
        if match:
            self._reply(*fake.summaries(match.group(1), query))
            return
        if parts.path == "/v1/subscriptions":
            self._reply(200, fake.list_subscriptions(query))
            return
        match = re.fullmatch(r"/v1/customers/([^/]+)", parts.path)
        if match:
            customer = fake.state.customers.get(match.group(1))
            if customer is None:
                self._reply(404, _error("invalid_request_error", "No such customer.", code="resource_missing"))
            else:
                self._reply(200, customer)
            return
        self._reply(404, _error("invalid_request_error", f"Unrecognized request URL (GET: {parts.path})."))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode()
        if not self._authorised():
            return
        params = decode_form(parse_qsl(raw, keep_blank_values=True))
        fake = self.stripe
        path = urlsplit(self.path).path
        if path == "/v1/billing/meter_events":
            status, body, delay, hold = fake.meter_event(params)
            if hold:
                fake.held.set()
                fake.release.wait(timeout=60)
            if delay:
                time.sleep(delay)
            self._reply(status, body)
        elif path in CREATION_PATHS:
            mode = fake.next_create_mode()
            status, body, replayed = fake.create(path, params, self.headers.get("Idempotency-Key"))
            if mode == "drop":
                return  # created and stored; the connection closes without an answer
            self._reply(status, body, replayed=replayed)
        else:
            self._reply(404, _error("invalid_request_error", f"Unrecognized request URL (POST: {path})."))
