"""Word lists: what each list means, and how list files are read.

The built-in lists are plain-text files in ``app/moderation/wordlists/`` (one term per
line, ``#`` starts a comment, blank lines ignored), so an operator can review and
extend them without touching code. A term is matched whole-token after the same
normalisation as prompts (see :mod:`app.moderation.normalize`), so a list holds
``school girl`` once and it matches ``School_Girl``, ``schoolgirl``, ``sch00lg1rl``.
"""

from __future__ import annotations

import os
from enum import StrEnum
from functools import cache
from importlib import resources

from app.moderation.normalize import normalize

__all__ = ["BUILTIN_FILES", "TermKind", "WordlistError", "builtin_terms", "parse_wordlist", "read_wordlist"]


class TermKind(StrEnum):
    """What a matched term means to the rules."""

    CSAM_ALWAYS = "csam_always"  # blocks on its own (loli, shota, cp, jailbait, pedo…)
    CSAM_EXCEPTION = "csam_exception"  # a longer phrase that is not a CSAM term ("shota aizawa")
    YOUTH = "youth"  # indicates a minor (child, kid, teen, schoolgirl…)
    AGE = "age"  # a minor's age in words ("fifteen year old"); digits are found by ages.py
    ADULT_AGE = "adult_age"  # an adult age containing a minor one ("twenty one years old")
    SEXUAL = "sexual"  # explicit sexual content (nude, sex, nsfw…)
    SEXUALIZING = "sexualizing"  # sexualising but not explicit (lingerie, seductive, upskirt…)
    SUGGESTIVE = "suggestive"  # suggestive on an NSFW-capable model (bikini, thighs, kissing…)
    RATING_EXPLICIT = "rating_explicit"  # Pony rating tags
    RATING_QUESTIONABLE = "rating_questionable"
    RATING_SAFE = "rating_safe"
    NEGATIVE_YOUTH_STEERING = "negative_youth_steering"  # "adult, mature" in a negative prompt
    NEGATIVE_NSFW_STEERING = "negative_nsfw_steering"  # "clothes, censored" in a negative prompt
    BLOCK_BUILTIN = "block_builtin"  # the shipped general blocklist
    BLOCK_OPERATOR = "block_operator"  # the operator's extra blocklist
    ALLOW = "allow"  # benign phrases that suppress the matches they contain ("kid goat")


# Built-in list file -> the kind of its terms.
BUILTIN_FILES: dict[str, TermKind] = {
    "csam_always.txt": TermKind.CSAM_ALWAYS,
    "csam_exceptions.txt": TermKind.CSAM_EXCEPTION,
    "youth.txt": TermKind.YOUTH,
    "sexual.txt": TermKind.SEXUAL,
    "sexualizing.txt": TermKind.SEXUALIZING,
    "suggestive.txt": TermKind.SUGGESTIVE,
    "negative_youth_steering.txt": TermKind.NEGATIVE_YOUTH_STEERING,
    "negative_nsfw_steering.txt": TermKind.NEGATIVE_NSFW_STEERING,
    "blocklist.txt": TermKind.BLOCK_BUILTIN,
    "allow.txt": TermKind.ALLOW,
}


class WordlistError(ValueError):
    """A word list file cannot be used; the message names the file and line."""


def parse_wordlist(text: str, source: str = "<terms>") -> tuple[str, ...]:
    """Terms of a word list: one per line, ``#`` comments, blank lines skipped, duplicates dropped."""
    terms: dict[str, None] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = _strip_comment(raw).strip()
        if not line:
            continue
        if not normalize(line).spaced:
            raise WordlistError(f"{source}:{lineno}: {line!r} has no letters or digits to match")
        terms[line] = None
    return tuple(terms)


def read_wordlist(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Read an operator's word list file (UTF-8)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise WordlistError(f"cannot read word list {os.fspath(path)!r}: {exc}") from exc
    return parse_wordlist(text, os.fspath(path))


@cache
def builtin_terms(filename: str) -> tuple[str, ...]:
    """Terms of one of the shipped lists in :data:`BUILTIN_FILES`."""
    if filename not in BUILTIN_FILES:
        raise KeyError(filename)
    text = resources.files("app.moderation").joinpath("wordlists", filename).read_text(encoding="utf-8")
    return parse_wordlist(text, f"app/moderation/wordlists/{filename}")


def _strip_comment(line: str) -> str:
    if line.lstrip().startswith("#"):
        return ""
    # A trailing comment needs whitespace before the '#', so a term may contain '#'.
    for sep in (" #", "\t#"):
        cut = line.find(sep)
        if cut != -1:
            line = line[:cut]
    return line
