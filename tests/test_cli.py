"""The `ponyserve` command: accounts, keys, migrate, demo-model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def _ponyserve(*args: str, database_url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PONYSERVE_DATABASE_URL": database_url, "PONYSERVE_DATA_DIR": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_accounts_and_keys_created_from_the_cli_work_over_http(pg_url, client, tmp_path) -> None:
    made = _ponyserve("accounts", "create", "--name", "CLI Partner", database_url=pg_url, tmp_path=tmp_path)
    assert made.returncode == 0, made.stderr
    account = json.loads(made.stdout)
    assert account["id"].startswith("acct_")
    assert account["plan"]["code"] == "free"

    keyed = _ponyserve("keys", "create", "--account", account["id"], "--scope", "generate",
                       database_url=pg_url, tmp_path=tmp_path)
    assert keyed.returncode == 0, keyed.stderr
    key = json.loads(keyed.stdout)
    assert key["scopes"] == ["generate"]
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {key['key']}"}).status_code == 200


def test_cli_errors_are_json_and_exit_nonzero(pg_url, tmp_path) -> None:
    bad_plan = _ponyserve("accounts", "create", "--name", "X", "--plan", "gold", database_url=pg_url,
                          tmp_path=tmp_path)
    assert bad_plan.returncode == 2
    assert json.loads(bad_plan.stderr)["error"]["code"] == "unknown_plan"
    bad_account = _ponyserve("keys", "create", "--account", "acct_nope", database_url=pg_url, tmp_path=tmp_path)
    assert bad_account.returncode == 2
    assert json.loads(bad_account.stderr)["error"]["code"] == "not_found"


def test_migrate_creates_a_fresh_sqlite_database(tmp_path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'sub' / 'fresh.db'}"
    done = _ponyserve("migrate", database_url=url, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "sub" / "fresh.db").exists()
