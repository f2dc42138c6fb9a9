"""The queue worker: claim a batch, run it on the runtime, commit outcome and usage together.

One asyncio task drives the loop; the blocking pipeline call runs on one dedicated thread and
image encoding in a small pool, so the event loop (and, in embedded mode, the API
sharing it) stays responsive, and the accelerator never waits on PNG compression.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial
from typing import Any, cast

from PIL import Image

import app.models  # noqa: F401  (a worker alone must still know every table its rows point to)
from app.config import Settings
from app.db import Database
from app.generation.schemas import OutputFormat
from app.kit.clock import utcnow
from app.kit.ids import new_id
from app.metering import repository as ledger
from app.metering.service import ledger_rows
from app.moderation.service import OutputReviewer, Verdict, record_withheld
from app.observability.metrics import BATCH_IMAGES, IMAGES_GENERATED, JOBS_FINISHED, PIPELINE_SECONDS
from app.queue import repository as queue
from app.queue.models import Job, JobOutput, JobStatus, OutputStatus, Worker
from app.queue.notify import JobEvents, publish_job_changed
from app.quotas import service as quotas
from app.quotas.repository import purge_expired_idempotency
from app.runtime.encoding import encode_image
from app.runtime.preview import encode_preview
from app.runtime.registry import ModelRegistry
from app.runtime.types import (
    GenerationCancelled,
    GenerationParams,
    ImagePrompt,
    PreviewHook,
    RuntimeModelError,
    StepCallback,
)
from app.storage.local import LocalImageStore
from app.worker.batch import Slot, infotext, plan_call, storage_key
from app.worker.recovery import recover_jobs
from app.worker.state import WorkerState

log = logging.getLogger("ponyserve.worker")

# How often a running batch's progress is written and published: SSE clients see a step within
# this (plus a notification's few ms), well inside the promised second.
PROGRESS_INTERVAL_SECONDS = 0.4


class _BatchMonitor:
    """Shared between the pipeline thread (writes the step and previews) and the loop (reads them, flags cancels).

    ``previews`` maps an image's index in the pipeline call to its job and that job's
    ``preview_every``: one image per job that asked, its first.
    """

    def __init__(self, job_ids: Sequence[str], previews: Mapping[int, tuple[str, int]] | None = None) -> None:
        self.job_ids = list(job_ids)
        self.step = 0
        self.cancelled: set[str] = set()
        self._preview_every = dict(previews or {})
        # The newest preview of each job not yet written: (step, base64 JPEG).
        self._pending: dict[str, tuple[int, str]] = {}
        self._lock = threading.Lock()

    def on_step(self, step: int, _total: int) -> bool:
        with self._lock:
            self.step = step
            # Interrupt only when every job in the call is cancelled; otherwise the others'
            # images are still wanted and the cancelled job's are discarded at the end.
            return not set(self.job_ids) <= self.cancelled

    def cancel(self, ids: set[str]) -> None:
        with self._lock:
            self.cancelled |= ids

    def preview_hook(self) -> PreviewHook | None:
        """The runtime's hook when some job asked for previews; None keeps the others' steps free of it."""
        return PreviewHook(wanted=self._wanted, deliver=self._deliver) if self._preview_every else None

    def _wanted(self, step: int, _total: int) -> list[int]:
        with self._lock:
            cancelled = set(self.cancelled)
        return [index for index, (job_id, every) in self._preview_every.items()
                if step % every == 0 and job_id not in cancelled]

    def _deliver(self, step: int, previews: Mapping[int, Image.Image]) -> None:
        # Encoded here, in the pipeline thread: a JPEG of a few KB takes well under a millisecond,
        # and the event loop (which in embedded mode also serves the API) never handles pixels.
        encoded = {self._preview_every[index][0]: base64.b64encode(encode_preview(image)).decode("ascii")
                   for index, image in previews.items()}
        with self._lock:
            for job_id, data in encoded.items():
                self._pending[job_id] = (step, data)

    def take_progress(self) -> tuple[int, dict[str, tuple[int, str]]]:
        """The step now, and the previews made since the last call (only the newest per job)."""
        with self._lock:
            pending, self._pending = self._pending, {}
            return self.step, pending


class QueueWorker:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        registry: ModelRegistry,
        events: JobEvents,
        store: LocalImageStore,
        *,
        device: str = "cpu",
        max_batch_images: int = 4,
        worker_id: str | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.registry = registry
        self.events = events
        self.store = store
        self.device = device
        self.max_batch_images = max_batch_images
        self.id = worker_id or f"{socket.gethostname()}-{device}-{new_id('w')[2:10]}"
        self.state = WorkerState.STARTING
        self._stopping = asyncio.Event()
        self._encoder = ThreadPoolExecutor(max_workers=2, thread_name_prefix="encode")
        # Every pipeline call runs on this one thread: torch's OpenMP pool belongs to the thread that
        # calls into it, so a rotating set of threads (asyncio.to_thread) would build several pools
        # that compete for the same cores.
        self._pipeline = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline")
        self._started_at = utcnow()
        # Loaded at start-up: a configured classifier that cannot load stops the worker here,
        # rather than letting it deliver unreviewed images.
        self.reviewer = OutputReviewer.from_settings(db, settings, device=device)

    # -- lifecycle -----------------------------------------------------------------

    def stop(self) -> None:
        """Drain: finish the running batch, claim nothing new."""
        if self.state != WorkerState.STOPPED:
            self.state = WorkerState.DRAINING
        self._stopping.set()
        self.events.work_available()

    async def run(self) -> None:
        await self._heartbeat()
        beat = asyncio.create_task(self._heartbeat_loop(), name=f"heartbeat-{self.id}")
        try:
            await self._preload()
            self.state = WorkerState.READY
            await self._heartbeat()
            last_sweep, backoff = 0.0, 0.5
            # The previous batch's delivery (encoding, review, storage, the completion transaction)
            # runs while the next batch generates, so the accelerator does not wait for it; at most
            # one delivery is outstanding.
            delivering: asyncio.Task[None] | None = None
            while not self._stopping.is_set():
                try:
                    if time.monotonic() - last_sweep > 5.0:
                        await self._sweep()
                        last_sweep = time.monotonic()
                    jobs = await self._claim()
                    if not jobs and delivering is not None:
                        # Nothing to overlap it with: finish the delivery now, then look again.
                        finishing, delivering = delivering, None
                        await finishing
                        continue
                    if not jobs:
                        self.state = WorkerState.READY
                        await self.events.wait_work(timeout=1.0)
                        continue
                    self.state = WorkerState.BUSY
                    delivery = await self._run_batch(jobs)
                    previous, delivering = delivering, (
                        asyncio.create_task(delivery, name=f"deliver-{jobs[0].id}") if delivery is not None else None
                    )
                    if previous is not None:
                        await previous
                    self.state = WorkerState.DRAINING if self._stopping.is_set() else WorkerState.READY
                    backoff = 0.5
                except Exception:
                    # The database went away mid-iteration, most likely. Jobs this worker holds keep
                    # their leases and are retried by the sweeper if it does not come back in time.
                    self.state = WorkerState.FAILED
                    log.exception("worker loop failed; retrying in %.1fs", backoff)
                    with contextlib.suppress(Exception):
                        await self._heartbeat()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 30.0)
            if delivering is not None:
                try:
                    await delivering
                except Exception:
                    # Its jobs keep their leases and are retried by another worker's sweeper.
                    log.exception("delivering the last batch failed")
        finally:
            self.state = WorkerState.STOPPED
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            with contextlib.suppress(Exception):
                await self._heartbeat()
            self._encoder.shutdown(wait=True)
            self._pipeline.shutdown(wait=True)

    async def _preload(self) -> None:
        """Loads the models marked to load at start (compiled ones by default) while reporting
        ``starting``, on the pipeline thread so torch's state is that thread's from the start.

        A model that cannot load is logged and left to fail its own jobs (model_unavailable);
        the worker still serves the others.
        """
        loop = asyncio.get_running_loop()
        for name in self.registry.names():
            if not self.registry.spec(name).loads_at_start or self._stopping.is_set():
                continue
            try:
                await loop.run_in_executor(self._pipeline, self.registry.preload, [name])
            except RuntimeModelError as exc:
                log.error("model %s could not be preloaded: %s", name, exc)

    async def _heartbeat(self) -> None:
        now = utcnow()
        async with self.db.unit_of_work() as session:
            await queue.upsert_worker(session, Worker(
                id=self.id, host=socket.gethostname(), device=self.device, state=self.state.value,
                models=self.registry.loaded_names(), started_at=self._started_at, heartbeat_at=now,
            ))
            await queue.renew_leases(session, self.id, now + timedelta(seconds=self.settings.job_lease_seconds))

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            try:
                await self._heartbeat()
            except Exception:
                log.exception("heartbeat failed")

    async def _sweep(self) -> None:
        now = utcnow()
        retried, failed = await recover_jobs(self.db, now=now)
        async with self.db.unit_of_work() as session:
            await purge_expired_idempotency(session, now)
        for job_id in (*retried, *failed):
            self.events.job_changed(job_id)

    async def _claim(self) -> list[Job]:
        jobs = await self._claim_with(partial(
            queue.claim_batch, worker_id=self.id, models=self.registry.names(), max_images=self.max_batch_images,
            loaded=self.registry.loaded_names(), affinity=timedelta(seconds=self.settings.model_affinity_seconds),
        ))
        if jobs and self.settings.batch_window_ms > 0:
            jobs += await self._await_companions(jobs[0].batch_key, sum(j.n for j in jobs))
        return jobs

    async def _await_companions(self, batch_key: str, images: int) -> list[Job]:
        """Holds a batch that has room for up to ``batch_window_ms``, claiming jobs with its batch
        key as they are queued; returns as soon as the batch is full."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.batch_window_ms / 1000
        extra: list[Job] = []
        while images < self.max_batch_images and (remaining := deadline - loop.time()) > 0:
            await self.events.wait_work(timeout=remaining)
            more = await self._claim_with(partial(
                queue.claim_companions, worker_id=self.id, batch_key=batch_key,
                max_images=self.max_batch_images - images,
            ))
            extra += more
            images += sum(j.n for j in more)
        return extra

    async def _claim_with(
        self, claim: Callable[..., Awaitable[list[Job]]]
    ) -> list[Job]:
        """Runs one claim query (``claim(session, now=, lease_until=)``) and announces the claimed jobs."""
        now = utcnow()
        async with self.db.unit_of_work() as session:
            jobs = await claim(session, now=now, lease_until=now + timedelta(seconds=self.settings.job_lease_seconds))
            for job in jobs:
                await publish_job_changed(session, job.id)
        for job in jobs:
            self.events.job_changed(job.id)
        return jobs

    # -- one batch -------------------------------------------------------------------

    async def _run_batch(self, jobs: list[Job]) -> Coroutine[Any, Any, None] | None:
        """Generates one batch; returns its delivery, to be awaited, or None when nothing is left to deliver."""
        params, prompts, slots = plan_call(jobs)
        monitor = _BatchMonitor([j.id for j in jobs], previews={
            index: (slot.job.id, slot.job.preview_every)
            for index, slot in enumerate(slots) if slot.index == 0 and slot.job.preview_every
        })
        watcher = asyncio.create_task(self._watch(monitor))
        started = time.perf_counter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self._pipeline, self._generate, jobs[0].model, params, prompts, monitor.on_step, monitor.preview_hook()
            )
        except GenerationCancelled:
            await self._finish_unsuccessful(jobs, JobStatus.CANCELLED, "cancelled", "Cancelled by the caller.")
            return None
        except RuntimeModelError as exc:
            log.error("model %s failed to load: %s", jobs[0].model, exc)
            await self._finish_unsuccessful(jobs, JobStatus.FAILED, "model_unavailable", str(exc))
            return None
        except Exception as exc:
            log.exception("pipeline failed for batch %s", [j.id for j in jobs])
            await self._finish_unsuccessful(
                jobs, JobStatus.FAILED, "pipeline_error", f"The model failed on this request ({type(exc).__name__})."
            )
            return None
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        elapsed = time.perf_counter() - started
        PIPELINE_SECONDS.labels(jobs[0].model).observe(elapsed)
        BATCH_IMAGES.observe(len(slots))
        # Images that did not fit in device memory even alone fail their whole job (uncharged);
        # the rest of the batch is delivered.
        too_big = {slot.job.id for slot, r in zip(slots, results, strict=True) if isinstance(r, Exception)}
        if too_big:
            log.error("out of device memory for jobs %s", sorted(too_big))
            await self._finish_unsuccessful([j for j in jobs if j.id in too_big], JobStatus.FAILED, "out_of_memory",
                                            "The accelerator ran out of memory for this request; it was not charged.")
            jobs = [j for j in jobs if j.id not in too_big]
            kept = [(s, r) for s, r in zip(slots, results, strict=True) if s.job.id not in too_big]
            slots, results = [s for s, _ in kept], [r for _, r in kept]
            if not jobs:
                return None
        images = [r for r in results if isinstance(r, Image.Image)]
        return self._deliver(jobs, slots, images, elapsed, set(monitor.cancelled))

    async def _deliver(self, jobs: list[Job], slots: list[Slot], images: list[Image.Image], elapsed: float,
                       cancelled: set[str]) -> None:
        encoded, verdicts = await asyncio.gather(self._encode(slots, images),
                                                 self.reviewer.assess([s.job for s in slots], images))
        await self._commit(jobs, slots, encoded, elapsed, cancelled, verdicts)

    def _generate(self, model_name: str, params: GenerationParams, prompts: list[ImagePrompt],
                  on_step: StepCallback, on_preview: PreviewHook | None = None) -> list[Image.Image | Exception]:
        """Runs on the pipeline thread; the model is pinned so the memory budget cannot evict it mid-call."""
        with self.registry.use(model_name) as model:
            return model.generate_split(params, prompts, on_step, on_preview=on_preview)

    async def _watch(self, monitor: _BatchMonitor) -> None:
        """While the pipeline runs: publish progress (new previews in the same UPDATE) and pick up cancel requests.

        One statement per tick: the progress UPDATE returns the cancel flags, and a tick without
        progress only reads them. A cancel request wakes the watcher at once (its notification
        reaches this process's hub), so a running job stops at its next step.
        """
        last_step = -1
        with self.events.subscribe(*monitor.job_ids, progress=False) as subscription:
            while True:
                await subscription.wait(PROGRESS_INTERVAL_SECONDS)
                step, previews = monitor.take_progress()
                changed = step != last_step or bool(previews)
                async with self.db.unit_of_work() as session:
                    if changed:
                        monitor.cancel(await queue.set_progress(session, monitor.job_ids, step, previews))
                        for job_id in monitor.job_ids:
                            await publish_job_changed(session, job_id, progress=True)
                    else:
                        monitor.cancel(await queue.cancel_flags(session, monitor.job_ids))
                if changed:
                    last_step = step
                    for job_id in monitor.job_ids:
                        self.events.job_changed(job_id, progress=True)

    async def _encode(self, slots: list[Slot], images: Sequence[Image.Image]) -> list[bytes]:
        loop = asyncio.get_running_loop()
        futures = [
            loop.run_in_executor(self._encoder, encode_image, img, cast(OutputFormat, slot.job.output_format),
                                 infotext(slot))
            for slot, img in zip(slots, images, strict=True)
        ]
        return list(await asyncio.gather(*futures))

    async def _commit(
        self, jobs: list[Job], slots: list[Slot], encoded: list[bytes], elapsed: float, cancelled: set[str],
        verdicts: Sequence[Verdict | None],
    ) -> None:
        now = utcnow()
        total_images = len(slots)
        outputs_by_job: dict[str, list[JobOutput]] = {j.id: [] for j in jobs}
        withheld: dict[str, Verdict] = {}
        for slot, data, verdict in zip(slots, encoded, verdicts, strict=True):
            if slot.job.id in cancelled:
                continue
            image_id = new_id("img")
            key = storage_key(slot.job, slot.index, image_id)
            await asyncio.to_thread(self.store.put, key, data)
            held = verdict is not None and verdict.withhold
            if held:
                assert verdict is not None
                withheld[image_id] = verdict
            outputs_by_job[slot.job.id].append(JobOutput(
                id=image_id, job_id=slot.job.id, index=slot.index, seed=slot.seed, format=slot.job.output_format,
                width=slot.job.width, height=slot.job.height, storage_key=key, size_bytes=len(data),
                sha256=hashlib.sha256(data).hexdigest(), created_at=now,
                status=OutputStatus.WITHHELD if held else OutputStatus.DELIVERED,
                charged=verdict is None or verdict.charge,
            ))
        finished: list[tuple[Job, str]] = []
        async with self.db.unit_of_work() as session:
            for job in jobs:
                if job.id in cancelled:
                    if await queue.mark_failed(session, job_id=job.id, worker_id=self.id, now=now, code="cancelled",
                                               message="Cancelled by the caller.", status=JobStatus.CANCELLED):
                        await quotas.settle_job(session, job.id, 0, now)
                        finished.append((job, JobStatus.CANCELLED))
                    continue
                outputs = outputs_by_job[job.id]
                gpu_seconds = elapsed * len(outputs) / total_images
                # The conditional update is the guard against double charging: if our lease
                # lapsed and the job moved on, nothing below is written.
                if not await queue.mark_succeeded(session, job_id=job.id, worker_id=self.id, now=now,
                                                  gpu_seconds=round(gpu_seconds, 6)):
                    log.warning("job %s no longer ours; discarding its images", job.id)
                    for out in outputs:
                        await asyncio.to_thread(self.store.delete, out.storage_key)
                    continue
                session.add_all(outputs)
                await session.flush()
                # Withheld images of safe accounts are generated but not delivered: not charged.
                charged = [o for o in outputs if o.charged]
                charged_seconds = gpu_seconds * len(charged) / len(outputs) if outputs else 0.0
                await ledger.append(session, ledger_rows(job, charged, gpu_seconds=charged_seconds, now=now))
                await quotas.settle_job(session, job.id, len(charged), now)
                held_back = [o for o in outputs if o.id in withheld]
                await record_withheld(session, job, held_back, [withheld[o.id] for o in held_back])
                await publish_job_changed(session, job.id)
                finished.append((job, JobStatus.SUCCEEDED))
            for job, status in finished:
                if status != JobStatus.SUCCEEDED:
                    await publish_job_changed(session, job.id)
        for job, status in finished:
            JOBS_FINISHED.labels(status, job.model).inc()
            if status == JobStatus.SUCCEEDED:
                IMAGES_GENERATED.labels(job.model).inc(job.n)
            self.events.job_changed(job.id)
            log.info("job finished", extra={"job_id": job.id, "status": str(status), "model": job.model,
                                            "images": job.n, "seconds": round(elapsed, 3)})

    async def _finish_unsuccessful(self, jobs: Sequence[Job], status: JobStatus, code: str, message: str) -> None:
        now = utcnow()
        done = []
        async with self.db.unit_of_work() as session:
            for job in jobs:
                if await queue.mark_failed(session, job_id=job.id, worker_id=self.id, now=now, code=code,
                                           message=message, status=status):
                    await quotas.settle_job(session, job.id, 0, now)
                    await publish_job_changed(session, job.id)
                    done.append(job)
        for job in done:
            JOBS_FINISHED.labels(status.value, job.model).inc()
            self.events.job_changed(job.id)
