"""The prompt policy: every moderation rule behind one immutable object.

``PromptPolicy.build(...)`` once at startup, share it between threads and
requests, call ``check`` per request. Checks run in a fixed order and the first
that fires decides: length cap -> CSAM guard -> artist opt-out -> blocklist ->
account rating. The CSAM guard therefore wins over everything, and nothing in
``build``'s parameters can weaken it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from itertools import chain

from app.moderation import csam_guard
from app.moderation.ages import age_terms, find_minor_ages
from app.moderation.normalize import EMPTY, normalize
from app.moderation.optout_matcher import OptOutEntry, OptOutMatcher
from app.moderation.ratings import Rating, find_rating_violation, rating_tag_terms, validate_rating
from app.moderation.term_index import CompiledTerms, TermIndex
from app.moderation.wordlists import BUILTIN_FILES, TermKind, builtin_terms, read_wordlist

__all__ = ["DEFAULT_MAX_PROMPT_CHARS", "Category", "Decision", "PromptPolicy"]

DEFAULT_MAX_PROMPT_CHARS = 4000

_POSITIVE_KINDS = frozenset(
    {
        TermKind.CSAM_ALWAYS,
        TermKind.YOUTH,
        TermKind.AGE,
        TermKind.SEXUAL,
        TermKind.SEXUALIZING,
        TermKind.SUGGESTIVE,
        TermKind.RATING_EXPLICIT,
        TermKind.RATING_QUESTIONABLE,
        TermKind.BLOCK_BUILTIN,
        TermKind.BLOCK_OPERATOR,
    }
)
# A negative prompt steers away from what it names; only steering towards youth or
# nudity (and rating_safe / sfw) means anything there.
_NEGATIVE_KINDS = frozenset({TermKind.NEGATIVE_YOUTH_STEERING, TermKind.NEGATIVE_NSFW_STEERING, TermKind.RATING_SAFE})
_BLOCKLIST_RULES = ((TermKind.BLOCK_OPERATOR, "blocklist.operator"), (TermKind.BLOCK_BUILTIN, "blocklist.builtin"))


class Category(StrEnum):
    """Why a prompt was refused; safe to store and to count in metrics."""

    CSAM = "csam"
    OPTOUT = "artist_optout"
    BLOCKLIST = "blocklist"
    RATING = "rating_violation"
    TOO_LONG = "prompt_too_long"


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of :meth:`PromptPolicy.check`.

    ``rule`` (e.g. ``"csam.explicit_age"``) and ``matched`` (the list terms that
    fired) are for the incident log and the review queue only: never show them to
    the caller, whose error stays generic.

    ``rating_cap``: when set on an allowed decision the image must be generated at
    no more than this rating, whatever the account allows — it is ``"safe"`` when
    the prompt mentions a minor. Use ``stricter_rating(max_rating, decision.rating_cap)``
    for :func:`apply_rating_tags`.
    """

    allowed: bool
    category: Category | None = None
    rule: str | None = None
    matched: tuple[str, ...] = ()
    optout_id: int | None = None
    rating_cap: Rating | None = None

    @classmethod
    def allow(cls, *, rating_cap: Rating | None = None) -> Decision:
        return cls(allowed=True, rating_cap=rating_cap)

    @classmethod
    def block(
        cls, category: Category, rule: str, matched: Iterable[str] = (), *, optout_id: int | None = None
    ) -> Decision:
        return cls(allowed=False, category=category, rule=rule, matched=tuple(matched), optout_id=optout_id)


@dataclass(frozen=True, slots=True, eq=False)
class PromptPolicy:
    """Immutable moderation policy; build once, share across threads. See :meth:`build`."""

    positive_terms: TermIndex
    negative_terms: TermIndex
    optouts: OptOutMatcher
    max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS

    @classmethod
    def build(
        cls,
        *,
        extra_block_terms: Iterable[str] = (),
        allow_terms: Iterable[str] = (),
        extra_block_files: Sequence[str | os.PathLike[str]] = (),
        allow_files: Sequence[str | os.PathLike[str]] = (),
        optouts: Sequence[OptOutEntry] | OptOutMatcher = (),
        max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS,
    ) -> PromptPolicy:
        """Build a policy from the built-in word lists plus the operator's additions.

        ``extra_block_terms`` / ``extra_block_files``: more blocked terms (category
        ``blocklist``). ``allow_terms`` / ``allow_files``: benign phrases that hide
        the matches they contain (``"kid goat"``); an allow term equal to a built-in
        blocklist term lifts it, but allow terms never exempt a CSAM-guard term —
        one that tries raises ``ValueError``. Files use the word-list format (one
        term per line, ``#`` comments) and raise ``WordlistError`` naming the file
        and line when unusable. ``max_prompt_chars`` caps the prompt and the negative
        prompt separately.
        """
        if max_prompt_chars < 1:
            raise ValueError("max_prompt_chars must be positive")
        operator_blocks = chain(extra_block_terms, *(read_wordlist(path) for path in extra_block_files))
        operator_allows = chain(allow_terms, *(read_wordlist(path) for path in allow_files))
        terms = CompiledTerms.compile(
            chain(
                ((kind, term) for name, kind in BUILTIN_FILES.items() for term in builtin_terms(name)),
                age_terms(),
                rating_tag_terms(),
                ((TermKind.BLOCK_OPERATOR, term) for term in operator_blocks),
                ((TermKind.ALLOW, term) for term in operator_allows),
            )
        )
        matcher = optouts if isinstance(optouts, OptOutMatcher) else OptOutMatcher.build(optouts)
        return cls(
            positive_terms=TermIndex.build(terms, _POSITIVE_KINDS),
            negative_terms=TermIndex.build(terms, _NEGATIVE_KINDS),
            optouts=matcher,
            max_prompt_chars=max_prompt_chars,
        )

    def with_optouts(self, optouts: Sequence[OptOutEntry] | OptOutMatcher) -> PromptPolicy:
        """This policy with another opt-out list; the word lists are shared, not rebuilt.

        Returns ``self`` when the entries are unchanged, so a replica can call it on
        every registry poll and only pays for a rebuild when something changed.
        """
        if isinstance(optouts, OptOutMatcher):
            matcher = optouts
        else:
            entries = tuple(optouts)
            if entries == self.optouts.entries:
                return self
            matcher = OptOutMatcher.build(entries)
        return replace(self, optouts=matcher)

    def check(
        self,
        prompt: str,
        negative_prompt: str | None = "",
        *,
        nsfw_capable_model: bool = False,
        max_rating: Rating = "explicit",
    ) -> Decision:
        """Decide whether a generation request's prompts may run.

        ``nsfw_capable_model``: the model can produce NSFW images (the model spec's
        ``nsfw_capable``); suggestive terms then count as sexual for the CSAM guard.
        ``max_rating``: the account's ceiling; ``safe`` refuses explicit terms and
        rating tags above it.
        """
        max_rating = validate_rating(max_rating)
        negative_prompt = negative_prompt or ""
        if len(prompt) > self.max_prompt_chars:
            return Decision.block(Category.TOO_LONG, "length.prompt")
        if len(negative_prompt) > self.max_prompt_chars:
            return Decision.block(Category.TOO_LONG, "length.negative_prompt")

        positive_text = normalize(prompt)
        negative_text = normalize(negative_prompt) if negative_prompt else EMPTY
        positive = self.positive_terms.scan(positive_text)
        negative = self.negative_terms.scan(negative_text)

        signals = csam_guard.collect_signals(positive, negative, find_minor_ages(positive_text))
        csam = csam_guard.evaluate(signals, nsfw_capable_model=nsfw_capable_model)
        if csam is not None:
            return Decision.block(Category.CSAM, csam.rule, csam.matched)

        hit = self.optouts.find(positive_text)
        if hit is not None:
            return Decision.block(Category.OPTOUT, "optout.artist", (hit.matched,), optout_id=hit.entry_id)

        for kind, rule in _BLOCKLIST_RULES:
            if kind in positive:
                return Decision.block(Category.BLOCKLIST, rule, positive[kind])

        rating = find_rating_violation(positive, negative, max_rating)
        if rating is not None:
            return Decision.block(Category.RATING, rating.rule, rating.matched)

        return Decision.allow(rating_cap="safe" if signals.youth else None)
