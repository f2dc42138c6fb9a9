"""The CSAM guard: always on, and no parameter of the policy can turn it off.

It blocks a prompt when

* the positive prompt holds an always-blocked term (``loli``, ``shota``, ``cp``,
  ``jailbait``, ``pedo``…) — rule ``csam.always_blocked``;
* a youth signal meets a sexual signal. Youth signals: an explicit age under 18
  (``csam.explicit_age``), a youth term (``csam.youth_term``) or adult terms in
  the negative prompt steering towards youth (``csam.negative_youth_steering``).
  Sexual signals: an explicit sexual term (``nude``, ``nsfw``…), a sexualising
  term (``lingerie``, ``seductive``, ``upskirt``…), Pony's ``rating_explicit`` /
  ``rating_questionable`` tag, or a negative prompt steering towards nudity
  (``clothes``, ``censored``, ``rating_safe``…). On an NSFW-capable model the
  bar is lower: any suggestive term (``bikini``, ``thighs``, ``kissing``…) is a
  sexual signal too.

Ages are read from the positive prompt only; the sexual signal may come from either
prompt (``aged twelve`` with ``clothes`` in the negative prompt blocks). An age in the
negative prompt (``12yo, child`` there) steers *away* from minors, like every other youth
term there, and is no youth signal.

A youth signal alone is allowed (``teenage mutant ninja turtles``, ``a child
flying a kite``); :class:`~app.moderation.policy.Decision` then carries
``rating_cap="safe"`` so the caller generates it with safe rating tags.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.moderation.term_index import Hits
from app.moderation.wordlists import TermKind

__all__ = ["CsamFinding", "CsamSignals", "collect_signals", "evaluate"]

_NEGATIVE = "negative:"


@dataclass(frozen=True, slots=True)
class CsamSignals:
    always_blocked: tuple[str, ...]
    minor_ages: tuple[str, ...]
    youth_terms: tuple[str, ...]
    negative_youth_steering: tuple[str, ...]
    sexual: tuple[str, ...]
    suggestive: tuple[str, ...]

    @property
    def youth(self) -> tuple[str, ...]:
        return self.minor_ages + self.youth_terms + self.negative_youth_steering


@dataclass(frozen=True, slots=True)
class CsamFinding:
    rule: str
    matched: tuple[str, ...]


def collect_signals(positive: Hits, negative: Hits, minor_ages: tuple[str, ...]) -> CsamSignals:
    """Sort the terms found in both prompts into the guard's signals."""
    return CsamSignals(
        always_blocked=positive[TermKind.CSAM_ALWAYS],
        minor_ages=minor_ages + positive[TermKind.AGE],
        youth_terms=positive[TermKind.YOUTH],
        negative_youth_steering=_from_negative(negative[TermKind.NEGATIVE_YOUTH_STEERING]),
        sexual=(
            positive[TermKind.SEXUAL]
            + positive[TermKind.SEXUALIZING]
            + positive[TermKind.RATING_EXPLICIT]
            + positive[TermKind.RATING_QUESTIONABLE]
            + _from_negative(negative[TermKind.NEGATIVE_NSFW_STEERING] + negative[TermKind.RATING_SAFE])
        ),
        suggestive=positive[TermKind.SUGGESTIVE],
    )


def evaluate(signals: CsamSignals, *, nsfw_capable_model: bool) -> CsamFinding | None:
    """The CSAM rule the signals break, or ``None``."""
    if signals.always_blocked:
        return CsamFinding("csam.always_blocked", signals.always_blocked)
    sexual = signals.sexual + (signals.suggestive if nsfw_capable_model else ())
    if not sexual:
        return None
    for rule, youth in (
        ("csam.explicit_age", signals.minor_ages),
        ("csam.youth_term", signals.youth_terms),
        ("csam.negative_youth_steering", signals.negative_youth_steering),
    ):
        if youth:
            return CsamFinding(rule, youth + sexual)
    return None


def _from_negative(terms: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(_NEGATIVE + term for term in terms)
