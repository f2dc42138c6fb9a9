"""The CSAM guard: what blocks, what a youth term alone may do, and that nothing turns it off."""

from __future__ import annotations

import pytest

from app.moderation import Category, PromptPolicy


@pytest.fixture(scope="module")
def policy() -> PromptPolicy:
    return PromptPolicy.build()


@pytest.mark.parametrize("term", ["loli", "shota", "cp", "jailbait", "pedo", "lolicon", "paedophile", "pedobear"])
def test_always_blocked_terms_block_alone_on_any_model_and_rating(policy: PromptPolicy, term: str) -> None:
    for nsfw in (False, True):
        for rating in ("safe", "questionable", "explicit"):
            decision = policy.check(f"a picture, {term}", nsfw_capable_model=nsfw, max_rating=rating)
            assert (decision.category, decision.rule) == (Category.CSAM, "csam.always_blocked")


@pytest.mark.parametrize(
    ("prompt", "age"),
    [
        ("15 years old", "15 years old"),
        ("15yo", "15 yo"),
        ("15 y/o", "15 y o"),
        ("age 15", "age 15"),
        ("fifteen-year-old", "fifteen year old"),
        ("aged 12", "aged 12"),
        ("1 5 yo", "15 yo"),
        ("(14yo)", "14 yo"),
        ("15-year-old", "15 year old"),
    ],
)
def test_every_written_form_of_a_minor_age_with_a_sexual_term_blocks(
    policy: PromptPolicy, prompt: str, age: str
) -> None:
    decision = policy.check(f"1girl, {prompt}, nude")
    assert decision.rule == "csam.explicit_age"
    assert age in decision.matched


@pytest.mark.parametrize("adult", ["18 year old woman", "24 years old", "twenty-one-year-old", "age 30", "1990s"])
def test_adult_ages_and_years_are_not_minor_ages(policy: PromptPolicy, adult: str) -> None:
    assert policy.check(f"{adult}, nude", nsfw_capable_model=True).allowed


@pytest.mark.parametrize("youth", ["child", "kid", "toddler", "preteen", "underage", "schoolgirl", "teen", "15yo"])
def test_youth_alone_is_allowed_but_capped_at_a_safe_rating(policy: PromptPolicy, youth: str) -> None:
    for nsfw in (False, True):
        decision = policy.check(f"{youth} reading a book in a library", nsfw_capable_model=nsfw)
        assert decision.allowed
        assert decision.rating_cap == "safe"


def test_youth_with_a_sexual_term_blocks_on_every_model(policy: PromptPolicy) -> None:
    decision = policy.check("child, naked")
    assert (decision.category, decision.rule) == (Category.CSAM, "csam.youth_term")
    assert set(decision.matched) == {"child", "naked"}


def test_youth_with_a_sexualising_term_blocks_on_every_model(policy: PromptPolicy) -> None:
    assert policy.check("little girl, lingerie").category == Category.CSAM


@pytest.mark.parametrize("tag", ["rating_explicit", "rating_questionable", "(Rating_Explicit:1.1)"])
def test_pony_rating_tags_are_a_sexual_signal(policy: PromptPolicy, tag: str) -> None:
    assert policy.check(f"{tag}, teen").category == Category.CSAM


def test_suggestive_terms_only_count_on_an_nsfw_capable_model(policy: PromptPolicy) -> None:
    assert policy.check("child, bikini, beach", nsfw_capable_model=False).allowed
    decision = policy.check("child, bikini, beach", nsfw_capable_model=True)
    assert (decision.category, decision.rule) == (Category.CSAM, "csam.youth_term")


def test_adult_terms_in_the_negative_prompt_are_a_youth_signal(policy: PromptPolicy) -> None:
    decision = policy.check("1girl, nude", "adult, mature")
    assert decision.rule == "csam.negative_youth_steering"
    assert "negative:adult" in decision.matched
    # The same words in the positive prompt describe an adult.
    assert policy.check("1girl, nude, adult, mature").allowed


def test_clothing_in_the_negative_prompt_is_a_sexual_signal(policy: PromptPolicy) -> None:
    decision = policy.check("child on a beach", "clothes, censored")
    assert decision.category == Category.CSAM
    assert "negative:clothes" in decision.matched


def test_guard_terms_in_the_negative_prompt_steer_away_and_are_allowed(policy: PromptPolicy) -> None:
    decision = policy.check("1girl, nude, rating_explicit", "loli, child, 15yo, teen", nsfw_capable_model=True)
    assert decision.allowed


def test_explicit_age_outranks_youth_term_in_the_rule(policy: PromptPolicy) -> None:
    assert policy.check("child, 12yo, nude").rule == "csam.explicit_age"


def test_allow_phrases_hide_the_youth_words_they_contain_only(policy: PromptPolicy) -> None:
    assert policy.check("kid goat, nude", nsfw_capable_model=True).allowed
    assert policy.check("kid goat and a kid, nude").category == Category.CSAM


def test_csam_exception_names_do_not_shield_the_bare_term(policy: PromptPolicy) -> None:
    assert policy.check("shota aizawa, shirtless", nsfw_capable_model=True).allowed
    assert policy.check("shota aizawa and a shota").category == Category.CSAM


def test_no_parameter_disables_the_guard() -> None:
    with pytest.raises(ValueError, match="CSAM-guard term"):
        PromptPolicy.build(allow_terms=["loli"])
    with pytest.raises(ValueError, match="CSAM-guard term"):
        PromptPolicy.build(allow_terms=["child"])
    # A longer allow phrase never hides an always-blocked term inside it.
    permissive = PromptPolicy.build(allow_terms=["loli girl"])
    assert permissive.check("loli girl").category == Category.CSAM
    for rating in ("safe", "questionable", "explicit"):
        assert permissive.check("loli", max_rating=rating).category == Category.CSAM
