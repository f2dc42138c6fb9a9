"""store: false — the synchronous response carries the images, and nothing of the job is kept after it."""

from __future__ import annotations

import base64
import io

import httpx
from harness import LiveServer, new_customer
from PIL import Image
from retention_helpers import sql as _sql
from retention_helpers import stored as _stored

SMALL = {"prompt": "a private pony", "size": "64x64", "steps": 1, "response_format": "b64_json"}


def test_store_false_answers_with_the_bytes_and_keeps_nothing(  # type: ignore[no-untyped-def]
        purging: LiveServer, pclient: httpx.Client, purging_admin: str) -> None:
    me = new_customer(pclient, purging_admin)
    pclient.post("/v1/webhooks", headers=me.headers, json={"url": "http://127.0.0.1:9/hooks"})
    files_before = len(_stored(purging))
    headers = {**me.headers, "Idempotency-Key": "once-only"}
    r = pclient.post("/v1/images/generations", headers=headers,
                     json={**SMALL, "store": False, "n": 2, "metadata": {"ref": "x"}})
    assert r.status_code == 200, r.text
    body = r.json()
    for item in body["data"]:
        assert Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))).size == (64, 64)
    assert body["usage"]["images"] == 2

    assert pclient.get(f"/v1/generations/{body['id']}", headers=me.headers).status_code == 404
    assert pclient.get(f"/v1/images/{body['data'][0]['id']}", headers=me.headers).status_code == 404
    assert body["id"] not in [j["id"] for j in pclient.get("/v1/generations", headers=me.headers).json()["data"]]
    assert len(_stored(purging)) == files_before
    [(prompt, deleted_at)] = _sql(purging, "SELECT prompt, deleted_at FROM jobs WHERE id = :j", j=body["id"])
    assert prompt == "" and deleted_at is not None
    assert _sql(purging, "SELECT count(*) FROM webhook_messages WHERE job_id = :j", j=body["id"]) == [(0,)]
    assert _sql(purging, "SELECT count(*) FROM usage_ledger WHERE job_id = :j", j=body["id"]) == [(2,)]
    # A retry cannot be given images that are gone, and is not made (and charged) again.
    retry = pclient.post("/v1/images/generations", headers=headers,
                         json={**SMALL, "store": False, "n": 2, "metadata": {"ref": "x"}})
    assert retry.status_code == 409 and retry.json()["error"]["code"] == "generation_deleted"
    assert _sql(purging, "SELECT count(*) FROM usage_ledger WHERE job_id = :j", j=body["id"]) == [(2,)]


def test_store_false_needs_a_response_that_carries_the_images(  # type: ignore[no-untyped-def]
        purging: LiveServer, pclient: httpx.Client, purging_admin: str) -> None:
    me = new_customer(pclient, purging_admin)
    linked = pclient.post("/v1/images/generations", headers=me.headers,
                          json={**SMALL, "store": False, "response_format": "url"})
    assert linked.status_code == 400
    assert (linked.json()["error"]["code"], linked.json()["error"]["param"]) == ("store_requires_b64_json",
                                                                                 "response_format")
    queued = pclient.post("/v1/generations", headers=me.headers, json={**SMALL, "store": False})
    assert queued.status_code == 400
    assert (queued.json()["error"]["code"], queued.json()["error"]["param"]) == ("store_not_supported", "store")
    assert pclient.get("/v1/generations", headers=me.headers).json()["data"] == []
