"""Operator word lists: extra block and allow files, their format and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.moderation import Category, PromptPolicy, WordlistError, parse_wordlist, read_wordlist
from app.moderation.wordlists import BUILTIN_FILES, builtin_terms


def test_format_is_one_term_per_line_with_comments() -> None:
    text = "# celebrities\nJane Doe\n\n  john smith   # added 2026-11\nc#sharp\nJane Doe\n"
    assert parse_wordlist(text) == ("Jane Doe", "john smith", "c#sharp")


def test_a_line_with_nothing_to_match_names_file_and_line() -> None:
    with pytest.raises(WordlistError, match=r"ops\.txt:2"):
        parse_wordlist("fine\n!!!\n", "ops.txt")


def test_a_missing_file_is_a_wordlist_error(tmp_path: Path) -> None:
    with pytest.raises(WordlistError, match="cannot read"):
        read_wordlist(tmp_path / "absent.txt")


def test_every_builtin_list_loads_and_is_non_empty() -> None:
    for name in BUILTIN_FILES:
        assert builtin_terms(name), name


def test_extra_block_file_blocks_its_terms_in_every_form(tmp_path: Path) -> None:
    block_file = tmp_path / "block.txt"
    block_file.write_text("# operator additions\nJane Doe\ndeepfake\n", encoding="utf-8")
    policy = PromptPolicy.build(extra_block_files=[block_file])
    for prompt in ("photo of jane doe", "JANE_DOE", "(jane-doe:1.2)", "d33pf4ke video"):
        decision = policy.check(prompt)
        assert (decision.category, decision.rule) == (Category.BLOCKLIST, "blocklist.operator"), prompt
    assert policy.check("jane doesn't mind").allowed


def test_extra_block_terms_can_be_passed_directly() -> None:
    policy = PromptPolicy.build(extra_block_terms=["swastika"])
    assert policy.check("a swastika flag").category == Category.BLOCKLIST


def test_builtin_blocklist_blocks_and_reports_its_rule() -> None:
    decision = PromptPolicy.build().check("bestiality")
    assert (decision.category, decision.rule, decision.matched) == (
        Category.BLOCKLIST,
        "blocklist.builtin",
        ("bestiality",),
    )


def test_allow_file_phrases_hide_the_matches_they_contain(tmp_path: Path) -> None:
    allow_file = tmp_path / "allow.txt"
    allow_file.write_text("jane doe foundation\n", encoding="utf-8")
    policy = PromptPolicy.build(extra_block_terms=["jane doe"], allow_files=[allow_file])
    assert policy.check("logo of the jane doe foundation").allowed
    assert policy.check("jane doe at the jane doe foundation").category == Category.BLOCKLIST


def test_an_allow_term_equal_to_a_builtin_blocklist_term_lifts_it() -> None:
    assert PromptPolicy.build().check("incest").category == Category.BLOCKLIST
    assert PromptPolicy.build(allow_terms=["incest"]).check("incest").allowed


def test_allow_terms_also_hide_sexual_words_for_the_rating_check() -> None:
    policy = PromptPolicy.build(allow_terms=["nude beach volleyball"])
    assert policy.check("nude beach volleyball poster", max_rating="safe").allowed


def test_an_unreadable_operator_file_fails_the_build(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(WordlistError):
        PromptPolicy.build(extra_block_files=[bad])
