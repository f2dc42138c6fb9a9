"""Explicit ages under 18, in digits or in words.

Digits are matched on the ``ages`` view of a prompt (never leet-folded, decimals
kept as one token) by an automaton of every minor age in every written form, glued
to its words or not and with its digits spaced out or not: ``15 yo``, ``15yo``,
``1 5 yo``, ``15 y o``, ``15years old``, ``age 15``, ``aged12``, ``age of 15``,
``15th birthday``, ``7th grade``, ``6 months old``… Whole tokens only, so
``1990s``, ``24 years old`` and ``3 cats`` never match, and ``1,000 years old``
reads as ``1 000`` (three digits, never an age).

Ages in words (``fifteen-year-old``) are ordinary terms of kind ``AGE`` in the
term index, so they benefit from its leet folding; the adult ages that contain a
minor one (``twenty one years old``, ``age of one hundred``) are ``ADULT_AGE``
terms that suppress them.

Both come from the same tables, so a phrasing added here is added for digits and
words at once: a cue before the number, optionally hedged (``aged 12``, ``age: twelve``,
``aged about twelve``, ``at the age of only 11``), a suffix after it, optionally after
a half (``12 y/o``, ``12yearsold``, ``sixteen-and-a-half-year-old``, ``16.5 years old``),
an ordinal or a number with a school grade (``5th grader``, ``sixth-grader``,
``grade 5``), a birthday, or a baby's months and weeks.

Deliberate limits:

* Grades 1-12 are all minors' grades (``12th grader`` too: see ``_LAST_SCHOOL_GRADE``);
  ``college senior`` names no grade and is an adult.
* A bare ``12 years`` / ``twelve years`` is an age only as a whole tag (``girl, 12 years, nude``,
  or the prompt's last words), which the ages view marks with a ``,`` token; ``12 years later``
  and ``after 12 years,`` are durations. A bare number (``seventeen``) is never an age. The
  bare-years words are matched on the ages view, so unlike the word terms they get no leet folding.
* School-year words without a number (``middle schooler``, ``high schooler``) are youth
  terms in ``wordlists/youth.txt``, not ages.
"""

from __future__ import annotations

from collections.abc import Iterator

import ahocorasick

from app.moderation.normalize import NormalizedText
from app.moderation.wordlists import TermKind

__all__ = ["age_terms", "find_minor_ages"]

ADULT_AGE = 18

# fmt: off
_AGE_SUFFIXES = (
    "yo", "y o", "yos", "yr", "yrs", "yr old", "yrs old", "year old", "years old", "year olds",
    "years of age", "year of age", "years young",
)
_AGE_CUES = ("age", "aged", "ages", "age of")
# Words people put between the cue and the number ("aged about twelve", "age of only 12"); without them
# the hedge would hide the age from a matcher that expects the number right after the cue.
_HEDGES = (
    "about", "around", "roughly", "approximately", "circa", "maybe", "like", "just", "only", "merely",
    "barely", "nearly", "almost", "under", "below", "not yet", "not even", "at most", "exactly",
)
_AGE_PREFIXES = _AGE_CUES + tuple(f"{cue} {hedge}" for cue in _AGE_CUES for hedge in _HEDGES)
# "sixteen and a half years old": the fraction sits between the number and its suffix.
_FRACTIONS = ("", "and a half ", "and half ")
# Any number of months or weeks is a baby.
_BABY_SUFFIXES = ("month old", "months old", "mo old", "mos old", "week old", "weeks old")
_ORDINAL_SUFFIXES = ("st", "nd", "rd", "th")
_BIRTHDAY = ("birthday",)
_SCHOOL_GRADE = ("grade", "grader", "graders")
# Grades 1-11 are minors. Grade 12 is kept too: most twelfth graders are 17 for much of the year and
# "high schooler" is already a youth term, so "12th grader, nude" must not pass where it would not.
# "college senior" / "college freshman" carry no grade number and are adults.
_LAST_SCHOOL_GRADE = 12

_NUMBER_WORDS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
)
_ORDINAL_WORDS = (
    "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
    "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth",
)
_TENS_WORDS = ("twenty", "thirty", "forty", "fourty", "fifty", "sixty", "seventy", "eighty", "ninety")
_LARGE_WORDS = ("hundred", "thousand", "million")
# A bare "12 years" is an age only as a whole tag ("girl, 12 years, nude"), never "12 years later".
_BARE_YEARS = ("years", "year")
_TAG_END = ","
# ...unless the tag is a duration: "after 12 years,", "for twelve years,".
_DURATION_WORDS = ("after", "for", "in", "over", "within", "since", "last", "past", "next", "every")
# fmt: on


def age_terms() -> Iterator[tuple[TermKind, str]]:
    """Minor ages in words (``AGE``) and the adult ages that contain them (``ADULT_AGE``)."""
    for word in _NUMBER_WORDS:
        for suffix in _suffixed(_AGE_SUFFIXES + _BABY_SUFFIXES):
            yield TermKind.AGE, f"{word} {suffix}"
        for prefix in _AGE_PREFIXES:
            yield TermKind.AGE, f"{prefix} {word}"
    for word in _NUMBER_WORDS[1 : _LAST_SCHOOL_GRADE + 1]:
        yield TermKind.AGE, f"grade {word}"
    for position, word in enumerate(_ORDINAL_WORDS, start=1):
        yield TermKind.AGE, f"{word} birthday"
        if position <= _LAST_SCHOOL_GRADE:
            for grade in _SCHOOL_GRADE:
                yield TermKind.AGE, f"{word} {grade}"
    yield from _adult_word_ages()


def _adult_word_ages() -> Iterator[tuple[TermKind, str]]:
    """Adult ages whose last words read as a minor one: ``twenty one years old``, ``aged one hundred``."""
    for unit in _NUMBER_WORDS[1:10]:
        for suffix in _suffixed(_AGE_SUFFIXES):
            for tens in _TENS_WORDS:
                yield TermKind.ADULT_AGE, f"{tens} {unit} {suffix}"
            for large in _LARGE_WORDS:
                yield TermKind.ADULT_AGE, f"{large} and {unit} {suffix}"
    for word in _NUMBER_WORDS[1:]:
        for prefix in _AGE_PREFIXES:
            for large in _LARGE_WORDS:
                yield TermKind.ADULT_AGE, f"{prefix} {word} {large}"


def _suffixed(suffixes: tuple[str, ...]) -> Iterator[str]:
    """Each suffix, bare and after a half (``and a half years old``)."""
    for fraction in _FRACTIONS:
        for suffix in suffixes:
            yield f"{fraction}{suffix}"


def find_minor_ages(text: NormalizedText) -> tuple[str, ...]:
    """Minor ages found on the ages view of ``text`` (digits, and bare ``twelve years`` tags), as canonical
    phrases (``"15 yo"``). An adult age whose span holds a minor one (``twenty one years,``) hides it."""
    if not text.ages:
        return ()
    # The end of the prompt ends its last tag.
    haystack = f" {text.ages} {_TAG_END} "
    minors: list[tuple[int, int, str]] = []
    adults: list[tuple[int, int]] = []
    for end, (phrase, length) in _DIGIT_AUTOMATON.iter(haystack):
        if phrase is None:
            adults.append((end - length, end))
        else:
            minors.append((end - length, end, phrase))
    found = {phrase for start, end, phrase in minors if not any(a <= start and end <= b for a, b in adults)}
    return tuple(sorted(found))


def _written(number: int) -> list[str]:
    """How a number appears in the ages view: ``15``, the spaced-out ``1 5``, zero-padded ``05``."""
    forms = [str(number)]
    if number < 10:
        forms.append(f"0{number}")
    else:
        forms.append(" ".join(str(number)))
    return forms


def _glued(number: str, suffix: str) -> tuple[str, ...]:
    """A suffix after its number, apart or glued to it, with its own spaces or without them
    (``15 years old``, ``15years old``, ``15yearsold``)."""
    return (f"{number} {suffix}", f"{number}{suffix}", f"{number}{suffix.replace(' ', '')}")


def _halves(age: int, number: str) -> Iterator[str]:
    """``16 and a half``, and ``16.5``, which the ages view keeps as the one token ``16#5``. Not under 2:
    ``(woman:1.5) years old`` is an A1111 weight, not a baby."""
    for fraction in _FRACTIONS:
        if fraction:
            yield f"{number} {fraction.strip()}"
    if age >= 2:
        yield f"{number}#5"


def _digit_keys() -> Iterator[tuple[str, str | None]]:
    """(key, canonical phrase) for every minor age in digits, glued or not to its words."""
    for age in range(ADULT_AGE):
        for number in _written(age):
            for suffix in _AGE_SUFFIXES:
                for key in _glued(number, suffix):
                    yield key, f"{age} {suffix}"
                for half in _halves(age, number):
                    for key in _glued(half, suffix):
                        yield key, f"{age} {suffix}"
            for prefix in _AGE_PREFIXES:
                for key in (f"{prefix} {number}", f"{prefix}{number}"):
                    yield key, f"{prefix} {age}"
            if age == 0:
                continue
            if age <= _LAST_SCHOOL_GRADE:
                for key in (f"grade {number}", f"grade{number}"):
                    yield key, f"grade {age}"
            events = _BIRTHDAY + (_SCHOOL_GRADE if age <= _LAST_SCHOOL_GRADE else ())
            for ordinal in _ORDINAL_SUFFIXES:
                for event in events:
                    for key in (f"{number} {ordinal} {event}", f"{number}{ordinal} {event}"):
                        yield key, f"{age}{ordinal} {event}"
    for count in range(100):
        for number in _written(count):
            for suffix in _BABY_SUFFIXES:
                for key in _glued(number, suffix):
                    yield key, f"{count} {suffix}"
    yield from _tag_keys()


def _tag_keys() -> Iterator[tuple[str, str | None]]:
    """Ages that need the tag boundary the ages view keeps: a bare ``12 years,`` / ``twelve years,`` and a
    cue split from its number (``age, 15``). ``None`` marks the adult ages that contain a minor one."""
    for age in range(ADULT_AGE):
        for number in [*_written(age), _NUMBER_WORDS[age]]:
            for unit in _BARE_YEARS:
                for key in (f"{number} {unit} {_TAG_END}", f"{number}{unit} {_TAG_END}"):
                    yield key, f"{age} {unit}"
                for word in _DURATION_WORDS:
                    yield f"{word} {number} {unit} {_TAG_END}", None
            for cue in _AGE_CUES:
                yield f"{cue} {_TAG_END} {number}", f"{cue} {age}"
    for unit_word in _NUMBER_WORDS[1:10]:
        for unit in _BARE_YEARS:
            for tens in _TENS_WORDS:
                yield f"{tens} {unit_word} {unit} {_TAG_END}", None
            for large in _LARGE_WORDS:
                yield f"{large} and {unit_word} {unit} {_TAG_END}", None


def _build_digit_automaton() -> ahocorasick.Automaton:
    automaton = ahocorasick.Automaton()
    for key, phrase in _digit_keys():
        padded = f" {key} "
        # First spelling wins: "15yo" is both "15" + "yo" and "15" + "y o" without its space.
        if not automaton.exists(padded):
            automaton.add_word(padded, (phrase, len(padded)))
    automaton.make_automaton()
    return automaton


# Built at import (a few milliseconds) so no request pays for it and no two threads race to build it.
_DIGIT_AUTOMATON = _build_digit_automaton()
