"""Artist opt-outs: every common way of naming an artist is found, whole tokens only."""

from __future__ import annotations

import pytest

from app.moderation import (
    Category,
    OptOutEntry,
    OptOutMatcher,
    PromptPolicy,
    is_matchable_artist_name,
)

ENTRIES = (
    OptOutEntry(1, "Greg Rutkowski", aliases=("Grzegorz Rutkowski",)),
    OptOutEntry(2, "Ann"),
    OptOutEntry(3, "Zdzisław Beksiński"),
    OptOutEntry(4, "Moon", require_context=True),
)


@pytest.fixture(scope="module")
def matcher() -> OptOutMatcher:
    return OptOutMatcher.build(ENTRIES)


@pytest.mark.parametrize(
    "prompt",
    [
        "greg rutkowski",
        "by Greg Rutkowski",
        "artist:greg_rutkowski",
        "Greg Rutkowski (artist)",
        "greg_rutkowski_style",
        "in the style of Greg Rutkowski",
        "greg-rutkowski",
        "GREG  RUTKOWSKI",
        "gregrutkowski",
        "(greg rutkowski:1.2)",
        "((by greg rutkowski))",
        "[greg rutkowski|alphonse mucha]",
        "[alphonse mucha:greg rutkowski:0.4]",
        "<lora:greg_rutkowski:0.7>",
        "grég rütkowski",
        "ɢʀᴇɢ ʀᴜᴛᴋᴏᴡsᴋɪ",
        "greg\u200b rutkowski",
        "by grzegorz rutkowski",
    ],
)
def test_every_common_form_names_the_artist(matcher: OptOutMatcher, prompt: str) -> None:
    hit = matcher.find(f"a castle on a hill, {prompt}, dramatic lighting")
    assert hit is not None
    assert (hit.entry_id, hit.name) == (1, "Greg Rutkowski")


def test_names_with_letters_that_have_no_decomposition_match_their_ascii_spelling(matcher: OptOutMatcher) -> None:
    hit = matcher.find("zdzislaw beksinski, dystopian")
    assert hit is not None and hit.entry_id == 3


@pytest.mark.parametrize("prompt", ["announcement", "annie", "joanna", "canned food", "rutkowski", "greg"])
def test_matching_is_whole_token(matcher: OptOutMatcher, prompt: str) -> None:
    assert matcher.find(prompt) is None


def test_a_bare_mention_of_a_name_counts(matcher: OptOutMatcher) -> None:
    hit = matcher.find("portrait, ann, oil painting")
    assert hit is not None and hit.entry_id == 2


def test_require_context_names_match_only_next_to_an_artist_cue(matcher: OptOutMatcher) -> None:
    assert matcher.find("full moon over the sea") is None
    for prompt in ("by moon", "artist:moon", "moon (artist)", "moon_style", "in the style of moon"):
        hit = matcher.find(prompt)
        assert hit is not None and hit.entry_id == 4, prompt


def test_one_character_names_always_need_an_artist_cue() -> None:
    matcher = OptOutMatcher.build([OptOutEntry(10, "X")])
    assert matcher.find("x-ray of a hand, x") is None
    hit = matcher.find("portrait by X")
    assert hit is not None and hit.entry_id == 10


def test_leet_is_not_folded_for_artist_names() -> None:
    matcher = OptOutMatcher.build([OptOutEntry(9, "ili")])
    assert matcher.find("ill, lil, 1l1") is None


def test_unmatchable_names_are_reported_not_fatal() -> None:
    matcher = OptOutMatcher.build([OptOutEntry(7, "!!!"), OptOutEntry(8, "Sam")])
    assert matcher.unmatchable == (7,)
    assert not is_matchable_artist_name("!!!")
    assert is_matchable_artist_name("Sam")


def test_policy_refuses_an_opted_out_artist_with_its_id() -> None:
    policy = PromptPolicy.build(optouts=ENTRIES)
    decision = policy.check("castle, by greg rutkowski")
    assert (decision.allowed, decision.category, decision.optout_id) == (False, Category.OPTOUT, 1)
    assert decision.rule == "optout.artist"


def test_artists_in_the_negative_prompt_steer_away_and_are_allowed() -> None:
    policy = PromptPolicy.build(optouts=ENTRIES)
    assert policy.check("castle", "greg rutkowski").allowed


def test_with_optouts_rebuilds_only_when_the_list_changes() -> None:
    policy = PromptPolicy.build(optouts=ENTRIES)
    assert policy.with_optouts(list(ENTRIES)) is policy
    reloaded = policy.with_optouts([OptOutEntry(5, "Alphonse Mucha")])
    assert reloaded is not policy
    assert reloaded.positive_terms is policy.positive_terms  # word lists are shared, not rebuilt
    assert reloaded.check("by greg rutkowski").allowed
    assert reloaded.check("by alphonse mucha").optout_id == 5
    # The old policy is untouched: replicas can swap references atomically.
    assert policy.check("by greg rutkowski").optout_id == 1


def test_with_optouts_accepts_a_prebuilt_matcher() -> None:
    matcher = OptOutMatcher.build([OptOutEntry(6, "Wlop")])
    policy = PromptPolicy.build().with_optouts(matcher)
    assert policy.optouts is matcher
    assert policy.check("wlop, portrait").optout_id == 6


def test_aliases_given_as_a_list_are_stored_as_a_tuple() -> None:
    entry = OptOutEntry(1, "A B", aliases=["C D"])
    assert entry.aliases == ("C D",)
    assert entry == OptOutEntry(1, "A B", aliases=("C D",))
