"""The queue worker: claim a batch, run it on the runtime, deliver it, and settle each job.

One asyncio task drives the loop; the blocking pipeline call runs on one dedicated thread and
image encoding in a small pool, so the event loop (and, in embedded mode, the API
sharing it) stays responsive, and the accelerator never waits on PNG compression.

Each batch goes claimed → generating → delivering → settled (``app.worker.batch``), and the
worker renews the leases of the jobs of unfinished batches only. When a batch's database work
fails (the database went away), the batch is abandoned: its jobs stop being renewed and are
given back — retried once, then failed, never charged — in fresh transactions as soon as the
database answers again (or, if this worker dies first, by any worker's lease sweeper). Every
job ends through ``app.settlement``, one job per transaction.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import math
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial
from typing import Any, cast

from PIL import Image
from sqlalchemy.exc import SQLAlchemyError

import app.models  # noqa: F401  (a worker alone must still know every table its rows point to)
from app.config import Settings
from app.db import Database
from app.generation.catalog import LoraCatalog
from app.generation.schemas import OutputFormat
from app.kit.clock import utcnow
from app.kit.ids import new_id
from app.moderation.service import OutputReviewer, Verdict, record_withheld
from app.observability.metrics import BATCH_IMAGES, IMAGES_GENERATED, JOBS_FINISHED, PIPELINE_SECONDS, QUEUE_WAIT
from app.queue import lifecycle
from app.queue import repository as queue
from app.queue.models import Job, JobOutput, JobStatus, OutputStatus, Worker
from app.queue.notify import JobEvents, publish_job_changed
from app.quotas.repository import purge_expired_idempotency
from app.retention.purge import purge_expired
from app.runtime.encoding import encode_image
from app.runtime.preview import encode_preview
from app.runtime.provenance import C2paSigner, ImageMetadata, SigningFailed
from app.runtime.registry import ModelRegistry
from app.runtime.types import (
    GenerationCancelled,
    GenerationParams,
    ImagePrompt,
    PreviewHook,
    RuntimeModelError,
    StepCallback,
)
from app.settlement import service as settlement
from app.storage.base import ImageStore
from app.webhooks.outbox import EventType, record_job_event
from app.worker import image_inputs
from app.worker.batch import Batch, BatchState, Slot, image_metadata, plan_call, storage_key
from app.worker.recovery import recover_jobs
from app.worker.state import WorkerState

log = logging.getLogger("ponyserve.worker")

# How often a running batch's progress is written and published: SSE clients see a step within
# this (plus a notification's few ms), well inside the promised second.
PROGRESS_INTERVAL_SECONDS = 0.4
# How often this worker looks for jobs whose lease expired (any worker's).
SWEEP_INTERVAL_SECONDS = 5.0
# Backoff after a failed loop iteration (the database is away, most likely): short and capped,
# so the worker is back within seconds of the database's return.
MIN_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS = 0.25, 2.0


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
        store: ImageStore,
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
        # Batches claimed and not yet done: their jobs are the only ones whose leases are renewed.
        self._batches: list[Batch] = []
        # Jobs of abandoned batches, given back (retried or failed) once the database answers.
        self._abandoned: set[str] = set()
        # The LoRAs this worker can apply: re-read when a job names one it does not know.
        self.loras = LoraCatalog(settings.lora_specs)
        # When this worker last ran the retention purge (monotonic); it runs at its own, slower pace.
        self._purged_at = -math.inf
        # Loaded at start-up: a configured classifier that cannot load stops the worker here,
        # rather than letting it deliver unreviewed images.
        self.reviewer = OutputReviewer.from_settings(db, settings, device=device)
        # Likewise C2PA: a configured certificate or key that cannot sign (unreadable, wrong profile, not a
        # pair) stops the worker here (SigningUnavailable), rather than letting it ship unsigned images.
        self.c2pa: C2paSigner | None = None
        if settings.c2pa_cert_file is not None and settings.c2pa_key_file is not None:
            self.c2pa = C2paSigner.from_files(settings.c2pa_cert_file, settings.c2pa_key_file, settings.c2pa_tsa_url)

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
            last_sweep, backoff = 0.0, MIN_BACKOFF_SECONDS
            # The previous batch's delivery (encoding, review, storage, settlement) runs while the
            # next batch generates, so the accelerator does not wait for it; at most one delivery
            # is outstanding. A delivery never raises: it settles or abandons its batch.
            delivering: asyncio.Task[None] | None = None
            while not self._stopping.is_set():
                try:
                    await self._give_back_abandoned()
                    if time.monotonic() - last_sweep > SWEEP_INTERVAL_SECONDS:
                        await self._sweep()
                        last_sweep = time.monotonic()
                    batch = await self._claim()
                    if batch is None and delivering is not None:
                        # Nothing to overlap it with: finish the delivery now, then look again.
                        finishing, delivering = delivering, None
                        await finishing
                        continue
                    if batch is None:
                        self.state = WorkerState.READY
                        await self.events.wait_work(timeout=1.0)
                        continue
                    self.state = WorkerState.BUSY
                    delivery = await self._run_batch(batch)
                    previous, delivering = delivering, (
                        asyncio.create_task(delivery, name=f"deliver-{batch.job_ids[0]}")
                        if delivery is not None else None
                    )
                    if previous is not None:
                        await previous
                    self.state = WorkerState.DRAINING if self._stopping.is_set() else WorkerState.READY
                    backoff = MIN_BACKOFF_SECONDS
                except Exception as exc:
                    self.state = WorkerState.FAILED
                    if isinstance(exc, SQLAlchemyError):
                        log.warning("database unavailable (%s); retrying in %.2fs", _brief(exc), backoff)
                    else:
                        log.exception("worker loop failed; retrying in %.2fs", backoff)
                    with contextlib.suppress(Exception):
                        await self._heartbeat()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            if delivering is not None:
                await delivering
            with contextlib.suppress(Exception):
                # Whatever is still abandoned is left to the lease sweeper of another worker.
                await self._give_back_abandoned()
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
        # Two transactions: renewing leases updates job rows, which a settlement or a cancel may hold
        # locked for a moment, and waiting behind them must not make this worker look dead to /readyz.
        async with self.db.unit_of_work() as session:
            await queue.upsert_worker(session, Worker(
                id=self.id, host=socket.gethostname(), device=self.device, state=self.state.value,
                models=self.registry.loaded_names(), started_at=self._started_at, heartbeat_at=now,
            ))
        working = self._working_ids()
        if working:
            async with self.db.unit_of_work() as session:
                await lifecycle.renew_leases(session, self.id, working,
                                             now + timedelta(seconds=self.settings.job_lease_seconds))

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            try:
                await self._heartbeat()
            except SQLAlchemyError as exc:
                log.warning("heartbeat failed: %s", _brief(exc))
            except Exception:
                log.exception("heartbeat failed")

    async def _sweep(self) -> None:
        now = utcnow()
        retried, failed = await recover_jobs(self.db, now=now)
        async with self.db.unit_of_work() as session:
            await purge_expired_idempotency(session, now)
        for job_id in (*retried, *failed):
            self.events.job_changed(job_id)
        if time.monotonic() - self._purged_at >= self.settings.retention_purge_interval_seconds:
            for job_id in await purge_expired(self.db, self.store, now):
                self.events.job_changed(job_id)
            self._purged_at = time.monotonic()

    # -- batches and their leases ------------------------------------------------------

    def _working_ids(self) -> list[str]:
        return [job_id for batch in self._batches if not batch.state.done for job_id in batch.job_ids]

    def _done(self, batch: Batch, state: BatchState) -> None:
        batch.advance(state)
        if batch in self._batches:
            self._batches.remove(batch)

    def _abandon(self, batch: Batch, exc: BaseException) -> None:
        """The batch's database work failed: its jobs are no longer renewed and will be given back."""
        log.warning("database work for jobs %s failed (%s); giving them back", batch.job_ids, _brief(exc))
        self._abandoned.update(batch.job_ids)
        self._done(batch, BatchState.ABANDONED)

    async def _give_back_abandoned(self) -> None:
        """Retries (or fails, retries used up) the jobs of abandoned batches still held by this worker."""
        if not self._abandoned:
            return
        ids = sorted(self._abandoned)
        retried, failed = await recover_jobs(self.db, now=utcnow(), worker_id=self.id, job_ids=ids)
        self._abandoned.difference_update(ids)
        for job_id in (*retried, *failed):
            self.events.job_changed(job_id)

    async def _claim(self) -> Batch | None:
        jobs = await self._claim_with(partial(
            queue.claim_batch, worker_id=self.id, models=self.registry.names(), max_images=self.max_batch_images,
            loaded=self.registry.loaded_names(), affinity=timedelta(seconds=self.settings.model_affinity_seconds),
        ))
        if not jobs:
            return None
        batch = Batch(jobs)
        self._batches.append(batch)
        if self.settings.batch_window_ms > 0:
            try:
                await self._await_companions(batch)
            except Exception as exc:
                self._abandon(batch, exc)
                raise
        return batch

    async def _await_companions(self, batch: Batch) -> None:
        """Holds a batch that has room for up to ``batch_window_ms``, claiming jobs with its batch
        key as they are queued; returns as soon as the batch is full."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.batch_window_ms / 1000
        images = sum(j.n for j in batch.jobs)
        while images < self.max_batch_images and (remaining := deadline - loop.time()) > 0:
            await self.events.wait_work(timeout=remaining)
            more = await self._claim_with(partial(
                queue.claim_companions, worker_id=self.id, batch_key=batch.jobs[0].batch_key,
                max_images=self.max_batch_images - images,
            ))
            batch.jobs += more
            images += sum(j.n for j in more)

    async def _claim_with(
        self, claim: Callable[..., Awaitable[list[Job]]]
    ) -> list[Job]:
        """Runs one claim query (``claim(session, now=, lease_until=)``) and announces the claimed jobs."""
        now = utcnow()
        async with self.db.unit_of_work() as session:
            jobs = await claim(session, now=now, lease_until=now + timedelta(seconds=self.settings.job_lease_seconds))
            for job in jobs:
                # Started once: a job retried after a lost worker does not start again for its partner.
                if job.attempts == 1:
                    await record_job_event(session, job.id, EventType.STARTED, now)
                await publish_job_changed(session, job.id)
        for job in jobs:
            self.events.job_changed(job.id)
            # After the commit: a claim that rolled back is claimed again later and observed then.
            if job.attempts == 1:
                QUEUE_WAIT.labels(job.model).observe(max(0.0, (now - job.created_at).total_seconds()))
        return jobs

    # -- one batch -------------------------------------------------------------------

    async def _run_batch(self, batch: Batch) -> Coroutine[Any, Any, None] | None:
        """Generates one batch; returns its delivery, to be awaited, or None when nothing is left to deliver.

        Raises (after abandoning the batch) when its database work fails."""
        batch.advance(BatchState.GENERATING)
        jobs = batch.jobs
        try:
            params, prompts, slots = plan_call(jobs, self.loras.path_of)
        except RuntimeModelError as exc:  # a LoRA the API knows and this worker does not
            await self._end_jobs(batch, jobs, JobStatus.FAILED, "lora_unavailable", str(exc))
            return None
        loaded: dict[str, image_inputs.Prepared] = {}
        if any(job.inputs for job in jobs):
            try:
                loaded = {job.id: await asyncio.to_thread(image_inputs.load, job, self.store)
                          for job in jobs if job.inputs}
            except (RuntimeModelError, OSError, ValueError) as exc:  # gone from storage, or unreadable after all
                await self._end_jobs(batch, jobs, JobStatus.FAILED, "input_unavailable",
                                     f"The job's input image could not be read ({exc}); it was not charged.")
                return None
            # Uploaded images are screened like outputs, where the operator has a classifier: an init image the
            # account's threshold would withhold ends its job (uncharged) before any generation.
            with_inputs = [job for job in jobs if job.id in loaded]
            verdicts = await self.reviewer.assess(with_inputs, [loaded[job.id].init for job in with_inputs])
            refused = [job for job, verdict in zip(with_inputs, verdicts, strict=True)
                       if verdict is not None and verdict.withhold]
            if refused:
                await self._end_jobs(batch, refused, JobStatus.FAILED, "content_policy_violation",
                                     "The init image was refused by the content policy; it was not charged.")
                jobs = [job for job in jobs if job not in refused]
                if not jobs:
                    return None
            params, prompts, slots = plan_call(jobs, self.loras.path_of,
                                               {job_id: (p.init, p.mask) for job_id, p in loaded.items()})
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
            # Every job of the call was cancelled (and so already settled) or taken from this worker.
            self._done(batch, BatchState.SETTLED)
            return None
        except RuntimeModelError as exc:
            log.error("model %s failed to load: %s", jobs[0].model, exc)
            await self._end_jobs(batch, jobs, JobStatus.FAILED, "model_unavailable", str(exc))
            return None
        except Exception as exc:
            log.exception("pipeline failed for batch %s", batch.job_ids)
            await self._end_jobs(batch, jobs, JobStatus.FAILED, "pipeline_error",
                                 f"The model failed on this request ({type(exc).__name__}); it was not charged.")
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
            await self._end_jobs(batch, [j for j in jobs if j.id in too_big], JobStatus.FAILED, "out_of_memory",
                                 "The accelerator ran out of memory for this request; it was not charged.")
            if batch.state.done:
                return None
        try:
            async with self.db.unit_of_work() as session:
                moving = await lifecycle.start_delivery(session, batch.job_ids, worker_id=self.id)
        except Exception as exc:
            self._abandon(batch, exc)
            raise
        # A job cancelled (or taken by the sweeper) while it generated is no longer ours to deliver.
        batch.keep(moving)
        if not batch.jobs:
            self._done(batch, BatchState.SETTLED)
            return None
        batch.advance(BatchState.DELIVERING)
        kept = [(s, r) for s, r in zip(slots, results, strict=True) if s.job.id in moving]
        images = [loaded[s.job.id].finish(r) if s.job.id in loaded else r
                  for s, r in kept if isinstance(r, Image.Image)]
        return self._deliver(batch, [s for s, _ in kept], images, elapsed)

    async def _end_jobs(self, batch: Batch, jobs: Sequence[Job], status: JobStatus, code: str, message: str) -> None:
        """Ends ``jobs`` of the batch unsuccessfully (uncharged), each in its own transaction; the batch
        is settled once none is left. A database failure abandons the whole batch and is raised."""
        ended = []
        try:
            for job in jobs:
                async with self.db.unit_of_work() as session:
                    if await settlement.end_unsuccessfully(session, job.id, status=status, code=code, message=message,
                                                           now=utcnow(), worker_id=self.id):
                        ended.append(job)
        except Exception as exc:
            self._abandon(batch, exc)
            raise
        finally:
            for job in ended:
                JOBS_FINISHED.labels(status.value, job.model).inc()
                self.events.job_changed(job.id)
        batch.keep({j.id for j in batch.jobs} - {j.id for j in jobs})
        if not batch.jobs:
            self._done(batch, BatchState.SETTLED)

    async def _deliver(self, batch: Batch, slots: list[Slot], images: list[Image.Image], elapsed: float) -> None:
        """Encodes, reviews, stores and settles the batch. Never raises: a database failure abandons
        what is not settled yet, any other failure ends those jobs failed and uncharged."""
        stored: dict[str, list[JobOutput]] = {}
        try:
            encoded, verdicts = await asyncio.gather(self._encode(slots, images),
                                                     self.reviewer.assess([s.job for s in slots], images))
            withheld = await self._store(slots, encoded, verdicts, into=stored)
            await self._settle(batch, stored, withheld, elapsed, total_images=len(slots))
        except SQLAlchemyError as exc:
            await self._discard([o for job in batch.jobs for o in stored.get(job.id, [])])
            self._abandon(batch, exc)
        except Exception:
            log.exception("delivering jobs %s failed", batch.job_ids)
            await self._discard([o for job in batch.jobs for o in stored.get(job.id, [])])
            with contextlib.suppress(Exception):
                await self._end_jobs(batch, list(batch.jobs), JobStatus.FAILED, "delivery_failed",
                                     "The images could not be stored; it was not charged.")

    def _generate(self, model_name: str, params: GenerationParams, prompts: list[ImagePrompt],
                  on_step: StepCallback, on_preview: PreviewHook | None = None) -> list[Image.Image | Exception]:
        """Runs on the pipeline thread; the model is pinned so the memory budget cannot evict it mid-call."""
        with self.registry.use(model_name) as model:
            return model.generate_split(params, prompts, on_step, on_preview=on_preview)

    async def _watch(self, monitor: _BatchMonitor) -> None:
        """While the pipeline runs: publish progress (new previews in the same UPDATE) and find cancelled jobs.

        One statement per tick: the progress UPDATE returns the jobs this worker is still
        generating, and a tick without progress only reads them; any other job of the call was
        cancelled (or taken by the sweeper) and its images are not wanted. A cancel wakes the
        watcher at once (its notification reaches this process's hub), so a job stops at its next
        step. A tick that fails (the database is away) is skipped: the generation goes on, and
        what happens to its jobs is decided when it ends.
        """
        last_step = -1
        with self.events.subscribe(*monitor.job_ids, progress=False) as subscription:
            while True:
                await subscription.wait(PROGRESS_INTERVAL_SECONDS)
                step, previews = monitor.take_progress()
                changed = step != last_step or bool(previews)
                try:
                    async with self.db.unit_of_work() as session:
                        if changed:
                            generating = await queue.set_progress(session, monitor.job_ids, step, worker_id=self.id,
                                                                  previews=previews)
                            for job_id in generating:
                                await publish_job_changed(session, job_id, progress=True)
                        else:
                            generating = await queue.still_generating(session, monitor.job_ids, worker_id=self.id)
                except SQLAlchemyError as exc:
                    log.warning("progress tick failed: %s", _brief(exc))
                    continue
                monitor.cancel(set(monitor.job_ids) - generating)
                if changed:
                    last_step = step
                    for job_id in generating:
                        self.events.job_changed(job_id, progress=True)

    async def _encode(self, slots: list[Slot], images: Sequence[Image.Image]) -> list[bytes]:
        """Encodes each image with what its key's metadata mode allows and, where C2PA is configured and
        the mode keeps provenance, signs it, on the encoding threads.

        An image that cannot be signed is never shipped unsigned: its job ends failed and uncharged
        with code ``signing_failed`` (logged as an error) and this raises, so ``_deliver`` ends the
        rest of the batch through its failure path (uncharged too)."""
        signer = self.c2pa

        def encode(image: Image.Image, fmt: OutputFormat, metadata: ImageMetadata) -> bytes:  # an encoding thread
            data = encode_image(image, fmt, metadata.parameters, xmp=metadata.xmp)
            if signer is None or metadata.provenance is None:
                return data
            return signer.sign(data, fmt, metadata.provenance)

        loop = asyncio.get_running_loop()
        futures = [
            loop.run_in_executor(self._encoder, encode, img, cast(OutputFormat, slot.job.output_format),
                                 image_metadata(slot))
            for slot, img in zip(slots, images, strict=True)
        ]
        results = await asyncio.gather(*futures, return_exceptions=True)
        failures = [(s.job, r) for s, r in zip(slots, results, strict=True) if isinstance(r, SigningFailed)]
        if failures:
            unsigned = list({job.id: job for job, _ in failures}.values())
            log.error("C2PA signing failed for jobs %s: %s", [j.id for j in unsigned], failures[0][1])
            await self._end_jobs(Batch(unsigned, BatchState.DELIVERING), unsigned, JobStatus.FAILED,
                                 "signing_failed", "The images could not be signed; it was not charged.")
            raise failures[0][1]
        encoded: list[bytes] = []
        for result in results:
            if isinstance(result, BaseException):
                raise result
            encoded.append(result)
        return encoded

    async def _store(self, slots: list[Slot], encoded: list[bytes], verdicts: Sequence[Verdict | None], *,
                     into: dict[str, list[JobOutput]]) -> dict[str, Verdict]:
        """Writes every image's bytes, adding its output to ``into`` (per job) as soon as it is stored,
        so a failure half-way still knows what to delete; returns the verdicts of the images withheld."""
        now = utcnow()
        outputs = into
        withheld: dict[str, Verdict] = {}
        for slot, data, verdict in zip(slots, encoded, verdicts, strict=True):
            image_id = new_id("img")
            key = storage_key(slot.job, slot.index, image_id)
            held = verdict is not None and verdict.withhold
            output = JobOutput(
                id=image_id, job_id=slot.job.id, index=slot.index, seed=slot.seed, format=slot.job.output_format,
                width=slot.job.width, height=slot.job.height, storage_key=key, size_bytes=len(data),
                sha256=hashlib.sha256(data).hexdigest(), created_at=now,
                status=OutputStatus.WITHHELD if held else OutputStatus.DELIVERED,
            )
            await asyncio.to_thread(self.store.put, key, data)
            outputs.setdefault(slot.job.id, []).append(output)
            if held:
                assert verdict is not None
                withheld[image_id] = verdict
        return withheld

    async def _settle(self, batch: Batch, outputs: dict[str, list[JobOutput]], withheld: dict[str, Verdict],
                      elapsed: float, *, total_images: int) -> None:
        """Settles each job in its own transaction; a job cancelled meanwhile loses, and its images are deleted.

        The jobs of one batch share one finish time: they were delivered together."""
        now = utcnow()
        for job in list(batch.jobs):
            mine = outputs.get(job.id, [])
            async with self.db.unit_of_work() as session:
                delivered = await settlement.deliver(session, job, mine, worker_id=self.id, now=now,
                                                     gpu_seconds=elapsed * len(mine) / total_images)
                if delivered:
                    held = [o for o in mine if o.id in withheld]
                    await record_withheld(session, job, held, [withheld[o.id] for o in held])
            batch.keep({j.id for j in batch.jobs} - {job.id})
            if not delivered:
                log.info("job %s was cancelled or taken before it was delivered; its images are discarded", job.id)
                await self._discard(mine)
                continue
            JOBS_FINISHED.labels(JobStatus.SUCCEEDED.value, job.model).inc()
            IMAGES_GENERATED.labels(job.model).inc(len(mine))
            self.events.job_changed(job.id)
            log.info("job finished", extra={"job_id": job.id, "status": JobStatus.SUCCEEDED.value, "model": job.model,
                                            "images": len(mine), "seconds": round(elapsed, 3)})
        self._done(batch, BatchState.SETTLED)

    async def _discard(self, outputs: Sequence[JobOutput]) -> None:
        """Deletes the bytes of images that will never be delivered (best effort: they are unreachable anyway).

        In a thread: with object storage each delete is a network call."""
        for output in outputs:
            try:
                await asyncio.to_thread(self.store.delete, output.storage_key)
            except Exception:
                log.exception("could not delete %s", output.storage_key)


def _brief(exc: BaseException) -> str:
    """The first line of a database error: an outage is one log line, not a page of traceback."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
