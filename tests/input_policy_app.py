"""A live server with the input-policy middlewares, whether or not app/main.py registers them yet.

``create_app`` owns middleware registration; until it adds ``InputPolicyMiddleware`` and
``AllowHeaderMiddleware`` these tests add them, so they test the behaviour the service must have.
Adding them twice is harmless: both are idempotent.
"""

from __future__ import annotations

import threading
import time

import uvicorn
from harness import LiveServer, free_port

from app.config import Settings
from app.kit.allow_header import AllowHeaderMiddleware
from app.kit.input_policy import InputPolicyMiddleware
from app.main import create_app


def start_policed_server(settings: Settings, *, embedded_worker: bool = False) -> LiveServer:
    app = create_app(settings, embedded_worker=embedded_worker)
    if not any(m.cls is InputPolicyMiddleware for m in app.user_middleware):
        app.add_middleware(InputPolicyMiddleware)
    if not any(m.cls is AllowHeaderMiddleware for m in app.user_middleware):
        app.add_middleware(AllowHeaderMiddleware)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.05)
    return LiveServer(url=f"http://127.0.0.1:{port}", settings=settings, server=server, thread=thread)
