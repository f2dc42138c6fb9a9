"""Artist opt-out matching: is an opted-out artist named in a prompt?

The registry (table, admin endpoints, reload across replicas) lives elsewhere;
this module only turns a list of :class:`OptOutEntry` into an immutable
:class:`OptOutMatcher`. Building is cheap (one normalisation per name and one
Aho-Corasick automaton), so a replica can rebuild whenever the registry changes
and swap the new matcher in atomically; a matcher is never mutated and is safe to
share between threads.

Names and aliases are normalised like prompts (case, accents, homoglyphs,
zero-width characters, ``_ - .`` and the A1111 weight/LoRA syntax) but not
leet-folded, because artist names legitimately hold digits. A name matches as
whole tokens, so ``Ann`` never matches ``announcement``, and in every common form:
``greg rutkowski``, ``by Greg_Rutkowski``, ``artist:greg-rutkowski``,
``Greg Rutkowski (artist)``, ``greg_rutkowski_style``, ``in the style of Greg
Rutkowski``, ``(gregrutkowski:1.2)``, ``[greg rutkowski|alphonse mucha]``.

A bare mention counts: in a text-to-image prompt an artist's name is a style
request. For a name that is also an ordinary word (an artist called "Moon"), set
``require_context=True``: it then matches only next to ``by``, ``artist``,
``style`` or ``style of``. One-character names always need that context.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

import ahocorasick

from app.moderation.normalize import NormalizedText, normalize

__all__ = ["OptOutEntry", "OptOutHit", "OptOutMatcher", "is_matchable_artist_name"]

_CONTEXT_BEFORE = ("by", "artist", "style of", "artstyle of")
_CONTEXT_AFTER = ("artist", "style", "artstyle", "art style")
_NEVER = "\x00"


@dataclass(frozen=True, slots=True)
class OptOutEntry:
    """One opted-out artist as the registry stores it."""

    id: int
    name: str
    aliases: tuple[str, ...] = field(default=())
    require_context: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.aliases, tuple):
            object.__setattr__(self, "aliases", tuple(self.aliases))


@dataclass(frozen=True, slots=True)
class OptOutHit:
    entry_id: int
    name: str  # the entry's name (not the alias that matched)
    matched: str  # the normalised form found in the prompt


def is_matchable_artist_name(name: str) -> bool:
    """Whether ``name`` has anything to match after normalisation (for validating registry input)."""
    return bool(normalize(name).spaced)


class OptOutMatcher:
    """Immutable matcher over a list of opted-out artists."""

    __slots__ = ("_automaton", "entries", "unmatchable")

    def __init__(
        self, entries: tuple[OptOutEntry, ...], automaton: ahocorasick.Automaton, unmatchable: tuple[int, ...]
    ) -> None:
        self.entries = entries
        # ids of entries none of whose names can match anything (e.g. only punctuation)
        self.unmatchable = unmatchable
        self._automaton = automaton

    @classmethod
    def build(cls, entries: Iterable[OptOutEntry]) -> OptOutMatcher:
        entries = tuple(entries)
        automaton = ahocorasick.Automaton()
        automaton.add_word(_NEVER, (1, -1, "", ""))
        unmatchable: list[int] = []
        for entry in entries:
            added = False
            for spelling in (entry.name, *entry.aliases):
                for key in _keys(spelling, entry.require_context):
                    # first entry wins on a collision; both would block the same prompt anyway
                    if key not in automaton:
                        automaton.add_word(key, (len(key), entry.id, entry.name, key.strip()))
                    added = True
            if not added:
                unmatchable.append(entry.id)
        automaton.make_automaton()
        return cls(entries, automaton, tuple(unmatchable))

    def __len__(self) -> int:
        return len(self.entries)

    def find(self, prompt: str | NormalizedText) -> OptOutHit | None:
        """The first opted-out artist named in ``prompt``, or ``None``."""
        if not self.entries:
            return None
        text = normalize(prompt) if isinstance(prompt, str) else prompt
        for view in (text.spaced, text.joined):
            if view:
                for _end, (_length, entry_id, name, matched) in self._automaton.iter(f" {view} "):
                    return OptOutHit(entry_id, name, matched)
        return None


# Registries change one artist at a time and are rebuilt whole, so remembering each spelling's
# keys makes a rebuild cost little more than the automaton itself.
@lru_cache(maxsize=200_000)
def _keys(spelling: str, require_context: bool) -> tuple[str, ...]:
    view = normalize(spelling)
    if not view.spaced:
        return ()
    forms = sorted({view.spaced, view.joined, view.spaced.replace(" ", "")})
    if not require_context and len(view.spaced) > 1:
        return tuple(f" {form} " for form in forms)
    keys: list[str] = []
    for form in forms:
        keys.extend(f" {before} {form} " for before in _CONTEXT_BEFORE)
        keys.extend(f" {form} {after} " for after in _CONTEXT_AFTER)
        keys.append(f" {form.replace(' ', '')}style ")
    return tuple(dict.fromkeys(keys))
