"""One key's event streams cannot hurt another tenant: streams beyond the key's cap are refused
429, open ones hold no database connection while idle, and another account's requests keep
their normal latency while the key sits at its cap."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from pathlib import Path

import httpx
from harness import bootstrap_admin, make_settings, new_customer, start_server

PER_KEY = 10


def _p50(client: httpx.Client, headers: dict[str, str], samples: int = 40) -> float:
    timings = []
    for _ in range(samples):
        started = time.perf_counter()
        assert client.get("/v1/usage", headers=headers).status_code == 200
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


async def _hold_streams(url: str, headers: dict[str, str], job_ids: list[str], opened: asyncio.Event,
                        release: asyncio.Event, statuses: list[int]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=300)) as client:
        async def one(job_id: str) -> None:
            async with client.stream("GET", f"/v1/generations/{job_id}/events", headers=headers) as r:
                statuses.append(r.status_code)
                if len(statuses) == len(job_ids):
                    opened.set()
                if r.status_code == 200:
                    await release.wait()

        await asyncio.gather(*[one(j) for j in job_ids])


def test_a_key_at_its_stream_cap_is_refused_and_other_tenants_keep_their_latency(
    pg_factory, demo_model_dir: Path, tmp_path: Path,
) -> None:
    settings = make_settings(pg_factory(), tmp_path, demo_model_dir, max_streams_per_key=PER_KEY)
    # No worker: the jobs stay queued, so their streams stay open and re-read their position.
    server = start_server(settings, embedded_worker=False)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            admin = bootstrap_admin(settings)
            noisy, other = new_customer(client, admin, plan="internal"), new_customer(client, admin, plan="internal")
            jobs = [client.post("/v1/generations", json={"prompt": "a pony", "size": "64x64", "steps": 1},
                                headers=noisy.headers).json()["id"] for _ in range(4)]
            idle = _p50(client, other.headers)

            loop = asyncio.new_event_loop()
            opened, release = asyncio.Event(), asyncio.Event()
            statuses: list[int] = []
            holder = loop.create_task(_hold_streams(server.url, noisy.headers, [jobs[i % 4] for i in range(200)],
                                                    opened, release, statuses))
            thread = threading.Thread(target=loop.run_until_complete, args=(holder,), daemon=True)
            thread.start()
            deadline = time.monotonic() + 60
            while not opened.is_set():
                assert time.monotonic() < deadline, "streams did not open"
                time.sleep(0.05)
            assert statuses.count(200) == PER_KEY
            assert statuses.count(429) == 200 - PER_KEY
            refused = client.get(f"/v1/generations/{jobs[0]}/events", headers=noisy.headers)
            assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_streams"
            assert "Retry-After" in refused.headers

            loaded = _p50(client, other.headers)
            # Another tenant's streams are its own: the noisy key's cap does not count against it.
            with client.stream("GET", f"/v1/generations/{jobs[0]}/events", headers=noisy.headers) as r:
                assert r.status_code == 429
            loop.call_soon_threadsafe(release.set)
            thread.join(timeout=30)
        # A small absolute allowance keeps a millisecond-scale baseline from flaking on a busy machine.
        assert loaded <= 2 * idle + 0.005, (idle, loaded)
    finally:
        server.stop()


def test_closed_streams_give_their_place_back(pg_factory, demo_model_dir: Path, tmp_path: Path) -> None:
    settings = make_settings(pg_factory(), tmp_path, demo_model_dir, max_streams_per_key=2)
    server = start_server(settings, embedded_worker=False)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            cust = new_customer(client, bootstrap_admin(settings), plan="internal")
            job = client.post("/v1/generations", json={"prompt": "a pony", "size": "64x64", "steps": 1},
                              headers=cust.headers).json()["id"]
            for _ in range(5):
                # Opened and closed one after another: never more than one at a time, never refused.
                with client.stream("GET", f"/v1/generations/{job}/events", headers=cust.headers) as r:
                    assert r.status_code == 200
                    next(r.iter_lines())
            deadline = time.monotonic() + 10
            while True:
                with client.stream("GET", f"/v1/generations/{job}/events", headers=cust.headers) as a, \
                        client.stream("GET", f"/v1/generations/{job}/events", headers=cust.headers) as b:
                    if (a.status_code, b.status_code) == (200, 200):
                        break
                # A closed stream's place is given back once the server notices the disconnect.
                assert time.monotonic() < deadline, "closed streams kept their places"
                time.sleep(0.2)
    finally:
        server.stop()
