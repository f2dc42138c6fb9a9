"""The labelled corpus: every blocked prompt is refused, no benign prompt is."""

from __future__ import annotations

import pytest
from moderation_corpus import Case, load_corpus

from app.moderation import Category, Decision, PromptPolicy

BLOCKED, BENIGN = load_corpus()

# Every obfuscation the normaliser undoes has blocked cases in the corpus.
OBFUSCATION_CLASSES = {
    "nfkc",
    "diacritics",
    "homoglyph",
    "leet",
    "zero_width",
    "separators",
    "spaced_letters",
    "weights",
    "alternation",
    "prompt_editing",
    "break",
    "lora",
    "negative_steering",
}


@pytest.fixture(scope="module")
def policy() -> PromptPolicy:
    return PromptPolicy.build()


def _check(policy: PromptPolicy, case: Case, nsfw: bool) -> Decision:
    return policy.check(case.prompt, case.negative, nsfw_capable_model=nsfw, max_rating=case.rating)


@pytest.mark.parametrize("case", BLOCKED, ids=str)
def test_blocked_prompt_is_refused_with_its_category(policy: PromptPolicy, case: Case) -> None:
    for nsfw in case.model_flags:
        decision = _check(policy, case, nsfw)
        assert not decision.allowed, f"{case} passed on nsfw_capable_model={nsfw}"
        assert decision.category == Category(case.category)
        assert decision.rule


@pytest.mark.parametrize("case", BENIGN, ids=str)
def test_benign_prompt_is_allowed(policy: PromptPolicy, case: Case) -> None:
    for nsfw in case.model_flags:
        decision = _check(policy, case, nsfw)
        assert decision.allowed, f"{case} refused on nsfw_capable_model={nsfw}: {decision.rule} {decision.matched}"


def test_corpus_covers_every_obfuscation_class() -> None:
    present = {case.cls for case in BLOCKED}
    assert present >= OBFUSCATION_CLASSES, OBFUSCATION_CLASSES - present


def test_corpus_has_benign_look_alikes_for_every_guarded_word_family() -> None:
    classes = {case.cls for case in BENIGN}
    assert {"lookalike", "numbers", "youth_alone", "substring", "allow", "negative"} <= classes
