"""Test plumbing shared by several test modules: a live server in a thread, customers made over HTTP."""

from __future__ import annotations

import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from app.config import Settings
from app.main import create_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    settings: Settings
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start_server(settings: Settings, *, embedded_worker: bool = True) -> LiveServer:
    port = free_port()
    app = create_app(settings, embedded_worker=embedded_worker)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.05)
    return LiveServer(url=f"http://127.0.0.1:{port}", settings=settings, server=server, thread=thread)


def make_settings(database_url: str, data_dir: Path, demo_model_dir: Path, **overrides: object) -> Settings:
    return Settings(database_url=database_url, data_dir=data_dir, demo_model_path=demo_model_dir,
                    heartbeat_seconds=0.5, log_json=False, **overrides)


@dataclass
class Customer:
    account_id: str
    key: str
    key_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def new_customer(client: httpx.Client, admin_key: str, *, plan: str = "free",
                 scopes: tuple[str, ...] = ("generate",)) -> Customer:
    auth = {"Authorization": f"Bearer {admin_key}"}
    acct = client.post("/admin/accounts", json={"name": f"partner-{secrets.token_hex(3)}", "plan": plan},
                       headers=auth)
    assert acct.status_code == 201, acct.text
    key = client.post(f"/admin/accounts/{acct.json()['id']}/keys", json={"name": "test", "scopes": list(scopes)},
                      headers=auth)
    assert key.status_code == 201, key.text
    return Customer(account_id=acct.json()["id"], key=key.json()["key"], key_id=key.json()["id"])
