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
_AGE_PREFIXES = ("age", "aged", "ages", "age of")
# Any number of months or weeks is a baby.
_BABY_SUFFIXES = ("month old", "months old", "mo old", "mos old", "week old", "weeks old")
_ORDINAL_SUFFIXES = ("st", "nd", "rd", "th")
_BIRTHDAY = ("birthday",)
_SCHOOL_GRADE = ("grade", "grader", "graders")
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
# fmt: on


def age_terms() -> Iterator[tuple[TermKind, str]]:
    """Minor ages in words (``AGE``) and the adult ages that contain them (``ADULT_AGE``)."""
    for word in _NUMBER_WORDS:
        for suffix in _AGE_SUFFIXES + _BABY_SUFFIXES:
            yield TermKind.AGE, f"{word} {suffix}"
        for prefix in _AGE_PREFIXES:
            yield TermKind.AGE, f"{prefix} {word}"
    for position, word in enumerate(_ORDINAL_WORDS, start=1):
        yield TermKind.AGE, f"{word} birthday"
        if position <= _LAST_SCHOOL_GRADE:
            for grade in _SCHOOL_GRADE:
                yield TermKind.AGE, f"{word} {grade}"
    for unit in _NUMBER_WORDS[1:10]:
        for suffix in _AGE_SUFFIXES:
            for tens in _TENS_WORDS:
                yield TermKind.ADULT_AGE, f"{tens} {unit} {suffix}"
            for large in _LARGE_WORDS:
                yield TermKind.ADULT_AGE, f"{large} and {unit} {suffix}"
    for word in _NUMBER_WORDS[1:]:
        for prefix in _AGE_PREFIXES:
            for large in _LARGE_WORDS:
                yield TermKind.ADULT_AGE, f"{prefix} {word} {large}"


def find_minor_ages(text: NormalizedText) -> tuple[str, ...]:
    """Minor ages written with digits in ``text``, as canonical phrases (``"15 yo"``)."""
    if not text.ages:
        return ()
    found = {phrase for _end, phrase in _DIGIT_AUTOMATON.iter(f" {text.ages} ")}
    return tuple(sorted(found))


def _written(number: int) -> list[str]:
    """How a number appears in the ages view: ``15``, the spaced-out ``1 5``, zero-padded ``05``."""
    forms = [str(number)]
    if number < 10:
        forms.append(f"0{number}")
    else:
        forms.append(" ".join(str(number)))
    return forms


def _digit_keys() -> Iterator[tuple[str, str]]:
    """(key, canonical phrase) for every minor age in digits, glued or not to its words."""
    for age in range(ADULT_AGE):
        for number in _written(age):
            for suffix in _AGE_SUFFIXES:
                for key in (f"{number} {suffix}", f"{number}{suffix}"):
                    yield key, f"{age} {suffix}"
            for prefix in _AGE_PREFIXES:
                for key in (f"{prefix} {number}", f"{prefix}{number}"):
                    yield key, f"{prefix} {age}"
            if age == 0:
                continue
            events = _BIRTHDAY + (_SCHOOL_GRADE if age <= _LAST_SCHOOL_GRADE else ())
            for ordinal in _ORDINAL_SUFFIXES:
                for event in events:
                    for key in (f"{number} {ordinal} {event}", f"{number}{ordinal} {event}"):
                        yield key, f"{age}{ordinal} {event}"
    for count in range(100):
        for number in _written(count):
            for suffix in _BABY_SUFFIXES:
                for key in (f"{number} {suffix}", f"{number}{suffix}"):
                    yield key, f"{count} {suffix}"


def _build_digit_automaton() -> ahocorasick.Automaton:
    automaton = ahocorasick.Automaton()
    for key, phrase in _digit_keys():
        automaton.add_word(f" {key} ", phrase)
    automaton.make_automaton()
    return automaton


# Built at import (a few milliseconds) so no request pays for it and no two threads race to build it.
_DIGIT_AUTOMATON = _build_digit_automaton()
