"""Normalisation: what each obfuscation folds to, in the views the rules match against."""

from __future__ import annotations

import pytest

from app.moderation import normalize


def words(text: str) -> set[str]:
    view = normalize(text)
    return set(view.skeleton_spaced.split()) | set(view.skeleton_joined.split())


LOLI = normalize("loli").skeleton_spaced


@pytest.mark.parametrize(
    "obfuscated",
    [
        "LOLI",  # case
        "ｌｏｌｉ",  # fullwidth (NFKC)
        "𝐥𝐨𝐥𝐢",  # mathematical bold (NFKC)
        "ⓛⓞⓛⓘ",  # circled letters (NFKC)
        "🅛🅞🅛🅘",  # negative circled letters (no decomposition)
        "lólí",  # diacritics
        "l̶o̶l̶i̶",  # combining strike-through
        "lοlі",  # Greek omicron, Cyrillic i
        "ʟᴏʟɪ",  # small capitals
        "l0l1",  # leetspeak
        "lo\u200bli",  # zero-width space
        "lo\u00adli",  # soft hyphen
        "l.o.l.i",  # dots
        "lo-li",  # hyphen
        "lo_li",  # underscore
        "l o l i",  # spaced letters
        "l·o·l·i",  # middle dots
        "(loli:1.3)",  # weight syntax
        "((loli))",
        "[loli]",
        "[loli|woman]",  # alternation
        "[woman:loli:0.5]",  # prompt editing
        "<lora:loli:0.8>",  # LoRA tag
        "<lyco:loli:1>",
        "<hypernet:loli:0.5>",
        "embedding:loli",
    ],
)
def test_obfuscations_fold_to_the_plain_word(obfuscated: str) -> None:
    assert LOLI in words(obfuscated)


def test_separators_split_words_in_one_view_and_glue_them_in_the_other() -> None:
    view = normalize("kid_goat, little-girl")
    assert view.spaced == "kid goat little girl"
    assert view.joined == "kidgoat littlegirl"


def test_spaced_out_letters_are_glued_but_ordinary_words_stay_apart() -> None:
    assert normalize("a cat and l o l i").joined == "a cat and loli"
    assert normalize("a l o l i").runs == (normalize("aloli").skeleton_spaced,)


def test_break_keyword_is_dropped_so_its_neighbours_meet() -> None:
    assert normalize("little BREAK girl").spaced == "little girl"
    assert normalize("BREAKFAST").spaced == "breakfast"


def test_leading_at_is_a_mention_but_inner_at_and_dollar_are_leet() -> None:
    assert normalize("@ann").spaced == "ann"
    assert normalize("$h0t@").skeleton_spaced == "shota"


def test_age_view_keeps_digits_and_never_reads_a_weight_as_an_age() -> None:
    assert normalize("(14yo)").ages == "14yo"
    assert normalize("15-year-old").ages == "15 year old"
    assert normalize("15 y.o.").ages == "15 y o"
    assert normalize("(mature age:1.5)").ages == "mature age 1#5"
    assert normalize("1,000 years").ages == "1 000 years"
    assert normalize("no digits here").ages == ""
    # A comma that ends a tag stays, so "12 years," reads apart from "12 years later".
    assert normalize("girl, twelve years, nude").ages == "girl , twelve years , nude"


def test_weight_numbers_leave_the_term_views_so_neighbours_stay_adjacent() -> None:
    view = normalize("(little:1.2) girl, [cat:dog:10], <lora:style_v2:0.8>")
    assert view.spaced == "little girl cat dog lora style v2"
    # The ages view keeps every number: it decides for itself what a number means.
    assert view.ages == "little 1#2 girl , cat dog 10 , lora style v2 0#8"


@pytest.mark.parametrize("repeat", [1, 100])  # few dots are walked, many are replaced in bulk
def test_decimals_read_the_same_however_many_dots_a_prompt_has(repeat: int) -> None:
    view = normalize("(age:1.5), 15 y.o., 1..2, .5, 5., v1.5.2; " * repeat)
    assert view.ages == " ".join(["age 1#5 , 15 y o , 1 2 , 5 , 5 , v1#5#2"] * repeat)


def test_unicode_digits_become_ascii_digits() -> None:
    assert normalize("１５ yo").ages == "15 yo"
    assert normalize("⑮yo").ages == "15yo"
    assert normalize("١٥ yo").ages == "15 yo"  # Arabic-Indic digits


def test_invisible_and_control_characters_vanish_or_separate() -> None:
    assert normalize("\u202eevil\u202c").spaced == "evil"
    assert normalize("a\x00b\tc\nd").spaced == "a b c d"
    assert normalize("x\u3164y").spaced == "xy"  # Hangul filler


@pytest.mark.parametrize("text", ["", "   ", "((((", "\ud800", "\U0010ffff", "🙂" * 5, "\x00" * 3])
def test_odd_input_never_raises(text: str) -> None:
    normalize(text)
