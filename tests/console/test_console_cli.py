"""The `ponyserve` commands for what the console does not cover: listing, revoking, a new admin key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from console_deploy import auth


def _ponyserve(console, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    env = {**os.environ, "PONYSERVE_DATABASE_URL": console.server.settings.database_url,
           "PONYSERVE_DATA_DIR": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_accounts_and_keys_are_listed_and_a_key_revoked_from_the_cli(console, api, tmp_path) -> None:
    cust = console.customer(api)
    name = api.get(f"/admin/accounts/{cust.account_id}", headers=auth(console.admin_key)).json()["name"]

    listed = _ponyserve(console, tmp_path, "accounts", "list", "--search", name)
    assert listed.returncode == 0, listed.stderr
    assert [(a["id"], a["name"]) for a in json.loads(listed.stdout)["data"]] == [(cust.account_id, name)]

    keys = _ponyserve(console, tmp_path, "keys", "list", "--account", cust.account_id)
    assert keys.returncode == 0, keys.stderr
    [key] = json.loads(keys.stdout)
    assert (key["id"], key["revoked_at"]) == (cust.key_id, None)
    assert "key" not in key and cust.key not in keys.stdout

    revoked = _ponyserve(console, tmp_path, "keys", "revoke", cust.key_id)
    assert revoked.returncode == 0, revoked.stderr
    assert json.loads(revoked.stdout)["revoked_at"] is not None
    assert api.get("/v1/models", headers=cust.headers).status_code == 401

    unknown = _ponyserve(console, tmp_path, "keys", "revoke", "key_nope")
    assert unknown.returncode == 2 and json.loads(unknown.stderr)["error"]["code"] == "not_found"


def test_a_lost_admin_key_is_replaced_on_the_operators_machine(console, api, tmp_path) -> None:
    made = _ponyserve(console, tmp_path, "keys", "create", "--scope", "admin", "--name", "replacement")
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    operator = api.get("/v1/usage", headers=auth(console.admin_key)).json()["account_id"]
    assert (key["account_id"], key["scopes"]) == (operator, ["admin"])
    assert api.get("/admin/accounts", headers=auth(key["key"])).status_code == 200
