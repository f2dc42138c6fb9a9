"""Moderation as the API and the worker use it: prompt screening with incidents and strikes,
the artist opt-out registry and its refresh across replicas, output review, and the
moderators' decisions with their audit trail.

The rules themselves live in the pure engine (:mod:`app.moderation`); this module adds
the database, the metrics and the errors a caller sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from PIL import Image
from prometheus_client import Counter, Histogram
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import service as accounts_service
from app.accounts.service import Principal
from app.config import ModelSpec, Settings
from app.db import Database
from app.errors import AppError, Conflict, ContentPolicyViolation, InvalidRequest, NotFound
from app.generation.schemas import GenerationRequest
from app.kit.clock import utcnow
from app.kit.ids import new_id
from app.moderation import (
    RATINGS,
    Category,
    Decision,
    OptOutEntry,
    PromptPolicy,
    Rating,
    is_matchable_artist_name,
    normalize,
    stricter_rating,
)
from app.moderation import repository as repo
from app.moderation.classifier import ImageClassifier, load_classifier
from app.moderation.models import ArtistOptOut, ModerationAuditEntry, ModerationIncident, ModerationReview
from app.queue.models import Job, JobOutput, OutputStatus
from app.settlement import service as settlement

log = logging.getLogger("ponyserve.moderation")

BLOCKS = Counter("ponyserve_moderation_blocks_total", "Generation requests refused by the prompt policy.",
                 ["category"])
SUSPENSIONS = Counter("ponyserve_account_suspensions_total",
                      "Accounts suspended automatically after repeated CSAM-category blocks.")
CHECK_SECONDS = Histogram("ponyserve_moderation_check_seconds", "Prompt policy check time per request.",
                          buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05))
OPTOUT_RELOADS = Counter("ponyserve_moderation_optout_reloads_total",
                         "Times this process rebuilt its opt-out matcher after a registry change.")
WITHHELD = Counter("ponyserve_moderation_withheld_images_total",
                   "Generated images withheld for human review by the output classifier.", ["model"])
CLASSIFIER_FAILURES = Counter("ponyserve_moderation_classifier_failures_total",
                              "Batches the output classifier failed on (their images are withheld unscored).")
CLASSIFIER_SECONDS = Histogram("ponyserve_moderation_classifier_seconds", "Output classifier time per batch.",
                               buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
REVIEW_DECISIONS = Counter("ponyserve_moderation_review_decisions_total", "Moderator decisions on withheld images.",
                           ["decision"])

# What a refused caller reads. Deliberately generic: the matched terms and the rule stay in the
# incident log, so the refusal cannot be used to probe the lists.
_POLICY_MESSAGE = "This request was refused by the content policy."
_OPTOUT_MESSAGE = ("This request was refused: the prompt asks for the style of an artist who has opted out of "
                   "use with this service.")
_RATING_MESSAGE = "This request was refused: it asks for content above your account's content rating."

# Only the CSAM guard counts strikes: opt-outs, the blocklist and ratings are refused just
# the same, but an artist's name or a blunt word is ordinary partner traffic, not abuse.
_STRIKE_CATEGORIES = frozenset({Category.CSAM})

MAX_OPTOUT_ALIASES = 50


def _refusal(decision: Decision) -> AppError:
    if decision.category is Category.OPTOUT:
        return ContentPolicyViolation(_OPTOUT_MESSAGE, code="artist_opted_out", param="prompt")
    if decision.category is Category.RATING:
        return ContentPolicyViolation(_RATING_MESSAGE, code="rating_violation", param="prompt")
    return ContentPolicyViolation(_POLICY_MESSAGE)


def account_rating(value: str) -> Rating:
    """An account's stored max_rating; anything unexpected is treated as the strictest."""
    return value if value in RATINGS else "safe"


# -- prompt screening --------------------------------------------------------------------------


@dataclass(frozen=True)
class Screening:
    """An admitted request: the rating its job is generated at (the account's ``max_rating``,
    lowered to ``safe`` when the prompt mentions a minor)."""

    rating: Rating


def template_allowance(specs: Iterable[ModelSpec]) -> int:
    """How much longer than the caller's text a model's templates can make a checked prompt."""
    longest = 0
    for spec in specs:
        longest = max(longest, len(spec.prompt_prefix) + len(spec.prompt_suffix) + 4,
                      len(spec.default_negative_prompt))
    return longest


def build_policy(settings: Settings, specs: Iterable[ModelSpec]) -> PromptPolicy:
    """The process's policy: built-in lists plus the operator's files (a bad file fails start-up)."""
    return PromptPolicy.build(
        extra_block_files=list(settings.moderation_block_files),
        allow_files=list(settings.moderation_allow_files),
        max_prompt_chars=settings.max_prompt_chars + template_allowance(specs),
    )


class Moderator:
    """One per API process: holds the current policy (swapped whole when the opt-out registry
    changes) and screens every generation request against it."""

    def __init__(self, db: Database, settings: Settings, policy: PromptPolicy) -> None:
        self.db = db
        self.settings = settings
        self._policy = policy
        self.revision: int | None = None
        self._reload_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def policy(self) -> PromptPolicy:
        return self._policy

    # -- opt-out registry refresh ------------------------------------------------------------

    async def refresh(self, *, force: bool = False) -> bool:
        """Rebuilds the opt-out matcher if the registry changed since the last look; True if it did."""
        async with self._reload_lock:
            async with self.db.unit_of_work() as session:
                revision = await repo.optout_revision(session)
                if revision == self.revision and not force:
                    return False
                rows = await repo.active_optouts(session)
            entries = [OptOutEntry(id=r.id, name=r.name, aliases=tuple(r.aliases or ()),
                                   require_context=r.require_context) for r in rows]
            # Large registries take milliseconds to compile: off the event loop.
            policy = await asyncio.to_thread(self._policy.with_optouts, entries)
            changed = policy is not self._policy
            self._policy, self.revision = policy, revision
        if changed:
            OPTOUT_RELOADS.inc()
            log.info("artist opt-outs reloaded", extra={"revision": revision, "entries": len(entries)})
        return changed

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll(), name="moderation-optout-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.moderation_optout_refresh_seconds)
            try:
                await self.refresh()
            except Exception:
                # A database hiccup keeps the last good registry; the next poll retries.
                log.exception("opt-out registry refresh failed")

    # -- screening ------------------------------------------------------------------------------

    async def screen(self, principal: Principal, req: GenerationRequest, spec: ModelSpec, *,
                     endpoint: str, extra: str = "") -> Screening:
        """Admits the request's prompts or raises the refusal (after recording the incident).

        ``extra`` is text the request brings besides its prompts (its LoRAs' names and trigger
        words), checked as part of the prompt: what a LoRA is for counts like words asked for."""
        limit = self.settings.max_prompt_chars
        for param, text in (("prompt", req.prompt), ("negative_prompt", req.negative_prompt or "")):
            if len(text) > limit:
                BLOCKS.labels(Category.TOO_LONG.value).inc()
                raise InvalidRequest(f"'{param}' is {len(text)} characters long; the limit is {limit}.",
                                     code="prompt_too_long", param=param)
        max_rating = account_rating(principal.account.max_rating)
        started = time.perf_counter()
        prompt = spec.revise_prompt(req.prompt) + (f", {extra}" if extra else "")
        decision = self._policy.check(prompt, spec.revise_negative_prompt(req.negative_prompt),
                                      nsfw_capable_model=spec.nsfw_capable, max_rating=max_rating)
        CHECK_SECONDS.observe(time.perf_counter() - started)
        if decision.allowed:
            return Screening(rating=stricter_rating(max_rating, decision.rating_cap))
        assert decision.category is not None
        BLOCKS.labels(decision.category.value).inc()
        if decision.category is Category.TOO_LONG:
            # Only reachable through a model template longer than the allowance; still the caller's limit.
            raise InvalidRequest(f"The prompt is too long for model '{spec.name}'.", code="prompt_too_long",
                                 param="prompt")
        try:
            await self._record_incident(principal, req, spec, decision, endpoint=endpoint)
        except Exception:
            # The refusal never depends on the bookkeeping.
            log.exception("could not record moderation incident", extra={"account_id": principal.account.id})
        raise _refusal(decision)

    async def _record_incident(self, principal: Principal, req: GenerationRequest, spec: ModelSpec,
                               decision: Decision, *, endpoint: str) -> None:
        """Its own transaction: the request's work is rolled back, the incident must stay."""
        assert decision.category is not None
        now = utcnow()
        account_id, key_id = principal.account.id, principal.key.id
        strike = decision.category in _STRIKE_CATEGORIES
        suspended = False
        strikes = 0
        cancelled: list[str] = []
        async with self.db.unit_of_work() as session:
            if strike:
                await repo.lock_account(session, account_id)
            incident = ModerationIncident(
                account_id=account_id, api_key_id=key_id, category=decision.category.value,
                rule=decision.rule or "", matched=list(decision.matched), optout_id=decision.optout_id,
                model=spec.name, endpoint=endpoint[:40], prompt=req.prompt, negative_prompt=req.negative_prompt or "",
                strike=strike, suspended_account=False, created_at=now,
            )
            await repo.add(session, incident)
            if strike:
                window = timedelta(hours=self.settings.moderation_strike_window_hours)
                strikes = await repo.count_strikes(session, account_id, now - window)
                if strikes >= self.settings.moderation_strike_threshold and \
                        await repo.suspend_account(session, account_id):
                    incident.suspended_account = suspended = True
                    # Suspended like an admin would: its unfinished jobs end now, uncharged.
                    cancelled = await accounts_service.cancel_unfinished_jobs(session, account_id)
        fields = {"incident_id": incident.id, "account_id": account_id, "api_key_id": key_id,
                  "category": decision.category.value, "rule": decision.rule, "model": spec.name}
        if strike:
            log.warning("moderation strike", extra={**fields, "strikes": strikes})
        else:
            log.info("moderation block", extra=fields)
        if suspended:
            SUSPENSIONS.inc()
            log.error("account suspended for repeated CSAM-category blocks",
                      extra={**fields, "alert": "account_suspended", "strikes": strikes, "cancelled_jobs": cancelled,
                             "window_hours": self.settings.moderation_strike_window_hours})


_BY_DATABASE: weakref.WeakKeyDictionary[Database, Moderator] = weakref.WeakKeyDictionary()


def attach(db: Database, moderator: Moderator) -> None:
    """Makes ``moderator`` the one every generation accepted through ``db`` is screened by."""
    _BY_DATABASE[db] = moderator


def detach(db: Database) -> None:
    _BY_DATABASE.pop(db, None)


def moderator_for(db: Database) -> Moderator:
    """The process's moderator for this database. There is no unmoderated path: a process that
    accepts generations without one fails loudly instead."""
    moderator = _BY_DATABASE.get(db)
    if moderator is None:
        raise RuntimeError("no moderator attached to this database; create_app() attaches one at start-up")
    return moderator


# -- opt-out registry administration -------------------------------------------------------------


def _name_key(name: str) -> str:
    return normalize(name).spaced


def _clean_entry(name: str, aliases: Iterable[str], *, param: str = "name") -> tuple[str, list[str]]:
    name = name.strip()
    if not name or not is_matchable_artist_name(name):
        raise InvalidRequest("The name has no letters or digits to match.", code="invalid_optout", param=param)
    seen = {_name_key(name)}
    cleaned: list[str] = []
    for alias in aliases:
        alias = alias.strip()
        if not alias:
            continue
        if len(alias) > 200:
            raise InvalidRequest("An alias is longer than 200 characters.", code="invalid_optout", param="aliases")
        if not is_matchable_artist_name(alias):
            raise InvalidRequest(f"Alias {alias!r} has no letters or digits to match.", code="invalid_optout",
                                 param="aliases")
        key = _name_key(alias)
        if key not in seen:
            seen.add(key)
            cleaned.append(alias)
    if len(cleaned) > MAX_OPTOUT_ALIASES:
        raise InvalidRequest(f"At most {MAX_OPTOUT_ALIASES} aliases per artist.", code="invalid_optout",
                             param="aliases")
    return name, cleaned


async def audit(session: AsyncSession, actor: Principal, action: str, target_type: str, target_id: str | int,
                **detail: Any) -> None:
    await repo.add(session, ModerationAuditEntry(
        actor_key_id=actor.key.id, actor_account_id=actor.account.id, action=action, target_type=target_type,
        target_id=str(target_id), detail=detail, created_at=utcnow(),
    ))


async def create_optout(session: AsyncSession, actor: Principal, *, name: str, aliases: Sequence[str],
                        require_context: bool) -> ArtistOptOut:
    name, cleaned = _clean_entry(name, aliases)
    # Taking the revision row's lock first serialises registry changes, so the duplicate check holds.
    await repo.bump_optout_revision(session)
    key = _name_key(name)
    if any(_name_key(row.name) == key for row in await repo.active_optouts(session)):
        raise Conflict(f"An opt-out for {name!r} already exists.", code="optout_exists", param="name")
    now = utcnow()
    row = ArtistOptOut(name=name, aliases=cleaned, require_context=require_context, created_by=actor.key.id,
                       created_at=now, updated_at=now, deleted_at=None)
    await repo.add(session, row)
    await audit(session, actor, "optout.create", "optout", row.id, name=name, aliases=cleaned,
                require_context=require_context)
    return row


async def delete_optout(session: AsyncSession, actor: Principal, optout_id: int) -> ArtistOptOut:
    await repo.bump_optout_revision(session)
    if not await repo.soft_delete_optout(session, optout_id, utcnow()):
        raise NotFound(f"No opt-out {optout_id}.", param="id")
    row = await repo.get_optout(session, optout_id)
    assert row is not None
    await session.refresh(row)
    await audit(session, actor, "optout.delete", "optout", optout_id, name=row.name)
    return row


@dataclass(frozen=True)
class ImportResult:
    created: int
    updated: int
    unchanged: int
    revision: int


_TRUE = {"1", "true", "yes", "y"}
_FALSE = {"", "0", "false", "no", "n"}


def parse_optout_csv(text: str) -> list[tuple[str, list[str], bool | None]]:
    """Rows ``name,aliases[,require_context]``; aliases ``;``-separated; an optional header row.
    Raises ``InvalidRequest`` naming the first bad lines; nothing is imported then."""
    rows: list[tuple[str, list[str], bool | None]] = []
    problems: list[str] = []
    reader = csv.reader(io.StringIO(text))
    try:
        for line_no, record in enumerate(reader, start=1):
            cells = [c.strip() for c in record]
            if not any(cells):
                continue
            if line_no == 1 and cells[0].lower() == "name":
                continue
            if len(cells) > 3:
                problems.append(f"line {line_no}: more than 3 columns")
                continue
            name = cells[0]
            aliases = [a for a in (cells[1].split(";") if len(cells) > 1 else []) if a.strip()]
            flag: bool | None = None
            if len(cells) == 3:
                value = cells[2].lower()
                if value not in _TRUE | _FALSE:
                    problems.append(f"line {line_no}: require_context must be true or false")
                    continue
                flag = value in _TRUE
            try:
                name, aliases = _clean_entry(name, aliases)
            except InvalidRequest as exc:
                problems.append(f"line {line_no}: {exc.message}")
                continue
            if len(name) > 200:
                problems.append(f"line {line_no}: name longer than 200 characters")
                continue
            rows.append((name, aliases, flag))
    except csv.Error as exc:
        problems.append(f"line {reader.line_num}: {exc}")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise InvalidRequest(f"The CSV has errors, nothing was imported: {shown}.", code="invalid_csv")
    return rows


async def import_optouts(session: AsyncSession, actor: Principal, text: str) -> ImportResult:
    """Merges a CSV into the registry: new names are created, known names gain new aliases."""
    parsed = parse_optout_csv(text)
    revision = await repo.bump_optout_revision(session)
    by_key = {_name_key(row.name): row for row in await repo.active_optouts(session)}
    created = updated = unchanged = 0
    now = utcnow()
    for name, aliases, flag in parsed:
        existing = by_key.get(_name_key(name))
        if existing is None:
            row = ArtistOptOut(name=name, aliases=aliases, require_context=bool(flag), created_by=actor.key.id,
                               created_at=now, updated_at=now, deleted_at=None)
            session.add(row)
            by_key[_name_key(name)] = row
            created += 1
            continue
        known = {_name_key(existing.name), *(_name_key(a) for a in existing.aliases)}
        extra = [a for a in aliases if _name_key(a) not in known]
        changed = bool(extra) or (flag is not None and flag != existing.require_context)
        if extra:
            if len(existing.aliases) + len(extra) > MAX_OPTOUT_ALIASES:
                raise InvalidRequest(f"{existing.name!r} would have more than {MAX_OPTOUT_ALIASES} aliases.",
                                     code="invalid_csv")
            existing.aliases = [*existing.aliases, *extra]
        if flag is not None:
            existing.require_context = flag
        if changed:
            existing.updated_at = now
            updated += 1
        else:
            unchanged += 1
    await session.flush()
    await audit(session, actor, "optout.import", "optout", "*", created=created, updated=updated,
                unchanged=unchanged, rows=len(parsed))
    return ImportResult(created=created, updated=updated, unchanged=unchanged, revision=revision)


# -- output review (worker side) ------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What happens to one generated image: delivered, or withheld for review.

    A withheld image is not charged nor counted against its licence unless a moderator approves
    it: then it is delivered, and settled like any delivery (``app.settlement.deliver_approved``).
    """

    withhold: bool
    score: float | None
    threshold: float


class OutputReviewer:
    """Scores a batch's images with the operator's classifier (if any) against each account's threshold."""

    def __init__(self, db: Database, classifier: ImageClassifier | None) -> None:
        self.db = db
        self.classifier = classifier

    @classmethod
    def from_settings(cls, db: Database, settings: Settings, *, device: str = "cpu") -> OutputReviewer:
        path: Path | None = settings.moderation_classifier
        if path is None:
            return cls(db, None)
        classifier = load_classifier(path, input_size=settings.moderation_classifier_input_size, device=device)
        log.info("output classifier loaded", extra={"path": str(path)})
        return cls(db, classifier)

    async def assess(self, jobs: Sequence[Job], images: Sequence[Image.Image]) -> list[Verdict | None]:
        """One verdict per image (``jobs[i]`` is the job of ``images[i]``); None = no review configured."""
        if self.classifier is None or not images:
            return [None] * len(images)
        async with self.db.unit_of_work() as session:
            accounts = await repo.review_settings(session, sorted({j.account_id for j in jobs}))
        started = time.perf_counter()
        scores: list[float | None]
        try:
            scores = list(await asyncio.to_thread(self.classifier.score, list(images)))
            if len(scores) != len(images):
                raise RuntimeError(f"classifier returned {len(scores)} scores for {len(images)} images")
        except Exception:
            # Fail closed: an image nobody could score is held for a human (charged only if released).
            CLASSIFIER_FAILURES.inc()
            log.exception("output classifier failed; withholding the batch for review",
                          extra={"jobs": [j.id for j in jobs]})
            scores = [None] * len(images)
        CLASSIFIER_SECONDS.observe(time.perf_counter() - started)
        verdicts: list[Verdict | None] = []
        for job, score in zip(jobs, scores, strict=True):
            _, threshold = accounts.get(job.account_id, ("safe", 0.8))
            withhold = score is None or score > threshold
            verdicts.append(Verdict(withhold=withhold, score=score, threshold=threshold))
        return verdicts


async def record_withheld(session: AsyncSession, job: Job, outputs: Sequence[JobOutput],
                          verdicts: Sequence[Verdict]) -> list[ModerationReview]:
    """Review items for a finished job's withheld images, in the worker's commit transaction."""
    reviews = []
    for output, verdict in zip(outputs, verdicts, strict=True):
        review = ModerationReview(
            id=new_id("rev"), image_id=output.id, job_id=job.id, account_id=job.account_id,
            api_key_id=job.api_key_id, model=job.model, score=verdict.score, threshold=verdict.threshold,
            status="pending", created_at=utcnow(),
        )
        session.add(review)
        reviews.append(review)
    if reviews:
        await session.flush()
        WITHHELD.labels(job.model).inc(len(reviews))
        log.info("images withheld for review", extra={"job_id": job.id, "account_id": job.account_id,
                                                      "reviews": [r.id for r in reviews]})
    return reviews


# -- moderator actions ---------------------------------------------------------------------------


async def _pending_review(session: AsyncSession, review_id: str) -> ModerationReview:
    review = await repo.review_for_update(session, review_id)
    if review is None:
        raise NotFound(f"No review '{review_id}'.", param="id")
    if review.status != "pending":
        raise Conflict(f"Review '{review_id}' was already {review.status}.", code="review_already_decided")
    return review


async def approve_review(session: AsyncSession, actor: Principal, review_id: str, note: str | None
                         ) -> ModerationReview:
    """Releases the image: its owner can fetch it from now on, and it is settled like any delivery
    (usage, licence count, ledger and, on paid plans, billing)."""
    review = await _pending_review(session, review_id)
    now = utcnow()
    review.status, review.decided_by, review.decided_at, review.note = "approved", actor.key.id, now, note
    output = await repo.get_output(session, review.image_id)
    job = await session.get(Job, review.job_id)
    if output is None or job is None:
        raise NotFound(f"The image of review '{review_id}' no longer exists.", code="image_removed", param="id")
    await settlement.deliver_approved(session, job, output, now=now)
    await audit(session, actor, "review.approve", "review", review.id, image_id=review.image_id,
                account_id=review.account_id, note=note)
    await session.flush()
    REVIEW_DECISIONS.labels("approved").inc()
    return review


async def reject_review(session: AsyncSession, actor: Principal, review_id: str, note: str | None
                        ) -> tuple[ModerationReview, str | None]:
    """Marks the image removed; returns the storage key whose bytes the caller deletes after commit."""
    review = await _pending_review(session, review_id)
    output = await repo.get_output(session, review.image_id)
    review.status, review.decided_by, review.decided_at, review.note = "rejected", actor.key.id, utcnow(), note
    await repo.set_output_status(session, review.image_id, OutputStatus.REMOVED)
    await audit(session, actor, "review.reject", "review", review.id, image_id=review.image_id,
                account_id=review.account_id, note=note)
    await session.flush()
    REVIEW_DECISIONS.labels("rejected").inc()
    return review, output.storage_key if output is not None else None


async def review_image(session: AsyncSession, actor: Principal, review_id: str) -> JobOutput:
    """The withheld image behind a review, for a moderator to look at (each look is audited)."""
    review = await repo.get_review(session, review_id)
    if review is None:
        raise NotFound(f"No review '{review_id}'.", param="id")
    output = await repo.get_output(session, review.image_id)
    if output is None or output.status == OutputStatus.REMOVED:
        raise NotFound(f"The image of review '{review_id}' was removed.", code="image_removed", param="id")
    await audit(session, actor, "review.view_image", "review", review.id, image_id=review.image_id)
    return output


async def list_incidents(session: AsyncSession, *, category: str | None, account_id: str | None,
                         api_key_id: str | None, since: datetime | None, limit: int, offset: int
                         ) -> Sequence[ModerationIncident]:
    return await repo.list_incidents(session, category=category, account_id=account_id, api_key_id=api_key_id,
                                     since=since, limit=limit, offset=offset)


async def list_reviews(session: AsyncSession, *, status: str | None, account_id: str | None, limit: int,
                       offset: int) -> Sequence[ModerationReview]:
    return await repo.list_reviews(session, status=status, account_id=account_id, limit=limit, offset=offset)


async def list_audit(session: AsyncSession, *, action: str | None, target_type: str | None, target_id: str | None,
                     limit: int, offset: int) -> Sequence[ModerationAuditEntry]:
    return await repo.list_audit(session, action=action, target_type=target_type, target_id=target_id,
                                 limit=limit, offset=offset)


async def list_optouts(session: AsyncSession, *, include_deleted: bool, limit: int, offset: int
                       ) -> tuple[Sequence[ArtistOptOut], int]:
    rows = await repo.list_optouts(session, include_deleted=include_deleted, limit=limit, offset=offset)
    return rows, await repo.optout_revision(session)


async def review_backlog(session: AsyncSession) -> tuple[int, datetime | None]:
    """Images waiting for a decision, and when the oldest of them was withheld."""
    return await repo.review_backlog(session, "pending")


async def reviews_of_job(session: AsyncSession, job_id: str) -> Sequence[ModerationReview]:
    """Every review of the job's images, decided or not, oldest first."""
    return await repo.reviews_of_job(session, job_id)
