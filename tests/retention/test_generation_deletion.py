"""DELETE /v1/generations/{id}: pixels and prompts go, money records stay, and nothing unfinished is charged."""

from __future__ import annotations

import httpx
from harness import Customer, LiveServer, new_customer, wait_jobs_finished
from retention_helpers import sql as _sql
from retention_helpers import stored as _stored

SMALL = {"prompt": "a secret pony", "negative_prompt": "nobody must know", "size": "64x64", "steps": 1}


def test_deleting_a_finished_job_removes_its_images_and_words_but_keeps_the_ledger(  # type: ignore[no-untyped-def]
        purging: LiveServer, pclient: httpx.Client, purging_admin: str) -> None:
    me = new_customer(pclient, purging_admin)
    kept = pclient.post("/v1/generations", headers=me.headers, json={**SMALL, "seed": 1}).json()["id"]
    doomed = pclient.post("/v1/generations", headers=me.headers,
                          json={**SMALL, "n": 2, "metadata": {"case": "gdpr-17"}, "user": "end-user-9"}).json()["id"]
    done = {j["id"]: j for j in wait_jobs_finished(pclient, me.headers, [kept, doomed])}
    outputs = done[doomed]["outputs"]
    assert [o["status"] for o in outputs] == ["delivered", "delivered"]  # type: ignore[index]
    files_before = _stored(purging)
    assert sum(1 for p in files_before if doomed in str(p) or any(o["id"] in p.name for o in outputs)) == 2  # type: ignore[union-attr]
    webhook = pclient.post("/v1/webhooks", headers=me.headers, json={"url": "http://127.0.0.1:9/hooks"})
    assert webhook.status_code == 201, webhook.text

    r = pclient.delete(f"/v1/generations/{doomed}", headers=me.headers)
    assert r.status_code == 204 and r.content == b""

    assert pclient.get(f"/v1/generations/{doomed}", headers=me.headers).status_code == 404
    for output in outputs:  # type: ignore[union-attr]
        assert httpx.get(output["url"]).status_code == 404  # the signed link
        assert pclient.get(f"/v1/images/{output['id']}", headers=me.headers).status_code == 404
    assert [j["id"] for j in pclient.get("/v1/generations", headers=me.headers).json()["data"]] == [kept]
    assert len(_stored(purging)) == len(files_before) - 2
    again = pclient.delete(f"/v1/generations/{doomed}", headers=me.headers)
    assert again.status_code == 404 and again.json()["error"]["code"] == "not_found"

    [row] = _sql(purging, "SELECT prompt, negative_prompt, revised_prompt, request_user, metadata, deleted_at "
                          "FROM jobs WHERE id = :j", j=doomed)
    assert row[:4] == ("", "", "", None) and row[4] is None and row[5] is not None
    assert len(_sql(purging, "SELECT id FROM usage_ledger WHERE job_id = :j", j=doomed)) == 2
    assert _sql(purging, "SELECT count(*) FROM webhook_messages WHERE job_id = :j", j=doomed) == [(0,)]
    # The job that was not deleted is untouched.
    assert pclient.get(f"/v1/generations/{kept}", headers=me.headers).json()["parameters"]["prompt"] == "a secret pony"


def test_deleting_an_unfinished_job_cancels_it_uncharged(  # type: ignore[no-untyped-def]
        idle: LiveServer, iclient: httpx.Client, idle_admin: str) -> None:
    me = new_customer(iclient, idle_admin)
    job = iclient.post("/v1/generations", headers=me.headers, json={**SMALL, "n": 3}).json()
    assert job["status"] == "queued"
    held = _sql(idle, "SELECT reservation_state FROM jobs WHERE id = :j", j=job["id"])
    assert held == [("held",)]

    assert iclient.delete(f"/v1/generations/{job['id']}", headers=me.headers).status_code == 204

    assert iclient.get(f"/v1/generations/{job['id']}", headers=me.headers).status_code == 404
    [(status, reservation, prompt)] = _sql(idle, "SELECT status, reservation_state, prompt FROM jobs WHERE id = :j",
                                           j=job["id"])
    assert (status, reservation, prompt) == ("cancelled", "released", "")
    assert _sql(idle, "SELECT count(*) FROM usage_ledger WHERE job_id = :j", j=job["id"]) == [(0,)]
    usage = iclient.get("/v1/usage", headers=me.headers).json()
    for scope in ("account", "key"):
        for period in ("day", "month"):
            assert (usage[scope][period]["used"], usage[scope][period]["reserved"]) == (0, 0), usage


def test_a_job_is_deleted_only_by_its_owner(  # type: ignore[no-untyped-def]
        idle: LiveServer, iclient: httpx.Client, idle_admin: str) -> None:
    owner, stranger = new_customer(iclient, idle_admin), new_customer(iclient, idle_admin)
    job_id = iclient.post("/v1/generations", headers=owner.headers, json=SMALL).json()["id"]
    r = iclient.delete(f"/v1/generations/{job_id}", headers=stranger.headers)
    assert r.status_code == 404 and r.json()["error"]["param"] == "id"
    assert iclient.delete(f"/v1/generations/{job_id}").status_code == 401
    assert iclient.get(f"/v1/generations/{job_id}", headers=owner.headers).json()["status"] == "queued"
    assert iclient.delete(f"/v1/generations/{job_id}", headers=owner.headers).status_code == 204


def test_an_idempotent_retry_of_a_deleted_job_is_refused_not_remade(  # type: ignore[no-untyped-def]
        idle: LiveServer, iclient: httpx.Client, idle_admin: str) -> None:
    me: Customer = new_customer(iclient, idle_admin)
    headers = {**me.headers, "Idempotency-Key": "order-77"}
    first = iclient.post("/v1/generations", headers=headers, json=SMALL).json()["id"]
    assert iclient.delete(f"/v1/generations/{first}", headers=me.headers).status_code == 204
    retry = iclient.post("/v1/generations", headers=headers, json=SMALL)
    assert retry.status_code == 409 and retry.json()["error"]["code"] == "generation_deleted"
    assert _sql(idle, "SELECT count(*) FROM jobs WHERE api_key_id = :k", k=me.key_id) == [(1,)]
