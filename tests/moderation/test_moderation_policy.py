"""The policy as a whole: order of checks, length cap, speed on hostile input, sharing."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.moderation import DEFAULT_MAX_PROMPT_CHARS, Category, Decision, OptOutEntry, PromptPolicy


@pytest.fixture(scope="module")
def policy() -> PromptPolicy:
    return PromptPolicy.build(optouts=[OptOutEntry(1, "Greg Rutkowski")], extra_block_terms=["jane doe"])


def test_an_ordinary_prompt_is_allowed_with_nothing_to_log(policy: PromptPolicy) -> None:
    assert policy.check("score_9, 1girl, smile, cherry blossoms", "lowres") == Decision(allowed=True)


def test_csam_wins_over_every_other_category(policy: PromptPolicy) -> None:
    decision = policy.check("loli, by greg rutkowski, jane doe, nude", max_rating="safe")
    assert decision.category == Category.CSAM


def test_optout_comes_before_blocklist_and_blocklist_before_rating(policy: PromptPolicy) -> None:
    assert policy.check("by greg rutkowski, jane doe, nude", max_rating="safe").category == Category.OPTOUT
    assert policy.check("jane doe, nude", max_rating="safe").category == Category.BLOCKLIST
    assert policy.check("nude", max_rating="safe").category == Category.RATING


def test_a_prompt_over_the_cap_is_refused_before_anything_else(policy: PromptPolicy) -> None:
    assert policy.max_prompt_chars == DEFAULT_MAX_PROMPT_CHARS == 4000
    assert policy.check("a" * 4000).allowed
    decision = policy.check("loli " + "a" * 4000)
    assert (decision.category, decision.rule) == (Category.TOO_LONG, "length.prompt")
    decision = policy.check("cat", "a" * 4001)
    assert (decision.category, decision.rule) == (Category.TOO_LONG, "length.negative_prompt")


def test_the_cap_is_configurable() -> None:
    small = PromptPolicy.build(max_prompt_chars=10)
    assert small.check("a" * 10).allowed
    assert small.check("a" * 11).category == Category.TOO_LONG
    with pytest.raises(ValueError):
        PromptPolicy.build(max_prompt_chars=0)


def test_a_missing_negative_prompt_is_an_empty_one(policy: PromptPolicy) -> None:
    assert policy.check("a cat", None).allowed


ADVERSARIAL = {
    "nested brackets": "(" * 10_000 + "loli" + ")" * 9_996,
    "near misses": "lol lolita lolli lo li " * 870,
    "allow phrases hiding terms": "kid goat, baby blue, nude lipstick, " * 560,
    "repeated blocked term": "cp " * 6_667,
    "spaced letters": "l o l l o l " * 1_667,
    "dots and digits": "1.1." * 5_000,
    "one long token": "a" * 20_000,
    "zero-width padding": "l" + "\u200b" * 19_998 + "i",
    "combining marks": "e\u0301" * 10_000,
    "lora tags": "<lora:" * 3_334,
    "weights": "(a:1.2)" * 2_858,
    "digits before closers": "1)" * 10_000,
    "closing brackets": ")" * 20_000,
}


@pytest.fixture(scope="module")
def wide_policy() -> PromptPolicy:
    return PromptPolicy.build(max_prompt_chars=20_000)


@pytest.mark.parametrize("text", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_a_20000_character_adversarial_prompt_is_decided_fast(wide_policy: PromptPolicy, text: str) -> None:
    # Catches catastrophic (super-linear) behaviour only — quadratic work on 20,000 characters
    # would take minutes; the bound is loose so a busy CI machine never trips it. Timing targets
    # live in bench/moderation.py.
    text = text[:20_000]
    assert len(text) == 20_000
    started = time.perf_counter()
    wide_policy.check(text, text, nsfw_capable_model=True, max_rating="safe")
    assert time.perf_counter() - started < 5.0


def test_the_default_cap_turns_a_20000_character_prompt_away_at_once(policy: PromptPolicy) -> None:
    started = time.perf_counter()
    assert policy.check("(" * 20_000).category == Category.TOO_LONG
    assert time.perf_counter() - started < 0.5


def test_one_policy_serves_many_threads_consistently(policy: PromptPolicy) -> None:
    prompts = ["loli", "1girl, smile", "by greg rutkowski", "child, nude", "jane doe", "kid goat"] * 200
    expected = [policy.check(p) for p in prompts]
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(policy.check, prompts)) == expected


def test_decisions_and_policies_are_immutable(policy: PromptPolicy) -> None:
    decision = policy.check("loli")
    with pytest.raises(AttributeError):
        decision.allowed = True  # type: ignore[misc]
    with pytest.raises(AttributeError):
        policy.max_prompt_chars = 10**9  # type: ignore[misc]


def test_the_engine_imports_neither_web_nor_database_code() -> None:
    probe = (
        "import sys, app.moderation; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette', 'sqlalchemy')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
