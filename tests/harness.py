"""Test plumbing shared by several test modules: a live server in a thread, customers made over HTTP."""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
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
                    heartbeat_seconds=0.5, log_json=False, **{"metrics_refresh_seconds": 0.2, **overrides})


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


def service_env(database_url: str, data_dir: Path, demo_model_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for `ponyserve` subprocesses sharing one database, image dir and demo model."""
    import os

    return {**os.environ, "PONYSERVE_DATABASE_URL": database_url, "PONYSERVE_DATA_DIR": str(data_dir),
            "PONYSERVE_DEMO_MODEL_PATH": str(demo_model_dir), "PONYSERVE_HEARTBEAT_SECONDS": "0.5",
            "PONYSERVE_LOG_JSON": "false",
            # Several torch processes on a small CI machine: one thread each, or they fight over the cores.
            "OMP_NUM_THREADS": "1", **extra}


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A `ponyserve` subprocess; output goes to a file (an unread pipe fills up and blocks the child)."""
    with log.open("ab") as sink:
        return subprocess.Popen([sys.executable, "-m", "app.cli", *args], env=env, stdout=sink,
                                stderr=subprocess.STDOUT)


def spawn_api(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = spawn(["serve", "--no-embedded-worker", "--port", str(port)], env, log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"API process did not start: {log.read_text()[-2000:]}")
        time.sleep(0.2)


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()


def bootstrap_admin(settings: Settings) -> str:
    import asyncio

    from app.cli import _bootstrap

    token = asyncio.run(_bootstrap(settings))
    assert token is not None
    return token


def wait_jobs_finished(client: httpx.Client, headers: dict[str, str], job_ids: list[str], timeout: float = 180
                       ) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = [client.get(f"/v1/generations/{j}", headers=headers).json() for j in job_ids]
        if all(j["status"] in ("succeeded", "failed", "cancelled") for j in jobs):
            return jobs
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs still unfinished: {[j['status'] for j in jobs]}")
        time.sleep(0.3)
