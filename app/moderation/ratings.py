"""Account content ratings and Pony's rating tags.

An account's ``max_rating`` is ``safe``, ``questionable`` or ``explicit``. Pony
Diffusion models were trained with ``rating_safe`` / ``rating_questionable`` /
``rating_explicit`` tags, so the strongest lever is to put the account's rating in
the positive prompt and the ratings above it in the negative prompt
(:func:`apply_rating_tags`). On top of that a ``safe`` account may not ask for
explicit content in words (:func:`find_rating_violation`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from app.moderation.normalize import normalize
from app.moderation.term_index import Hits
from app.moderation.wordlists import TermKind

__all__ = [
    "RATINGS",
    "Rating",
    "RatingFinding",
    "apply_rating_tags",
    "find_rating_violation",
    "rating_tag_terms",
    "stricter_rating",
    "validate_rating",
]

Rating = Literal["safe", "questionable", "explicit"]
RATINGS: tuple[Rating, ...] = ("safe", "questionable", "explicit")

SAFE_TAG = "rating_safe"
QUESTIONABLE_TAG = "rating_questionable"
EXPLICIT_TAG = "rating_explicit"

_TAG_KINDS: dict[Rating, TermKind] = {
    "safe": TermKind.RATING_SAFE,
    "questionable": TermKind.RATING_QUESTIONABLE,
    "explicit": TermKind.RATING_EXPLICIT,
}
# Spellings that count as the tag when a prompt is checked (the tag itself is matched in
# every separator/case/weight form by normalisation). "sfw" in a negative prompt steers
# exactly like rating_safe does.
_TAG_TERMS: dict[TermKind, tuple[str, ...]] = {
    TermKind.RATING_SAFE: (SAFE_TAG, "sfw", "safe for work"),
    TermKind.RATING_QUESTIONABLE: (QUESTIONABLE_TAG,),
    TermKind.RATING_EXPLICIT: (EXPLICIT_TAG,),
}


@dataclass(frozen=True, slots=True)
class RatingFinding:
    rule: str
    matched: tuple[str, ...]


def validate_rating(value: str) -> Rating:
    if value not in RATINGS:
        raise ValueError(f"max_rating must be one of {', '.join(RATINGS)}, not {value!r}")
    return value


def stricter_rating(a: Rating, b: Rating | None) -> Rating:
    """The more restrictive of two ratings (``None`` restricts nothing)."""
    if b is None:
        return a
    return a if RATINGS.index(a) <= RATINGS.index(b) else b


def rating_tag_terms() -> Iterator[tuple[TermKind, str]]:
    for kind, terms in _TAG_TERMS.items():
        for term in terms:
            yield kind, term


def find_rating_violation(positive: Hits, negative: Hits, max_rating: Rating) -> RatingFinding | None:
    """What a ``max_rating`` account may not ask for, or ``None``."""
    if max_rating == "explicit":
        return None
    above = RATINGS[RATINGS.index(max_rating) + 1 :]
    tags = tuple(tag for rating in above for tag in positive[_TAG_KINDS[rating]])
    if tags:
        return RatingFinding("rating.tag_above_max", tags)
    if max_rating == "safe":
        if positive[TermKind.SEXUAL]:
            return RatingFinding("rating.explicit_term", positive[TermKind.SEXUAL])
        if negative[TermKind.RATING_SAFE]:
            return RatingFinding("rating.negative_steering", negative[TermKind.RATING_SAFE])
    return None


def apply_rating_tags(prompt: str, negative_prompt: str, max_rating: Rating) -> tuple[str, str]:
    """Pony rating tags for an account's ``max_rating``; returns the revised (prompt, negative_prompt).

    * ``safe``: ``rating_safe`` in the prompt; ``rating_explicit, rating_questionable`` in the negative.
    * ``questionable``: ``rating_questionable`` in the prompt unless it already holds
      ``rating_safe`` or ``rating_questionable``; ``rating_explicit`` in the negative.
    * ``explicit``: both unchanged.

    Tags already present (in any spelling normalisation folds together, e.g.
    ``(Rating_Safe:1.1)``) are not added twice. A positive tag goes right after the
    leading ``score_*``/``source_*`` tags, where Pony expects it; negative tags are
    appended. Run :meth:`PromptPolicy.check` first: this function only adds tags and
    never removes a tag the check would refuse.
    """
    max_rating = validate_rating(max_rating)
    if max_rating == "explicit":
        return prompt, negative_prompt
    present = _tags_in(prompt)
    if max_rating == "safe":
        positive_tag: str | None = SAFE_TAG if SAFE_TAG not in present else None
        negative_tags: tuple[str, ...] = (EXPLICIT_TAG, QUESTIONABLE_TAG)
    else:
        positive_tag = None if present & {SAFE_TAG, QUESTIONABLE_TAG} else QUESTIONABLE_TAG
        negative_tags = (EXPLICIT_TAG,)
    if positive_tag:
        prompt = _insert_after_quality_tags(prompt, positive_tag)
    in_negative = _tags_in(negative_prompt)
    missing = [tag for tag in negative_tags if tag not in in_negative]
    if missing:
        negative_prompt = _append(negative_prompt, missing)
    return prompt, negative_prompt


def _tags_in(text: str) -> set[str]:
    view = normalize(text)
    spaced, joined = f" {view.spaced} ", f" {view.joined} "
    return {
        tag
        for tag in (SAFE_TAG, QUESTIONABLE_TAG, EXPLICIT_TAG)
        if f" {tag.replace('_', ' ')} " in spaced or f" {tag.replace('_', '')} " in joined
    }


def _insert_after_quality_tags(prompt: str, tag: str) -> str:
    if not prompt.strip():
        return tag
    chunks = prompt.split(",")
    leading = 0
    while leading < len(chunks) and chunks[leading].strip().lower().startswith(("score_", "source_")):
        leading += 1
    if leading == 0:
        return f"{tag}, {prompt.lstrip()}"
    head = ",".join(chunks[:leading]).rstrip()
    tail = ",".join(chunks[leading:])
    return f"{head}, {tag},{tail}" if tail.strip() else f"{head}, {tag}"


def _append(text: str, tags: list[str]) -> str:
    base = text.rstrip().rstrip(",").rstrip()
    joined = ", ".join(tags)
    return f"{base}, {joined}" if base else joined
