"""The artist opt-out registry: CRUD, CSV import, refusals in every spelling, and a second API
process picking up changes within seconds."""

from __future__ import annotations

import secrets

import httpx
import pytest
from harness import start_server
from moderation_deploy import auth, eventually
from sqlalchemy import text


def _artist() -> str:
    # Unique per test: the registry is shared by the whole session.
    return f"Quillon Marrow{secrets.token_hex(2)}".replace("0", "o").replace("1", "i")


def _submit(client: httpx.Client, headers: dict[str, str], prompt: str) -> httpx.Response:
    return client.post("/v1/generations", json={"prompt": prompt, "size": "64x64", "steps": 1}, headers=headers)


def test_optout_crud_and_refusal_in_many_spellings(moderated, mclient) -> None:
    admin = auth(moderated.admin_key)
    name = _artist()
    first, last = name.split(" ")
    created = mclient.post("/admin/optouts", json={"name": name, "aliases": [f"{first[0]}. {last}"]}, headers=admin)
    assert created.status_code == 201, created.text
    entry = created.json()
    assert entry["aliases"] == [f"{first[0]}. {last}"]
    listing = mclient.get("/admin/optouts", headers=admin).json()
    assert entry["id"] in [e["id"] for e in listing["data"]]
    assert listing["revision"] >= 1
    dup = mclient.post("/admin/optouts", json={"name": name.upper()}, headers=admin)
    assert (dup.status_code, dup.json()["error"]["code"]) == (409, "optout_exists")

    cust = moderated.customer(mclient)
    spellings = [
        f"portrait, by {first}_{last}",
        f"({first.lower()}{last.lower()}:1.2), castle",
        f"{name.upper()} style, sunset",
        f"in the style of {first}-{last}",
        f"artist:{first.lower()} {last.lower()}",
        f"a lake, {first[0]}. {last}",
    ]
    for prompt in spellings:
        r = _submit(mclient, cust.headers, prompt)
        assert (r.status_code, r.json()["error"]["code"]) == (400, "artist_opted_out"), prompt
        assert last.lower() not in r.json()["error"]["message"].lower()
    # Whole words only: the surname inside another word is fine.
    assert _submit(mclient, cust.headers, f"a {last.lower()}ish landscape").status_code == 202
    incidents = mclient.get("/admin/moderation/incidents", params={"account_id": cust.account_id,
                                                                   "category": "artist_optout"},
                            headers=auth(moderated.moderator_key)).json()["data"]
    assert len(incidents) == len(spellings)
    assert {i["optout_id"] for i in incidents} == {entry["id"]}
    assert not any(i["strike"] for i in incidents)

    deleted = mclient.delete(f"/admin/optouts/{entry['id']}", headers=admin)
    assert deleted.status_code == 200 and deleted.json()["deleted_at"] is not None
    assert _submit(mclient, cust.headers, spellings[0]).status_code == 202
    assert mclient.delete(f"/admin/optouts/{entry['id']}", headers=admin).status_code == 404
    assert mclient.delete(f"/admin/optouts/{2**40}", headers=admin).status_code == 400
    assert entry["id"] not in [e["id"] for e in mclient.get("/admin/optouts", headers=admin).json()["data"]]
    with_deleted = mclient.get("/admin/optouts", params={"include_deleted": "true"}, headers=admin).json()["data"]
    assert entry["id"] in [e["id"] for e in with_deleted]
    with moderated.engine.connect() as conn:
        actions = conn.execute(text("SELECT action, actor_key_id FROM moderation_audit_log "
                                    "WHERE target_type = 'optout' AND target_id = :t ORDER BY id"),
                               {"t": str(entry["id"])}).all()
    assert [a.action for a in actions] == ["optout.create", "optout.delete"]


def test_require_context_names_match_only_as_artists(moderated, mclient) -> None:
    admin = auth(moderated.admin_key)
    word = f"glimmer{secrets.token_hex(2)}".replace("0", "o").replace("1", "i")
    entry = mclient.post("/admin/optouts", json={"name": word, "require_context": True}, headers=admin).json()
    cust = moderated.customer(mclient)
    assert _submit(mclient, cust.headers, f"a {word} over the sea").status_code == 202
    assert _submit(mclient, cust.headers, f"a castle by {word}").json()["error"]["code"] == "artist_opted_out"
    mclient.delete(f"/admin/optouts/{entry['id']}", headers=admin)


def test_csv_import_creates_merges_and_is_all_or_nothing(moderated, mclient) -> None:
    admin = {**auth(moderated.admin_key), "Content-Type": "text/csv"}
    a, b = _artist(), _artist()
    csv_body = f"name,aliases\n{a},{a.replace(' ', '')};{a.split()[1]} art\n\"{b}\",\n"
    r = mclient.post("/admin/optouts/import", content=csv_body, headers=admin)
    assert r.status_code == 200, r.text
    assert (r.json()["created"], r.json()["updated"], r.json()["unchanged"]) == (2, 0, 0)
    # Again, with one new alias for b: merged, nothing duplicated.
    r = mclient.post("/admin/optouts/import", content=f"{a},\n{b},{b.lower().replace(' ', '_')}x\n", headers=admin)
    assert (r.json()["created"], r.json()["updated"], r.json()["unchanged"]) == (0, 1, 1)
    rows = {e["name"]: e for e in mclient.get("/admin/optouts", params={"limit": 500}, headers=admin).json()["data"]}
    assert rows[a]["aliases"] == [a.replace(" ", ""), f"{a.split()[1]} art"]
    assert rows[b]["aliases"] == [f"{b.lower().replace(' ', '_')}x"]

    cust = moderated.customer(mclient)
    assert _submit(mclient, cust.headers, f"{a.replace(' ', '')} style").json()["error"]["code"] == "artist_opted_out"
    assert _submit(mclient, cust.headers, f"by {b}").json()["error"]["code"] == "artist_opted_out"

    c = _artist()
    bad = mclient.post("/admin/optouts/import", content=f"{c},\n\"!!!\",x\n", headers=admin)
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_csv")
    assert "line 2" in bad.json()["error"]["message"]
    assert c not in {e["name"] for e in mclient.get("/admin/optouts", params={"limit": 500},
                                                    headers=admin).json()["data"]}
    wrong_type = mclient.post("/admin/optouts/import", json={"name": c}, headers=auth(moderated.admin_key))
    assert (wrong_type.status_code, wrong_type.json()["error"]["code"]) == (400, "invalid_content_type")
    for row in (rows[a], rows[b]):
        mclient.delete(f"/admin/optouts/{row['id']}", headers=admin)


@pytest.mark.parametrize("body", [{"name": ""}, {"name": "..."}, {"name": "x", "aliases": ["?!"]},
                                  {"name": "x", "unknown": 1}])
def test_invalid_optouts_are_refused(moderated, mclient, body) -> None:
    r = mclient.post("/admin/optouts", json=body, headers=auth(moderated.admin_key))
    assert r.status_code == 400, r.text


def test_another_api_process_sees_registry_changes_within_seconds(moderated, mclient) -> None:
    # A second replica on the same database, without a worker: it only screens and enqueues.
    replica = start_server(moderated.server.settings, embedded_worker=False)
    try:
        with httpx.Client(base_url=replica.url, timeout=30) as other:
            cust = moderated.customer(mclient)
            name = _artist()
            prompt = f"a harbour at dawn by {name}"
            assert _submit(other, cust.headers, prompt).status_code == 202
            entry = mclient.post("/admin/optouts", json={"name": name}, headers=auth(moderated.admin_key)).json()
            # The process that made the change applies it at once…
            assert _submit(mclient, cust.headers, prompt).json()["error"]["code"] == "artist_opted_out"
            # …and the other within its refresh interval (2 s by default).
            took = eventually(lambda: _submit(other, cust.headers, prompt).status_code == 400, timeout=6)
            assert took < 6
            mclient.delete(f"/admin/optouts/{entry['id']}", headers=auth(moderated.admin_key))
            eventually(lambda: _submit(other, cust.headers, prompt).status_code == 202, timeout=6)
    finally:
        replica.stop()
