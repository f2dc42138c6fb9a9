"""Retention: the worker purges finished jobs past their account's (or plan's) retention, by itself."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
from harness import LiveServer, new_customer, wait_jobs_finished
from retention_helpers import sql as _sql
from retention_helpers import stored as _stored
from sqlalchemy import create_engine, text

from app.db import sync_url

SMALL = {"prompt": "a fleeting pony", "size": "64x64", "steps": 1}


def _age(server: LiveServer, job_id: str, hours: float) -> None:
    """Pretends the job finished ``hours`` ago."""
    engine = create_engine(sync_url(server.settings.database_url))
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE jobs SET finished_at = :t WHERE id = :j"),
                         {"t": datetime.now(UTC) - timedelta(hours=hours), "j": job_id})
    finally:
        engine.dispose()


def _until_gone(client: httpx.Client, headers: dict[str, str], job_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while client.get(f"/v1/generations/{job_id}", headers=headers).status_code != 404:
        assert time.monotonic() < deadline, f"{job_id} was not purged"
        time.sleep(0.3)


def test_the_worker_purges_jobs_past_the_plan_or_account_retention(  # type: ignore[no-untyped-def]
        purging: LiveServer, pclient: httpx.Client, purging_admin: str) -> None:
    admin = {"Authorization": f"Bearer {purging_admin}"}
    plan = pclient.post("/admin/plans", headers=admin, json={"code": "ephemeral", "name": "Ephemeral",
                                                             "retention_hours": 24})
    assert plan.status_code == 201, plan.text
    assert plan.json()["retention_hours"] == 24
    on_plan = new_customer(pclient, purging_admin, plan="ephemeral")
    overridden = new_customer(pclient, purging_admin, plan="ephemeral")
    patched = pclient.patch(f"/admin/accounts/{overridden.account_id}", headers=admin, json={"retention_hours": 1})
    assert patched.status_code == 200 and patched.json()["retention_hours"] == 1
    assert patched.json()["plan"]["retention_hours"] == 24
    forever = new_customer(pclient, purging_admin)  # the free plan keeps jobs until deleted

    jobs = {name: pclient.post("/v1/generations", headers=who.headers, json=SMALL).json()["id"]
            for name, who in (("young", on_plan), ("old", on_plan), ("override", overridden), ("forever", forever))}
    for name, who in (("young", on_plan), ("old", on_plan), ("override", overridden), ("forever", forever)):
        wait_jobs_finished(pclient, who.headers, [jobs[name]])
    files_before = len(_stored(purging))
    _age(purging, jobs["young"], 23)      # within the plan's 24 h
    _age(purging, jobs["old"], 25)        # past them
    _age(purging, jobs["override"], 2)    # past the account's own 1 h
    _age(purging, jobs["forever"], 24 * 365)

    _until_gone(pclient, on_plan.headers, jobs["old"])
    _until_gone(pclient, overridden.headers, jobs["override"])
    assert pclient.get(f"/v1/generations/{jobs['young']}", headers=on_plan.headers).status_code == 200
    assert pclient.get(f"/v1/generations/{jobs['forever']}", headers=forever.headers).status_code == 200
    assert len(_stored(purging)) == files_before - 2
    for name in ("old", "override"):
        [(prompt, deleted)] = _sql(purging, "SELECT prompt, deleted_at FROM jobs WHERE id = :j", j=jobs[name])
        assert prompt == "" and deleted is not None
        assert _sql(purging, "SELECT count(*) FROM usage_ledger WHERE job_id = :j", j=jobs[name]) == [(1,)]

    # Back to the plan's retention: the young job is still within it.
    assert pclient.patch(f"/admin/accounts/{overridden.account_id}", headers=admin,
                         json={"retention_hours": None}).json()["retention_hours"] is None
    bad = pclient.patch("/admin/plans/ephemeral", headers=admin, json={"retention_hours": 0})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "retention_hours"


def test_a_store_false_job_its_response_never_erased_is_purged_after_a_grace(  # type: ignore[no-untyped-def]
        purging: LiveServer, pclient: httpx.Client, purging_admin: str) -> None:
    # As if the API process died between the job's end and its response: the row still says store=false.
    me = new_customer(pclient, purging_admin)
    job_id = pclient.post("/v1/generations", headers=me.headers, json=SMALL).json()["id"]
    wait_jobs_finished(pclient, me.headers, [job_id])
    engine = create_engine(sync_url(purging.settings.database_url))
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE jobs SET store = false WHERE id = :j"), {"j": job_id})
    finally:
        engine.dispose()
    time.sleep(6)  # a whole sweep: a freshly finished store=false job is left to its response
    assert pclient.get(f"/v1/generations/{job_id}", headers=me.headers).status_code == 200
    _age(purging, job_id, 0.5)
    _until_gone(pclient, me.headers, job_id)
