"""Account ratings: Pony rating tags injected per max_rating, and what a safe account may not ask."""

from __future__ import annotations

import pytest

from app.moderation import Category, PromptPolicy, apply_rating_tags, stricter_rating


def test_safe_adds_rating_safe_and_negates_the_ratings_above() -> None:
    assert apply_rating_tags("1girl, smile", "blurry", "safe") == (
        "rating_safe, 1girl, smile",
        "blurry, rating_explicit, rating_questionable",
    )


def test_questionable_adds_rating_questionable_and_negates_explicit() -> None:
    assert apply_rating_tags("1girl", "", "questionable") == ("rating_questionable, 1girl", "rating_explicit")


def test_questionable_keeps_a_users_safe_tag() -> None:
    assert apply_rating_tags("rating_safe, 1girl", "", "questionable") == ("rating_safe, 1girl", "rating_explicit")


def test_explicit_changes_nothing() -> None:
    assert apply_rating_tags("1girl, nude", "lowres", "explicit") == ("1girl, nude", "lowres")


def test_positive_tag_goes_after_the_leading_score_and_source_tags() -> None:
    prompt, _ = apply_rating_tags("score_9, score_8_up, source_anime, 1girl", "", "safe")
    assert prompt == "score_9, score_8_up, source_anime, rating_safe, 1girl"
    prompt, _ = apply_rating_tags("score_9, score_8_up", "", "safe")
    assert prompt == "score_9, score_8_up, rating_safe"


def test_tags_already_present_in_any_spelling_are_not_duplicated() -> None:
    prompt, negative = apply_rating_tags("(Rating_Safe:1.1), 1girl", "rating explicit, RATING_QUESTIONABLE", "safe")
    assert prompt == "(Rating_Safe:1.1), 1girl"
    assert negative == "rating explicit, RATING_QUESTIONABLE"
    _, negative = apply_rating_tags("1girl", "rating_explicit, lowres,", "safe")
    assert negative == "rating_explicit, lowres, rating_questionable"


def test_empty_prompts_get_just_the_tags() -> None:
    assert apply_rating_tags("", "", "safe") == ("rating_safe", "rating_explicit, rating_questionable")


def test_unknown_rating_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_rating"):
        apply_rating_tags("1girl", "", "nsfw")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_rating"):
        PromptPolicy.build().check("1girl", max_rating="everything")  # type: ignore[arg-type]


def test_stricter_rating_picks_the_more_restrictive() -> None:
    assert stricter_rating("explicit", "safe") == "safe"
    assert stricter_rating("safe", "explicit") == "safe"
    assert stricter_rating("questionable", None) == "questionable"


@pytest.fixture(scope="module")
def policy() -> PromptPolicy:
    return PromptPolicy.build()


@pytest.mark.parametrize("prompt", ["1girl, nude", "nsfw, landscape", "(sex:1.2)", "n u d e", "nud3 woman"])
def test_safe_accounts_are_refused_explicit_terms(policy: PromptPolicy, prompt: str) -> None:
    decision = policy.check(prompt, max_rating="safe")
    assert (decision.category, decision.rule) == (Category.RATING, "rating.explicit_term")


def test_safe_accounts_are_refused_rating_tags_above_safe(policy: PromptPolicy) -> None:
    for tag in ("rating_explicit", "rating_questionable"):
        decision = policy.check(f"{tag}, 1girl, smile", max_rating="safe")
        assert (decision.category, decision.rule) == (Category.RATING, "rating.tag_above_max")


def test_questionable_accounts_are_refused_only_the_explicit_tag(policy: PromptPolicy) -> None:
    assert policy.check("rating_explicit, 1girl", max_rating="questionable").category == Category.RATING
    assert policy.check("rating_questionable, 1girl, nude", max_rating="questionable").allowed


def test_safe_accounts_may_not_steer_away_from_safe_in_the_negative(policy: PromptPolicy) -> None:
    decision = policy.check("1girl", "rating_safe, sfw", max_rating="safe")
    assert (decision.category, decision.rule) == (Category.RATING, "rating.negative_steering")


def test_safe_accounts_may_ask_for_what_is_not_explicit(policy: PromptPolicy) -> None:
    for prompt in ("sexy red dress", "nude lipstick", "rating_safe, 1girl", "bikini, beach"):
        assert policy.check(prompt, max_rating="safe").allowed, prompt
    assert policy.check("1girl", "nsfw, nude, rating_explicit", max_rating="safe").allowed


def test_explicit_accounts_may_ask_for_explicit_content(policy: PromptPolicy) -> None:
    assert policy.check("rating_explicit, 1girl, nude", nsfw_capable_model=True).allowed
