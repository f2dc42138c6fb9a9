"""Word lists compiled into Aho-Corasick automata, matched whole-token in linear time.

Each term is normalised like a prompt and stored as ``" <tokens> "`` (with the
boundary spaces, so ``ann`` can never match inside ``announcement``) in three
forms: its spaced skeleton, its joined skeleton and its tokens run together
(``little girl`` also as ``littlegirl``). A prompt's two skeleton views are padded
the same way and scanned once each (once when they are equal); the glued
single-character runs (``a l o l i``) are scanned separately for terms of four or
more letters inside them. A :class:`TermIndex` holds the kinds one prompt is
searched for (the positive prompt's, the negative prompt's) plus the suppressors.

Suppression: a match is dropped when, in the same view, a suppressing phrase's
span contains it — an allow phrase (``kid goat`` hides ``kid``), a CSAM exception
(``shota aizawa`` hides ``shota``) or an adult age (``twenty one years old`` hides
``one years old``). Allow phrases never hide the always-blocked CSAM terms, and
an allow phrase equal to a CSAM-guard term is refused at build time: it may add
context, never exempt the term itself.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import accumulate
from operator import itemgetter

import ahocorasick

from app.moderation.normalize import NormalizedText, normalize
from app.moderation.wordlists import TermKind

__all__ = ["CompiledTerms", "Hits", "TermIndex"]

_BLOCKLIST_KINDS = frozenset({TermKind.BLOCK_BUILTIN, TermKind.BLOCK_OPERATOR})
_RATING_KINDS = frozenset({TermKind.RATING_EXPLICIT, TermKind.RATING_QUESTIONABLE, TermKind.RATING_SAFE})
# Kinds whose terms an allow phrase may contain and thereby hide.
_ALLOW_HIDES = frozenset(TermKind) - {
    TermKind.CSAM_ALWAYS,
    TermKind.CSAM_EXCEPTION,
    TermKind.ADULT_AGE,
    TermKind.ALLOW,
    *_RATING_KINDS,
}
# Kinds an allow phrase may not simply equal: the CSAM guard's own vocabulary.
_GUARD_KINDS = _ALLOW_HIDES - _BLOCKLIST_KINDS | {TermKind.CSAM_ALWAYS}
SUPPRESSORS: Mapping[TermKind, frozenset[TermKind]] = {
    TermKind.ALLOW: _ALLOW_HIDES,
    TermKind.CSAM_EXCEPTION: frozenset({TermKind.CSAM_ALWAYS}),
    TermKind.ADULT_AGE: frozenset({TermKind.AGE}),
}
_HIDDEN_BY = {kind: frozenset(k for k, hides in SUPPRESSORS.items() if kind in hides) for kind in TermKind}
# Kinds also looked for inside glued single-character runs.
_RUN_KINDS = frozenset(
    {
        TermKind.CSAM_ALWAYS,
        TermKind.YOUTH,
        TermKind.SEXUAL,
        TermKind.SEXUALIZING,
        TermKind.SUGGESTIVE,
        *_BLOCKLIST_KINDS,
    }
)
_MIN_RUN_TERM = 4


@dataclass(frozen=True, slots=True)
class TermRef:
    kind: TermKind
    term: str  # as written in its list, for incident logs
    hidden_by: frozenset[TermKind]  # the suppressor kinds that may hide this term


@dataclass(frozen=True, slots=True)
class Hits:
    """Terms found in one prompt, by kind, after suppression."""

    by_kind: Mapping[TermKind, frozenset[str]]

    def __getitem__(self, kind: TermKind) -> tuple[str, ...]:
        return tuple(sorted(self.by_kind.get(kind, ())))

    def __contains__(self, kind: object) -> bool:
        return kind in self.by_kind


NO_HITS = Hits({})

_Span = tuple[int, int]  # start, end (inclusive) in a padded view


@dataclass(frozen=True, slots=True)
class CompiledTerms:
    """Terms normalised into their automaton keys once, to build several scoped indexes from."""

    refs: tuple[tuple[TermRef, tuple[str, ...], str | None], ...]  # ref, whole-token keys, run key

    @classmethod
    def compile(cls, terms: Iterable[tuple[TermKind, str]]) -> CompiledTerms:
        compiled: list[tuple[TermRef, tuple[str, ...], str | None]] = []
        for kind, term in terms:
            view = normalize(term)
            if not view.skeleton_spaced:
                raise ValueError(f"term {term!r} ({kind}) has no letters or digits to match")
            ref = TermRef(kind, term.strip(), _HIDDEN_BY[kind])
            run_together = view.skeleton_spaced.replace(" ", "")
            keys = tuple(f" {form} " for form in sorted({view.skeleton_spaced, view.skeleton_joined, run_together}))
            run_key = run_together if kind in _RUN_KINDS and len(run_together) >= _MIN_RUN_TERM else None
            compiled.append((ref, keys, run_key))
        result = cls(tuple(compiled))
        result._refuse_exempting_suppressors()
        return result

    def _refuse_exempting_suppressors(self) -> None:
        by_key: dict[str, list[TermRef]] = {}
        for ref, keys, _run_key in self.refs:
            for key in keys:
                by_key.setdefault(key, []).append(ref)
        for refs in by_key.values():
            for suppressor, guarded_kinds in (
                (TermKind.ALLOW, _GUARD_KINDS),
                (TermKind.CSAM_EXCEPTION, frozenset({TermKind.CSAM_ALWAYS})),
            ):
                exempting = [r.term for r in refs if r.kind is suppressor]
                guarded = [r for r in refs if r.kind in guarded_kinds]
                if exempting and guarded:
                    raise ValueError(
                        f"{suppressor} term {exempting[0]!r} is the CSAM-guard term {guarded[0].term!r} "
                        f"({guarded[0].kind}); such terms may add context (e.g. 'kid goat') but never "
                        "exempt a guard term itself"
                    )


class TermIndex:
    """The terms of some kinds, plus every suppressor, in one automaton.

    Immutable once built; safe to share between threads.
    """

    __slots__ = ("_automaton", "_run_automaton", "kinds", "size")

    def __init__(
        self,
        automaton: ahocorasick.Automaton,
        run_automaton: ahocorasick.Automaton,
        kinds: frozenset[TermKind],
        size: int,
    ) -> None:
        self._automaton = automaton
        self._run_automaton = run_automaton
        self.kinds = kinds
        self.size = size

    @classmethod
    def build(cls, terms: CompiledTerms | Iterable[tuple[TermKind, str]], kinds: frozenset[TermKind]) -> TermIndex:
        compiled = terms if isinstance(terms, CompiledTerms) else CompiledTerms.compile(terms)
        keyed: dict[str, tuple[set[TermKind], set[TermRef]]] = {}
        in_runs: dict[str, tuple[set[TermKind], set[TermRef]]] = {}
        for ref, keys, run_key in compiled.refs:
            suppressor = ref.kind in SUPPRESSORS
            if not (SUPPRESSORS[ref.kind] & kinds if suppressor else ref.kind in kinds):
                continue
            for key in keys:
                suppresses, refs = keyed.setdefault(key, (set(), set()))
                if suppressor:
                    suppresses.add(ref.kind)
                else:
                    refs.add(ref)
            if run_key is not None and not suppressor:
                in_runs.setdefault(run_key, (set(), set()))[1].add(ref)
        return cls(_automaton(keyed), _automaton(in_runs), kinds, len(keyed))

    def scan(self, text: NormalizedText) -> Hits:
        """The terms of this index's kinds present in ``text``, minus the suppressed ones."""
        found: dict[TermKind, set[str]] = {}
        spaced, joined = text.skeleton_spaced, text.skeleton_joined
        for view in (spaced,) if joined == spaced else (spaced, joined):
            if view:
                self._scan_view(f" {view} ", found)
        if text.runs:
            # Run keys hold no spaces, so one scan over the space-joined runs never matches across two.
            runs = " ".join(text.runs)
            for _length, _suppresses, refs in _distinct(list(self._run_automaton.iter(runs))).values():
                _add(found, refs)
        if not found:
            return NO_HITS
        return Hits({kind: frozenset(terms) for kind, terms in found.items()})

    def _scan_view(self, padded: str, found: dict[TermKind, set[str]]) -> None:
        # Materialise the matches in C and look at each distinct key once; only keys that a
        # suppressor present in this view could hide need their positions checked. This keeps
        # a prompt of thousands of repeated matches ("cp cp cp …") cheap.
        pairs: list[tuple[int, _Value]] = list(self._automaton.iter(padded))
        if not pairs:
            return
        distinct = _distinct(pairs)
        present = {kind for _length, suppresses, _refs in distinct.values() for kind in suppresses}
        hideable: dict[int, list[TermRef]] = {}
        for value_id, (_length, _suppresses, refs) in distinct.items():
            for ref in refs:
                if not ref.hidden_by.isdisjoint(present):
                    hideable.setdefault(value_id, []).append(ref)
                else:
                    found.setdefault(ref.kind, set()).add(ref.term)
        if hideable:
            self._add_unhidden(pairs, distinct, hideable, found)

    @staticmethod
    def _add_unhidden(
        pairs: list[tuple[int, _Value]],
        distinct: dict[int, _Value],
        hideable: dict[int, list[TermRef]],
        found: dict[TermKind, set[str]],
    ) -> None:
        ends: dict[int, list[int]] = {value_id: [] for value_id in hideable}
        spans: dict[TermKind, list[_Span]] = {}
        # per suppressor value, the span lists (one per kind it suppresses) its matches go to
        span_lists = {
            value_id: [spans.setdefault(kind, []) for kind in value[1]]
            for value_id, value in distinct.items()
            if value[1]
        }
        ends_of, span_lists_of = ends.get, span_lists.get
        for end, value in pairs:
            value_id = id(value)
            value_ends = ends_of(value_id)
            if value_ends is not None:
                value_ends.append(end)
            targets = span_lists_of(value_id)
            if targets is not None:
                span = (end - value[0] + 1, end)
                for target in targets:
                    target.append(span)
        covers: dict[frozenset[TermKind], _Cover] = {}
        for value_id, refs in hideable.items():
            length = distinct[value_id][0]
            for ref in refs:
                hiding = ref.hidden_by.intersection(spans)
                cover = covers.get(hiding)
                if cover is None:
                    cover = covers[hiding] = _Cover([span for kind in hiding for span in spans[kind]])
                if cover.any_outside(ends[value_id], length):
                    found.setdefault(ref.kind, set()).add(ref.term)


class _Cover:
    """A set of spans that answers "does one of them contain this occurrence?" in O(log n)."""

    __slots__ = ("_furthest_end", "_starts")

    def __init__(self, spans: list[_Span]) -> None:
        spans.sort()
        self._starts = [start for start, _end in spans]
        self._furthest_end = list(accumulate((end for _start, end in spans), max))

    def any_outside(self, ends: list[int], length: int) -> bool:
        """Whether some occurrence ``[end - length + 1, end]`` lies in none of the spans."""
        starts, furthest_end = self._starts, self._furthest_end
        for end in ends:
            i = bisect_right(starts, end - length + 1)
            if i == 0 or furthest_end[i - 1] < end:
                return True
        return False


_Value = tuple[int, tuple[TermKind, ...], tuple[TermRef, ...]]  # key length, suppresses, term refs


def _distinct(pairs: list[tuple[int, _Value]]) -> dict[int, _Value]:
    values = list(map(_second, pairs))
    return dict(zip(map(id, values), values, strict=True))


_second = itemgetter(1)


def _add(found: dict[TermKind, set[str]], refs: tuple[TermRef, ...]) -> None:
    for ref in refs:
        found.setdefault(ref.kind, set()).add(ref.term)


# Normalised text never holds a NUL (controls fold to spaces), so this key never matches; it
# keeps an automaton built from no terms scannable.
_NEVER = "\x00"


def _automaton(keyed: Mapping[str, tuple[set[TermKind], set[TermRef]]]) -> ahocorasick.Automaton:
    automaton = ahocorasick.Automaton()
    automaton.add_word(_NEVER, (1, (), ()))
    # Keys with equal values share one value object: fewer objects for the garbage collector to
    # walk on every full collection, and equal values are interchangeable when scanning.
    shared: dict[_Value, _Value] = {}
    for key, (suppresses, refs) in keyed.items():
        if suppresses or refs:
            value = (len(key), tuple(sorted(suppresses)), tuple(sorted(refs, key=lambda r: (r.kind, r.term))))
            automaton.add_word(key, shared.setdefault(value, value))
    automaton.make_automaton()
    return automaton
