"""GET /v1/generations: a caller's own jobs, newest first, paged exactly, filtered by status, time and labels."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx
from harness import Customer, wait_jobs_finished

SMALL = {"prompt": "a pony in a meadow", "size": "64x64", "steps": 1}


def _queue(client: httpx.Client, who: Customer, **body: object) -> str:
    r = client.post("/v1/generations", headers=who.headers, json={**SMALL, **body})
    assert r.status_code in (200, 202), r.text
    job_id: str = r.json()["id"]
    return job_id


def _pages(client: httpx.Client, who: Customer, limit: int, **params: str) -> list[list[str]]:
    pages: list[list[str]] = []
    after: str | None = None
    while True:
        query: dict[str, str | int] = {"limit": limit, **params}
        if after is not None:
            query["after"] = after
        r = client.get("/v1/generations", headers=who.headers, params=query)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "list"
        ids = [job["id"] for job in body["data"]]
        assert (body["first_id"], body["last_id"]) == ((ids[0], ids[-1]) if ids else (None, None))
        pages.append(ids)
        if not body["has_more"]:
            return pages
        after = body["last_id"]


def test_listing_pages_through_exactly_my_jobs_newest_first(client: httpx.Client, make_customer) -> None:  # type: ignore[no-untyped-def]
    me, other = make_customer(), make_customer()
    mine = [_queue(client, me, seed=i) for i in range(5)]
    theirs = _queue(client, other)
    wait_jobs_finished(client, me.headers, mine)

    pages = _pages(client, me, limit=2)
    assert pages == [mine[::-1][0:2], mine[::-1][2:4], mine[::-1][4:5]]
    assert _pages(client, me, limit=5) == [mine[::-1]]  # a full last page says has_more: false
    whole = client.get("/v1/generations", headers=me.headers).json()
    assert [job["parameters"]["seed"] for job in whole["data"]] == [4, 3, 2, 1, 0]
    assert all(job["status"] == "succeeded" and job["outputs"][0]["url"] for job in whole["data"])
    assert whole["data"][0] == client.get(f"/v1/generations/{mine[-1]}", headers=me.headers).json()

    # Another account's job is neither listed nor usable as a cursor.
    assert theirs not in [j for page in pages for j in page]
    r = client.get("/v1/generations", headers=me.headers, params={"after": theirs})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_cursor"
    assert r.json()["error"]["param"] == "after"
    assert _pages(client, other, limit=10) == [[theirs]]


def test_listing_filters_by_status_created_after_and_metadata(client: httpx.Client, make_customer) -> None:  # type: ignore[no-untyped-def]
    me = make_customer()
    odd_key = 'we"ird\\key 😀'
    early = _queue(client, me, metadata={"order": "1", "team": "red"})
    time.sleep(0.05)
    boundary = datetime.now(UTC)
    time.sleep(0.05)
    late_red = _queue(client, me, metadata={"order": "2", "team": "red", odd_key: "ü"})
    late_blue = _queue(client, me, metadata={"order": "3", "team": "blue"})
    wait_jobs_finished(client, me.headers, [early, late_red, late_blue])
    cancelled = _queue(client, me, steps=50, metadata={"team": "red"})
    client.post(f"/v1/generations/{cancelled}/cancel", headers=me.headers)
    [ended] = wait_jobs_finished(client, me.headers, [cancelled])

    def ids(**params: str) -> list[str]:
        r = client.get("/v1/generations", headers=me.headers, params=params)
        assert r.status_code == 200, r.text
        return [job["id"] for job in r.json()["data"]]

    assert ids(**{"metadata[team]": "red"}) == [cancelled, late_red, early]
    assert ids(**{"metadata[team]": "red", "metadata[order]": "2"}) == [late_red]
    assert ids(**{f"metadata[{odd_key}]": "ü"}) == [late_red]
    assert ids(**{"metadata[team]": "green"}) == []
    assert ids(created_after=boundary.isoformat()) == [cancelled, late_blue, late_red]
    assert ids(created_after=str(int(boundary.timestamp()) + 3600)) == []
    # The cancel usually wins the race with the worker; either way the filter must say where the job ended.
    raced = [cancelled] if ended["status"] == "succeeded" else []
    assert ids(status="succeeded", **{"metadata[team]": "red"}) == [*raced, late_red, early]
    also = [late_red, early] if raced else []
    assert ids(status=str(ended["status"]), **{"metadata[team]": "red"}) == [cancelled, *also]
    assert client.get("/v1/generations", headers=me.headers,
                      params={"metadata[team]": "red"}).json()["data"][1]["metadata"] == {
        "order": "2", "team": "red", odd_key: "ü"}


def test_bad_listing_queries_are_clear_400s(client: httpx.Client, make_customer) -> None:  # type: ignore[no-untyped-def]
    me = make_customer()
    cases = [
        ({"status": "exploded"}, "status"),
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"after": "gen_nope"}, "after"),
        ({"metadata[]": "x"}, "metadata[]"),
        ({"metadata": "team=red"}, "metadata"),
        ({"metadata[k]": "v" * 513}, "metadata[k]"),
        ({f"metadata[k{i}]": "v" for i in range(17)}, "metadata"),
    ]
    for params, param in cases:
        r = client.get("/v1/generations", headers=me.headers, params=params)
        assert r.status_code == 400, (params, r.text)
        error = r.json()["error"]
        assert error["param"] == param and error["message"], (params, error)
    twice = client.get("/v1/generations?metadata[k]=a&metadata[k]=b", headers=me.headers)
    assert twice.status_code == 400 and twice.json()["error"]["code"] == "invalid_metadata_filter"
    assert client.get("/v1/generations").status_code == 401
