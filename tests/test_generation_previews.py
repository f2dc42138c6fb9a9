"""Live previews (`preview_every`): through the real queue, worker and SSE stream, on Postgres and SQLite."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from harness import Customer, make_settings, new_customer, start_server
from PIL import Image
from test_generation_events import Stream, sse_events

from app.cli import _bootstrap
from app.generation.events import StreamState, transitions
from app.migrate import upgrade_head
from app.queue.models import Job, JobStatus

DATA_URL = "data:image/jpeg;base64,"
# Long enough at 128×128 that the worker's 250 ms progress writes catch several previews.
RUN = {"prompt": "a pony galloping", "size": "128x128", "steps": 30}


def _decode(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
    assert image.format == "JPEG"
    image.load()
    return image


def _queue(client: httpx.Client, headers: dict[str, str], **body: object) -> dict:
    r = client.post("/v1/generations", json={**RUN, **body}, headers=headers)
    assert r.status_code == 202, r.text
    return r.json()


def _stream(client: httpx.Client, headers: dict[str, str], job_id: str) -> Stream:
    stream = Stream()
    with client.stream("GET", f"/v1/generations/{job_id}/events", headers=headers) as r:
        assert r.status_code == 200, r.read()
        for event in sse_events(r, stream):
            if event.event == "progress" and "preview" in event.data:
                # While it runs, the polled job shows a preview too (a newer one, possibly).
                polled = client.get(f"/v1/generations/{job_id}", headers=headers).json()
                if polled["status"] == "running":
                    assert polled["progress"]["preview"].startswith(DATA_URL)
                    assert polled["progress"]["preview_step"] % 3 == 0
    return stream


def _previews(stream: Stream) -> list[tuple[int, int, Image.Image]]:
    """(event step, preview step, image) of each progress event that carries a preview."""
    out = []
    for event in stream.events:
        if event.event == "progress" and "preview" in event.data:
            url = event.data["preview"]
            assert url.startswith(DATA_URL), url[:40]
            out.append((event.data["step"], event.data["preview_step"], _decode(url.removeprefix(DATA_URL))))
    return out


def _assert_previews(stream: Stream, every: int, steps: int, size: tuple[int, int]) -> None:
    assert stream.events[-1].event == "completed", [e.event for e in stream.events]
    previews = _previews(stream)
    assert previews, [e.data for e in stream.events if e.event == "progress"]
    preview_steps = [p for _, p, _ in previews]
    # Each preview is sent once, newest last, and only at the requested steps.
    assert preview_steps == sorted(set(preview_steps)), preview_steps
    assert all(p % every == 0 and 0 < p <= steps for p in preview_steps), preview_steps
    assert all(image.size == size for _, _, image in previews)
    # The finished job no longer carries a preview: its images are there instead.
    assert "preview" not in stream.events[-1].data["progress"]


def test_jobs_in_one_batch_get_previews_only_if_they_asked(client: httpx.Client, customer: Customer) -> None:
    # Keeps the worker busy so the next two are claimed together, as one batch.
    blocker = _queue(client, customer.headers, size="64x64", steps=40)
    wanted = _queue(client, customer.headers, preview_every=3)
    plain = _queue(client, customer.headers)
    results: dict[str, Stream] = {}

    def follow(job_id: str) -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=120) as own:
            results[job_id] = _stream(own, customer.headers, job_id)

    threads = [threading.Thread(target=follow, args=(j["id"],)) for j in (wanted, plain)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    _assert_previews(results[wanted["id"]], every=3, steps=30, size=(16, 16))
    plain_progress = [e.data for e in results[plain["id"]].events if e.event == "progress"]
    assert plain_progress, "the job without previews still reports progress"
    assert all(set(p) == {"id", "step", "total"} for p in plain_progress), plain_progress
    # preview_every is not part of the batch key: both ran in one pipeline call.
    done = [client.get(f"/v1/generations/{j['id']}", headers=customer.headers).json() for j in (wanted, plain)]
    assert [d["status"] for d in done] == ["succeeded", "succeeded"]
    assert done[0]["started_at"] == done[1]["started_at"], done
    assert client.get(f"/v1/generations/{blocker['id']}", headers=customer.headers).json()["status"] == "succeeded"


@pytest.mark.parametrize(
    ("value", "code"),
    [(31, "invalid_preview_every"), (-1, "invalid_value"), (501, "invalid_value"), ("often", "invalid_value"),
     (2.5, "invalid_value")],
)
def test_bad_preview_every_is_refused_with_the_json_error(
    client: httpx.Client, customer: Customer, value: object, code: str
) -> None:
    r = client.post("/v1/generations", json={**RUN, "preview_every": value}, headers=customer.headers)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["code"], error["param"]) == (code, "preview_every")
    # The synchronous endpoint shares the body and its validation.
    r = client.post("/v1/images/generations", json={**RUN, "preview_every": value}, headers=customer.headers)
    assert r.status_code == 400 and r.json()["error"]["param"] == "preview_every"


def test_preview_every_zero_means_none(client: httpx.Client, customer: Customer) -> None:
    job = _queue(client, customer.headers, steps=6, size="64x64", preview_every=0)
    stream = _stream(client, customer.headers, job["id"])
    assert stream.events[-1].event == "completed"
    assert _previews(stream) == []


def test_openapi_documents_preview_every(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    field = schema["GenerationRequest"]["properties"]["preview_every"]
    assert "preview" in field["description"]
    [number] = [option for option in field["anyOf"] if option["type"] == "integer"]
    assert (number["minimum"], number["maximum"]) == (0, 500)
    assert "preview" in schema["Progress"]["properties"]


def test_a1111_progress_shows_the_running_txt2img_preview(client: httpx.Client, customer: Customer) -> None:
    result: dict[str, httpx.Response] = {}

    def txt2img() -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=120) as own:
            result["r"] = own.post("/sdapi/v1/txt2img", auth=("u", customer.key),
                                   json={"prompt": "a pony", "width": 128, "height": 128, "steps": 40,
                                         "override_settings": {"show_progress_every_n_steps": 2}})

    thread = threading.Thread(target=txt2img)
    thread.start()
    try:
        deadline, image, skipped = time.monotonic() + 120, None, None
        while time.monotonic() < deadline and image is None and thread.is_alive():
            seen = client.get("/sdapi/v1/progress", headers=customer.headers).json()
            if seen["current_image"] is not None:
                # A1111 sends raw base64, no data: prefix.
                assert not seen["current_image"].startswith("data:")
                image = _decode(seen["current_image"])
                skipped = client.get("/sdapi/v1/progress?skip_current_image=true", headers=customer.headers).json()
            time.sleep(0.05)
    finally:
        thread.join(timeout=180)
    assert image is not None, "no preview reached /sdapi/v1/progress"
    assert image.size == (16, 16)
    assert skipped is not None and skipped["current_image"] is None
    assert result["r"].status_code == 200, result["r"].text
    assert client.get("/sdapi/v1/progress", headers=customer.headers).json()["current_image"] is None


def test_a1111_preview_settings_are_validated(client: httpx.Client, customer: Customer) -> None:
    for key, value in (("show_progress_every_n_steps", "often"), ("show_progress_every_n_steps", -2),
                       ("live_previews_enable", "yes")):
        r = client.post("/sdapi/v1/txt2img", headers=customer.headers,
                        json={"prompt": "a pony", "steps": 2, "override_settings": {key: value}})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == f"override_settings.{key}"


# -- the same on the embedded SQLite default --------------------------------------------------------


@pytest.fixture
def sqlite_service(tmp_path: Path, demo_model_dir: Path) -> Iterator[tuple[httpx.Client, Customer]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'var' / 'ponyserve.db'}"
    upgrade_head(url)
    settings = make_settings(url, tmp_path / "var", demo_model_dir)
    admin = asyncio.run(_bootstrap(settings))
    assert admin is not None
    server = start_server(settings)
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            yield client, new_customer(client, admin)
    finally:
        server.stop()


def test_previews_stream_on_sqlite(sqlite_service: tuple[httpx.Client, Customer]) -> None:
    client, cust = sqlite_service
    job = _queue(client, cust.headers, preview_every=3, size="128x64")
    _assert_previews(_stream(client, cust.headers, job["id"]), every=3, steps=30, size=(16, 8))


# -- the stream's rules, without a server ------------------------------------------------------------


def _job(status: JobStatus, step: int = 0, preview_step: int | None = None) -> Job:
    return Job(id="gen_1", status=status, progress_step=step, steps=10,
               preview="AAAA" if preview_step is not None else None, preview_step=preview_step,
               started_at=None if status == JobStatus.QUEUED else datetime(2025, 1, 1, tzinfo=UTC))


def test_a_preview_is_sent_once_and_again_after_a_requeue() -> None:
    state = StreamState()
    first = transitions(state, _job(JobStatus.RUNNING, step=2, preview_step=2), None, first=True)
    assert first[1] == ("progress", {"id": "gen_1", "step": 2, "total": 10,
                                     "preview": "data:image/jpeg;base64,AAAA", "preview_step": 2})
    assert transitions(state, _job(JobStatus.RUNNING, step=3, preview_step=2), None, first=False) == [
        ("progress", {"id": "gen_1", "step": 3, "total": 10})
    ]
    # A preview written before its step shows up in an event that repeats the step.
    assert transitions(state, _job(JobStatus.RUNNING, step=3, preview_step=4), None, first=False) == [
        ("progress", {"id": "gen_1", "step": 3, "total": 10, "preview": "data:image/jpeg;base64,AAAA",
                      "preview_step": 4})
    ]
    assert transitions(state, _job(JobStatus.QUEUED), 0, first=False)[0][0] == "queued"
    again = transitions(state, _job(JobStatus.RUNNING, step=4, preview_step=4), None, first=False)
    assert [n for n, _ in again] == ["started", "progress"] and again[1][1]["preview_step"] == 4


def test_a_finished_job_has_no_preview_to_send() -> None:
    state = StreamState()
    transitions(state, _job(JobStatus.RUNNING, step=2), None, first=True)
    done = transitions(state, _job(JobStatus.SUCCEEDED, step=10, preview_step=10), None, first=False)
    assert done == [("progress", {"id": "gen_1", "step": 10, "total": 10})]
