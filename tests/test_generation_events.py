"""GET /v1/generations/{id}/events: live server-sent events, through the real queue and worker."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import pytest

from app.generation import events as sse
from app.generation.events import StreamState, transitions
from app.queue.models import Job, JobStatus

TERMINAL = {"completed", "failed", "cancelled"}
# A job that runs for a few seconds even on a fast CPU, so a test can act while it runs.
SLOW = {"steps": 50, "size": "128x128"}


@dataclass
class Event:
    id: str | None = None
    event: str | None = None
    data: dict = field(default_factory=dict)


@dataclass
class Stream:
    events: list[Event] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)


def sse_events(response: httpx.Response, stream: Stream) -> Iterator[Event]:
    """Parses a text/event-stream as it arrives (comments go to ``stream.comments``)."""
    current = Event()
    lines: list[str] = []
    for line in response.iter_lines():
        if line == "":
            if lines:
                current.data = json.loads("\n".join(lines))
            if current.event is not None:
                stream.events.append(current)
                yield current
            current, lines = Event(), []
        elif line.startswith(":"):
            stream.comments.append(line[1:].strip())
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                lines.append(value)
            elif name in ("id", "event"):
                setattr(current, name, value)


def _queue(client: httpx.Client, headers: dict[str, str], **body: object) -> dict:
    payload = {"prompt": "a pony galloping", "size": "64x64", "steps": 12, **body}
    r = client.post("/v1/generations", json=payload, headers=headers)
    assert r.status_code in (200, 202), r.text
    return r.json()


def _read_all(client: httpx.Client, headers: dict[str, str], job_id: str) -> Stream:
    stream = Stream()
    with client.stream("GET", f"/v1/generations/{job_id}/events", headers=headers) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        for _ in sse_events(r, stream):
            pass
    return stream


def _assert_well_formed(stream: Stream) -> None:
    ids = [e.id for e in stream.events]
    assert ids == [str(i) for i in range(1, len(ids) + 1)], ids
    names = [e.event for e in stream.events]
    assert names[-1] in TERMINAL
    assert sum(n in TERMINAL for n in names) == 1


def test_stream_runs_queued_started_progress_to_completed(client, customer) -> None:
    job = _queue(client, customer.headers, steps=12)
    stream = _read_all(client, customer.headers, job["id"])
    _assert_well_formed(stream)
    names = [e.event for e in stream.events]
    assert names[-1] == "completed"
    # The order never goes backwards: queued… then started, then progress…, then the end.
    rank = {"queued": 0, "started": 1, "progress": 2, "completed": 3}
    assert [rank[n] for n in names] == sorted(rank[n] for n in names), names
    assert names.count("started") == 1
    progress = [e.data for e in stream.events if e.event == "progress"]
    assert progress, names
    steps = [p["step"] for p in progress]
    assert steps == sorted(set(steps)), steps
    assert progress[-1] == {"id": job["id"], "step": 12, "total": 12}
    assert all(p["total"] == 12 for p in progress)
    for queued in (e.data for e in stream.events if e.event == "queued"):
        assert queued["status"] == "queued"
        assert isinstance(queued["queue_position"], int)

    done = stream.events[-1].data
    polled = client.get(f"/v1/generations/{job['id']}", headers=customer.headers).json()
    assert done["status"] == "succeeded"
    assert done["progress"] == {"step": 12, "total": 12}
    assert [o["id"] for o in done["outputs"]] == [o["id"] for o in polled["outputs"]]
    assert done["usage"] == polled["usage"]
    assert done["id"] == polled["id"]


def test_stream_on_a_finished_job_sends_only_its_terminal_event(client, customer) -> None:
    r = client.post("/v1/generations", json={"prompt": "a pony", "size": "64x64", "steps": 2},
                    headers={**customer.headers, "Prefer": "wait=60"})
    assert r.status_code == 200, r.text
    started = time.monotonic()
    stream = _read_all(client, customer.headers, r.json()["id"])
    assert time.monotonic() - started < 5
    assert [(e.id, e.event) for e in stream.events] == [("1", "completed")]
    assert stream.events[0].data["id"] == r.json()["id"]
    assert stream.events[0].data["status"] == "succeeded"
    assert len(stream.events[0].data["outputs"]) == 1


def test_stream_of_another_accounts_job_is_404(client, customer, make_customer) -> None:
    job = _queue(client, customer.headers, steps=1)
    stranger = make_customer()
    r = client.get(f"/v1/generations/{job['id']}/events", headers=stranger.headers)
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["code"] == "not_found"
    assert client.get("/v1/generations/gen_doesnotexist/events", headers=customer.headers).status_code == 404
    assert client.get(f"/v1/generations/{job['id']}/events").status_code == 401


def test_cancel_mid_stream_ends_with_cancelled(client, customer) -> None:
    job = _queue(client, customer.headers, **SLOW)
    stream = Stream()
    cancelled = False
    with client.stream("GET", f"/v1/generations/{job['id']}/events", headers=customer.headers) as r:
        assert r.status_code == 200
        for event in sse_events(r, stream):
            if event.event in ("started", "progress") and not cancelled:
                c = client.post(f"/v1/generations/{job['id']}/cancel", headers=customer.headers)
                assert c.status_code == 200, c.text
                cancelled = True
    _assert_well_formed(stream)
    last = stream.events[-1]
    assert last.event == "cancelled", [e.event for e in stream.events]
    assert last.data["status"] == "cancelled"
    assert last.data["error"]["code"] == "cancelled"
    assert last.data["usage"]["images"] == 0
    assert "completed" not in [e.event for e in stream.events]


def test_queued_job_reports_position_and_keeps_the_connection_alive(client, customer, monkeypatch) -> None:
    # Shortened for the test; the server reads both on every loop.
    monkeypatch.setattr(sse, "KEEPALIVE_SECONDS", 0.2)
    monkeypatch.setattr(sse, "POLL_SECONDS", 0.1)
    first = _queue(client, customer.headers, **SLOW)
    # Once the first has been picked up, nothing but it is ahead of the next one.
    deadline = time.monotonic() + 60
    while client.get(f"/v1/generations/{first['id']}", headers=customer.headers).json()["status"] == "queued":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # Another size: it cannot share the first job's batch, so it waits behind it.
    second = _queue(client, customer.headers, steps=2, size="72x72")
    stream = Stream()
    with client.stream("GET", f"/v1/generations/{second['id']}/events", headers=customer.headers) as r:
        for _ in sse_events(r, stream):
            pass
    _assert_well_formed(stream)
    names = [e.event for e in stream.events]
    assert names[0] == "queued", names
    assert stream.events[0].data["queue_position"] == 0
    assert names[-1] == "completed"
    first = client.get(f"/v1/generations/{first['id']}", headers=customer.headers).json()
    assert first["status"] == "succeeded", first
    assert "keep-alive" in stream.comments


def test_disconnecting_stops_the_stream_but_not_the_job(client, customer, live) -> None:
    job = _queue(client, customer.headers, **SLOW)
    with client.stream("GET", f"/v1/generations/{job['id']}/events", headers=customer.headers) as r:
        first = next(sse_events(r, Stream()))
        assert first.event in ("queued", "started", "progress")
    # The stream's waiter leaves the server's event hub once the client has gone (a live
    # stream re-registers within a second), while the job runs on.
    hub = live.server.config.app.state.ctx.events
    deadline, absent_since = time.monotonic() + 10, None
    while time.monotonic() < deadline:
        if job["id"] in hub._subscriptions:
            absent_since = None
        elif absent_since is None:
            absent_since = time.monotonic()
        elif time.monotonic() - absent_since > 1.5:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the event stream kept waiting after its client disconnected")
    deadline = time.monotonic() + 60
    while (status := client.get(f"/v1/generations/{job['id']}", headers=customer.headers).json()["status"]) in (
        "queued", "running"
    ) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status == "succeeded"


# -- the transition rules, without a server -----------------------------------------------------


def _job(status: JobStatus, step: int = 0, steps: int = 10) -> Job:
    return Job(id="gen_1", status=status, progress_step=step, steps=steps,
               started_at=None if status == JobStatus.QUEUED else datetime(2025, 1, 1, tzinfo=UTC))


def test_transitions_emit_only_changes() -> None:
    state = StreamState()
    assert [n for n, _ in transitions(state, _job(JobStatus.QUEUED), 2, first=True)] == ["queued"]
    assert transitions(state, _job(JobStatus.QUEUED), 2, first=False) == []
    assert transitions(state, _job(JobStatus.QUEUED), 1, first=False)[0][1]["queue_position"] == 1
    running = transitions(state, _job(JobStatus.RUNNING, step=3), None, first=False)
    assert running == [("started", {"id": "gen_1", "status": "running", "started_at": "2025-01-01T00:00:00Z"}),
                       ("progress", {"id": "gen_1", "step": 3, "total": 10})]
    assert transitions(state, _job(JobStatus.RUNNING, step=3), None, first=False) == []
    # A finish the polling caught late still reads as a finished progress bar.
    assert transitions(state, _job(JobStatus.SUCCEEDED, step=10), None, first=False) == [
        ("progress", {"id": "gen_1", "step": 10, "total": 10})
    ]


def test_transitions_fill_in_a_run_that_happened_between_two_reads() -> None:
    state = StreamState()
    transitions(state, _job(JobStatus.QUEUED), 0, first=True)
    assert [n for n, _ in transitions(state, _job(JobStatus.SUCCEEDED, step=10), None, first=False)] == [
        "started", "progress"
    ]


def test_transitions_for_a_job_already_finished_or_failed_are_empty() -> None:
    assert transitions(StreamState(), _job(JobStatus.SUCCEEDED, step=10), None, first=True) == []
    state = StreamState()
    transitions(state, _job(JobStatus.RUNNING, step=4), None, first=True)
    assert transitions(state, _job(JobStatus.FAILED, step=4), None, first=False) == []
    assert transitions(state, _job(JobStatus.CANCELLED, step=4), None, first=False) == []


def test_a_requeued_job_starts_over() -> None:
    state = StreamState()
    transitions(state, _job(JobStatus.RUNNING, step=5), None, first=True)
    assert [n for n, _ in transitions(state, _job(JobStatus.QUEUED), 0, first=False)] == ["queued"]
    assert [n for n, _ in transitions(state, _job(JobStatus.RUNNING, step=1), None, first=False)] == [
        "started", "progress"
    ]
