"""The worker process's own small HTTP server: /metrics for Prometheus, /healthz and /readyz for
the kubelet.

A worker serves no API, yet its counters (jobs, images, pipeline time, queue wait) and its GPU
gauges live in its own process, so Prometheus must scrape every worker pod. A plain threaded
server keeps it off the worker's event loop: a scrape or a probe answers even while the loop is
busy with a batch, and never delays one.
"""

from __future__ import annotations

import errno
import json
import logging
import secrets
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from pydantic import SecretStr

log = logging.getLogger("ponyserve.metrics")

# States in which a worker takes jobs: a rollout waits for the new pod to reach one (its models loaded).
READY_STATES = frozenset({"ready", "busy"})


def metrics_token_matches(token: SecretStr | None, authorization: str | None) -> bool:
    """Whether an ``Authorization`` header may read metrics: anything when no token is configured
    (laptops), else exactly ``Bearer <token>``, compared in constant time."""
    if token is None:
        return True
    scheme, _, presented = (authorization or "").partition(" ")
    expected = token.get_secret_value().encode()
    return scheme.lower() == "bearer" and secrets.compare_digest(presented.strip().encode(), expected)


def _unauthorized_body() -> bytes:
    from app.errors import AuthenticationError

    err = AuthenticationError("Send 'Authorization: Bearer <metrics token>'.", code="invalid_metrics_token")
    return json.dumps(err.body()).encode()


class MetricsServer:
    """Serves until :meth:`close`; ``port`` is the one really bound (useful with port 0)."""

    def __init__(self, httpd: ThreadingHTTPServer) -> None:
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="worker-metrics", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _handler(token: SecretStr | None, state: Callable[[], str], registry: CollectorRegistry
             ) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "ponyserve-worker"
        sys_version = ""

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                if not metrics_token_matches(token, self.headers.get("Authorization")):
                    self._send(401, _unauthorized_body(), "application/json",
                               {"WWW-Authenticate": 'Bearer realm="ponyserve"'})
                    return
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._send(200, b'{"status": "ok"}', "application/json")
            elif path == "/readyz":
                current = state()
                ready = current in READY_STATES
                body = json.dumps({"status": "ready" if ready else "not_ready", "state": current}).encode()
                self._send(200 if ready else 503, body, "application/json")
            else:
                self._send(404, b'{"status": "not_found"}', "application/json")

        def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            # Probes and scrapes arrive every few seconds; one line each would bury the job log.
            pass

    return Handler


def start_metrics_server(host: str, port: int, *, token: SecretStr | None, state: Callable[[], str],
                         tries: int = 1, registry: CollectorRegistry = REGISTRY) -> MetricsServer:
    """Binds ``port``, or with ``tries`` > 1 the first free one of ``port … port + tries - 1``:
    the children of one ``worker --devices`` supervisor share the host's ports and take
    consecutive ones. Raises OSError when none is free."""
    handler = _handler(token, state, registry)
    last = port + max(tries, 1) - 1 if port else 0
    candidate = port
    while True:
        try:
            return MetricsServer(ThreadingHTTPServer((host, candidate), handler))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or candidate >= last:
                raise
            candidate += 1
