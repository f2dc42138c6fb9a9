"""Server-sent events for one generation: ``GET /v1/generations/{id}/events``.

A stream holds no database connection while it waits. It sleeps on the
process's ``JobEvents`` hub (fed by the embedded worker and by one shared
Postgres ``LISTEN`` connection per process for workers elsewhere), re-reads
the job row in a short transaction after every wake-up, and emits an event
only when something a client can see has changed. Without a wake-up a queued
job is re-read every ``POLL_SECONDS`` (its position changes as other jobs are
claimed, which does not wake it) and a running one every ``RECHECK_SECONDS``
(its own progress wakes it), so a lost notification costs bounded latency.
Open streams are capped per key and per process (``stream_limits``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from app.accounts.auth import GenerateCaller
from app.context import AppContext, ContextDep, base_url
from app.errors import COMMON_ERROR_RESPONSES, ErrorResponse
from app.generation import presentation, service
from app.generation.stream_limits import StreamLimits, StreamTicket
from app.queue import repository as queue
from app.queue.models import Job, JobStatus

router = APIRouter(tags=["generation"], responses=COMMON_ERROR_RESPONSES)

# Longest wait between two reads of a queued job's row when no notification arrives.
POLL_SECONDS = 1.0
# The same for a job a worker has: its changes notify the stream, so this only covers a lost one.
RECHECK_SECONDS = 5.0
# A comment line after this much silence keeps proxies and load balancers from closing the stream.
KEEPALIVE_SECONDS = 15.0

TERMINAL_EVENTS = {
    JobStatus.SUCCEEDED: "completed",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "cancelled",
}

_EXAMPLE = (
    'id: 1\nevent: queued\ndata: {"id": "gen_…", "status": "queued", "queue_position": 0}\n\n'
    'id: 2\nevent: started\ndata: {"id": "gen_…", "status": "running", "started_at": "2025-01-01T12:00:00Z"}\n\n'
    'id: 3\nevent: progress\ndata: {"id": "gen_…", "step": 5, "total": 20}\n\n'
    'id: 4\nevent: progress\ndata: {"id": "gen_…", "step": 10, "total": 20, '
    '"preview": "data:image/jpeg;base64,/9j/4AAQ…", "preview_step": 10}\n\n'
    ": keep-alive\n\n"
    'id: 5\nevent: completed\ndata: {"id": "gen_…", "object": "generation", "status": "succeeded", …}\n\n'
)


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"


@dataclass
class StreamState:
    """What this stream has already told its client."""

    status: str | None = None
    queue_position: int | None = None
    step: int = 0
    started: bool = False
    # The step of the last preview sent; a preview goes out once, not with every progress event.
    preview_step: int | None = None


def transitions(
    state: StreamState, job: Job, queue_position: int | None, *, first: bool
) -> list[tuple[str, dict[str, Any]]]:
    """The non-terminal events that bring a client from ``state`` to ``job``; updates ``state``.

    A stream that saw the job live and then finds it succeeded fills in what
    the bounded polling may have skipped (``started``, the last ``progress``),
    so its events always read queued → started → progress… → completed. A
    stream opened on a finished job gets only the terminal event.
    """
    events: list[tuple[str, dict[str, Any]]] = []
    status = JobStatus(JobStatus(job.status).public)
    if status == JobStatus.QUEUED:
        if state.status != JobStatus.QUEUED or queue_position != state.queue_position:
            events.append(("queued", {"id": job.id, "status": "queued", "queue_position": queue_position}))
        # A job requeued after its worker vanished starts over.
        state.started, state.step, state.preview_step = False, 0, None
    elif status == JobStatus.RUNNING:
        if not state.started:
            events.append(("started", _started(job)))
            state.started = True
        preview = presentation.preview_data_url(job)
        new_preview = preview is not None and job.preview_step != state.preview_step
        if job.progress_step > state.step or new_preview:
            progress: dict[str, Any] = {"id": job.id, "step": max(job.progress_step, state.step), "total": job.steps}
            if new_preview:
                progress.update(preview=preview, preview_step=job.preview_step)
                state.preview_step = job.preview_step
            events.append(("progress", progress))
            state.step = max(job.progress_step, state.step)
    elif status == JobStatus.SUCCEEDED and not first:
        if not state.started:
            events.append(("started", _started(job)))
            state.started = True
        if state.step < job.steps:
            events.append(("progress", {"id": job.id, "step": job.steps, "total": job.steps}))
            state.step = job.steps
    state.status = status
    state.queue_position = queue_position
    return events


def _started(job: Job) -> dict[str, Any]:
    started_at = job.started_at.isoformat().replace("+00:00", "Z") if job.started_at else None
    return {"id": job.id, "status": "running", "started_at": started_at}


def frame(event_id: int, event: str, data: Any) -> bytes:
    # json.dumps never emits a raw newline, so one data: line always holds the whole payload.
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"id: {event_id}\nevent: {event}\ndata: {payload}\n\n".encode()


async def job_events(
    ctx: AppContext, job_id: str, public_base_url: str, disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[bytes]:
    """The byte stream of one job's events; ends after the terminal event or when the client leaves."""
    loop = asyncio.get_running_loop()
    state = StreamState()
    next_id = 1
    first = True
    last_sent = loop.time()
    # Subscribed before the first read, so a change committed between a read and the wait still wakes us.
    with ctx.events.subscribe(job_id) as subscription:
        while True:
            terminal_body: dict[str, Any] | None = None
            async with ctx.db.unit_of_work() as session:
                job = await queue.get_job(session, job_id)
                if job is None:
                    return
                position = await queue.queue_position(session, job) if job.status == JobStatus.QUEUED else None
                events = transitions(state, job, position, first=first)
                if JobStatus(job.status).is_terminal:
                    view = await ctx.presenter.job(session, job, public_base_url)
                    terminal_body = view.model_dump(mode="json")
            first = False
            for name, data in events:
                yield frame(next_id, name, data)
                next_id += 1
            if terminal_body is not None:
                yield frame(next_id, TERMINAL_EVENTS[JobStatus(terminal_body["status"])], terminal_body)
                return
            now = loop.time()
            if events:
                last_sent = now
            elif now - last_sent >= KEEPALIVE_SECONDS:
                yield b": keep-alive\n\n"
                last_sent = now
            # Starlette also cancels this generator when the client goes away; checking here covers
            # servers that only report a disconnect on the next write.
            if await disconnected():
                return
            await subscription.wait(POLL_SECONDS if state.status == JobStatus.QUEUED else RECHECK_SECONDS)


@router.get(
    "/v1/generations/{job_id}/events",
    response_class=EventStreamResponse,
    responses={
        200: {"description": "A `text/event-stream` of the job's events, ending after the terminal one.",
              "content": {"text/event-stream": {"schema": {"type": "string"}, "example": _EXAMPLE}}},
        404: {"model": ErrorResponse, "description": "No such generation for this account"},
        429: {"model": ErrorResponse, "description": "Too many open event streams for this key or this server "
                                                     "(`too_many_streams`, with `Retry-After`)"},
    },
)
async def generation_events(job_id: str, caller: GenerateCaller, ctx: ContextDep,
                            request: Request) -> EventStreamResponse:
    """Follow a generation live as [server-sent events](https://html.spec.whatwg.org/multipage/server-sent-events.html).

    Events, each with an `id:` (counting up from 1 within this stream), an
    `event:` name and one line of JSON `data:`:

    - `queued` — `{"id", "status", "queue_position"}`; sent again when the position changes.
    - `started` — `{"id", "status": "running", "started_at"}` when a worker picks the job up.
    - `progress` — `{"id", "step", "total"}` as denoising advances (a few times a second at most).
      For a generation created with `preview_every`, a progress event also carries
      `preview`, a `data:image/jpeg;base64,…` URL of a low-resolution preview of
      its first image (an eighth of the image's width and height, at most 256 px,
      drawn straight from the latents, so grainy early on), and `preview_step`,
      the step it shows. Each preview is sent once: later events without
      `preview` mean the last one is still the newest. A preview can arrive in an
      event whose `step` repeats the previous one.
    - exactly one terminal event, after which the server closes the stream:
      `completed`, `failed` or `cancelled`, whose data is the job exactly as
      `GET /v1/generations/{id}` returns it (outputs with signed URLs, usage,
      and `error` with `code` and `message` when it failed or was cancelled).

    A stream opened on a job that has already finished sends its terminal event
    at once. After 15 s without an event the server sends a `: keep-alive`
    comment line, which EventSource clients ignore. Disconnecting only stops the
    stream; the job keeps running (cancel it with `POST /v1/generations/{id}/cancel`).
    A reconnecting client gets a fresh stream that starts from the job's current
    state, so close your EventSource once a terminal event has arrived.

    A key may hold a limited number of open streams at once (10 by default, per
    API server); one more is refused 429 `too_many_streams` with `Retry-After`.
    """
    async with ctx.db.unit_of_work() as session:
        await service.get_owned_job(session, caller, job_id)
    ticket = _stream_limits(request, ctx).acquire(caller.key.id)
    stream = _released_after(job_events(ctx, job_id, base_url(request), request.is_disconnected), ticket)
    ticket.bind(stream)
    return EventStreamResponse(stream, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _stream_limits(request: Request, ctx: AppContext) -> StreamLimits:
    """This process's stream caps, made on first use from the settings."""
    limits: StreamLimits | None = getattr(request.app.state, "stream_limits", None)
    if limits is None:
        limits = StreamLimits(per_key=ctx.settings.max_streams_per_key,
                              per_process=ctx.settings.max_streams_per_process)
        request.app.state.stream_limits = limits
    return limits


async def _released_after(stream: AsyncIterator[bytes], ticket: StreamTicket) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream:
            yield chunk
    finally:
        ticket.release()
