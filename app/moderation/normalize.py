"""Prompt normalisation: the canonical views every moderation rule matches against.

A prompt is folded once (Unicode NFKC, case folding, diacritics and zero-width
characters stripped, look-alike letters mapped to Latin, punctuation and the
AUTOMATIC1111 prompt syntax turned into token boundaries) and then exposed as
several space-separated token strings. Rules never see the raw text, so an
obfuscation handled here is handled for every rule at once.

Views (all lower-case ASCII where the input was Latin-like, tokens joined by one space):

A1111 weight and schedule numbers (``(little:1.2) girl``, ``[a:b:10]``) are dropped from every
view but ``ages``, so the words around them stay adjacent.

``spaced``
    ``_ - . ' |`` split words: ``kid_goat`` -> ``kid goat``, ``<lora:loli_v2:0.8>`` -> ``lora loli v2``.
``joined``
    ``_ - . '`` glue words and runs of single characters are glued too:
    ``l.o.l.i``, ``lo-li``, ``l o l i`` -> ``loli``. A token with ``|`` is kept whole (``lo|i``, a
    leet ``l``) and followed by its pieces (``l|o|l|i`` -> ``loli``, A1111's alternation).
``skeleton_spaced`` / ``skeleton_joined``
    the same with leetspeak folded to a skeleton alphabet (``0``->``o``, ``1``, ``|`` and ``l``->``i``,
    ``3``->``e``, ``4`` and ``@``->``a``, ``5`` and ``$``->``s``, ``7``->``t``, ``8``->``b``, ``9``->``g``).
    ``l`` and ``i`` share a letter because ``1`` stands for either. Terms are folded the same way
    before they are compared, so ``loli`` and ``l0l1`` meet at ``ioii``.
``runs``
    the skeletons of glued single-character runs, for matching inside them (``a l o l i``).
``ages``
    a digit-preserving view for age detection: never leet-folded, ``_ - '`` split words, and a
    decimal such as the weight in ``(girl:1.5)`` becomes the single token ``1#5`` so it can never
    read as an age; a comma that ends a tag stays as the token ``,``. Empty when the text has no
    digit and no ``year``. :mod:`app.moderation.ages` matches every
    written form of a minor age on it (``15yo``, ``15 y o``, ``1 5 yo``, ``age15``…).

Everything here is ``str.translate``/``str.split`` plus loops over tokens: linear time,
no regular expressions.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from itertools import pairwise
from string import ascii_lowercase, digits

__all__ = ["NormalizedText", "fold", "normalize"]

# Characters that glue a word together in one view and split it in the other.
JOINERS = "_-.'"
# Leet symbols that stay inside tokens of the joined view (``$hota``, ``sh0t@``, ``lo|i``); a leading
# ``@`` is a mention and is dropped. ``|`` is also A1111's alternation, so the spaced view splits there.
_WORD_SYMBOLS = "@$|"

# Look-alike letters that survive NFKC + case folding + diacritic stripping, mapped to the Latin
# letter a reader sees. Keys are lower-case because folding runs first.
# fmt: off
_HOMOGLYPHS: dict[str, str] = {
    # Cyrillic
    "а": "a", "в": "b", "г": "r", "е": "e", "и": "u", "к": "k", "м": "m", "н": "h",
    "о": "o", "п": "n", "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ш": "w", "щ": "w",
    "ъ": "b", "ь": "b", "і": "i", "ј": "j", "ѕ": "s", "һ": "h", "ԁ": "d", "ӏ": "l", "ԛ": "q",
    "ԝ": "w", "ѵ": "v", "ү": "y", "ұ": "y", "ҳ": "x", "ҫ": "c", "ғ": "f", "ɵ": "o", "ө": "o",
    # Greek
    "α": "a", "β": "b", "γ": "y", "δ": "d", "ε": "e", "ϵ": "e", "ζ": "z", "η": "n", "θ": "o",
    "ι": "i", "κ": "k", "μ": "u", "ν": "v", "ο": "o", "π": "n", "ρ": "p", "σ": "o", "ς": "s",
    "τ": "t", "υ": "u", "χ": "x", "ω": "w", "ϲ": "c", "ϳ": "j",
    # Armenian
    "օ": "o", "ս": "u", "հ": "h", "ո": "n", "ց": "g", "զ": "q", "ռ": "n",
    # Latin letters without a decomposition, small capitals and IPA look-alikes
    "ł": "l", "ø": "o", "đ": "d", "ħ": "h", "ı": "i", "ȷ": "j", "æ": "ae", "œ": "oe", "þ": "th",
    "ð": "d", "ŋ": "n", "ĸ": "k", "ɑ": "a", "ɡ": "g", "ɩ": "i", "ɪ": "i", "ʟ": "l", "ɫ": "l",
    "ƚ": "l", "ɭ": "l", "ᴏ": "o", "ꜱ": "s", "ʜ": "h", "ᴛ": "t", "ᴀ": "a", "ʙ": "b", "ᴄ": "c",
    "ᴅ": "d", "ᴇ": "e", "ɢ": "g", "ᴊ": "j", "ᴋ": "k", "ᴍ": "m", "ɴ": "n", "ᴘ": "p", "ʀ": "r",
    "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ʏ": "y", "ᴢ": "z", "ƒ": "f", "ɾ": "r", "ʂ": "s", "ɛ": "e",
    "ɔ": "c",
    # Punctuation that means "join" in the ASCII world
    "\u2018": "'", "\u2019": "'", "\u02bc": "'", "\u00b4": "'", "`": "'",
    "\u00b7": ".", "\u2022": ".", "\u2027": ".", "\u2219": ".", "\u30fb": ".", "\u2e31": ".",
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-",
    "\u2212": "-", "\u2043": "-", "\ufe58": "-",
}
# fmt: on
# Letter-like symbols with no compatibility decomposition: regional indicators and the negative
# circled / negative squared Latin capitals (🇱 🅛 🅻).
for _first in (0x1F1E6, 0x1F150, 0x1F170):
    for _offset, _letter in enumerate(ascii_lowercase):
        _HOMOGLYPHS[chr(_first + _offset)] = _letter

# Letters that render as nothing (Hangul fillers) and are used to split words invisibly.
_INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def _fold_codepoint(cp: int) -> str | None:
    ch = chr(cp)
    mapped = _HOMOGLYPHS.get(ch)
    if mapped is not None:
        return mapped
    if ch in _INVISIBLE_LETTERS:
        return None
    category = unicodedata.category(ch)
    if category in ("Mn", "Me", "Cf"):
        # combining marks (after NFD: diacritics, strike-through, zalgo) and format characters
        # (zero-width space/joiners, bidi controls, soft hyphen, tag characters)
        return None
    if category == "Nd":
        return str(unicodedata.decimal(ch))
    if category[0] in "PSZC":
        return " "
    return ch


class _FoldTable(dict[int, str | None]):
    """``str.translate`` table that classifies a code point the first time it is seen.

    Filling all of Unicode up front would cost a second at import; the lazy table
    costs one lookup per distinct character ever seen.
    """

    def __missing__(self, cp: int) -> str | None:
        value = _fold_codepoint(cp)
        self[cp] = value
        return value


_FOLD = _FoldTable()
for _cp in range(128):
    _ch = chr(_cp).lower()
    _FOLD[_cp] = _ch if _ch in ascii_lowercase or _ch in digits or _ch in JOINERS or _ch in _WORD_SYMBOLS else " "
_FOLD.update({ord(k): v for k, v in _HOMOGLYPHS.items() if ord(k) < 128})

_JOINERS_TO_SPACE = str.maketrans(JOINERS + "|", " " * (len(JOINERS) + 1))
_JOINERS_DELETE = str.maketrans("", "", JOINERS)
_AGE_JOINERS_TO_SPACE = str.maketrans("_-'@$|", "      ")
_SKELETON = str.maketrans("01l34579@$8|", "oiieastgasbi")
_DIGITS = tuple(digits)
_MANY_DOTS = 32


def fold(text: str) -> str:
    """Unicode-fold ``text``: lower case, no diacritics or invisible characters, Latin look-alikes
    mapped, punctuation turned into spaces. Keeps ``_ - . ' @ $ |`` for the views to decide on."""
    return _decompose(text).translate(_FOLD)


def _decompose(text: str) -> str:
    if text.isascii():
        return text.lower()
    text = unicodedata.normalize("NFKC", text).casefold()
    return unicodedata.normalize("NFD", text)


_CLOSERS = ")]>"
_NUMBER_CHARS = frozenset("0123456789.+-")


def _strip_weights(text: str) -> str:
    """Blank the numbers of A1111 weights and schedules (``(little:1.2) girl``, ``[a:b:10]``,
    ``<lora:x:0.8>``): ``:<spaces><number><spaces>`` right before a closing bracket. Each
    character is walked over by at most one closing bracket, so this is linear."""
    cuts: list[tuple[int, int]] = []
    find = text.find
    for closer in _CLOSERS:
        position = find(closer)
        while position != -1:
            i = position - 1
            while i >= 0 and text[i] == " ":
                i -= 1
            number_end = i
            while i >= 0 and text[i] in _NUMBER_CHARS:
                i -= 1
            # the run of number characters must hold a digit: stripping the others leaves one
            if i < number_end and text[i + 1 : number_end + 1].strip(".+-"):
                while i >= 0 and text[i] == " ":
                    i -= 1
                if i >= 0 and text[i] == ":":
                    cuts.append((i + 1, position))
            position = find(closer, position + 1)
    if not cuts:
        return text
    cuts.sort()
    pieces: list[str] = []
    last = 0
    for start, end in cuts:
        pieces += (text[last:start], " ")
        last = end
    pieces.append(text[last:])
    return "".join(pieces)


@dataclass(frozen=True, slots=True)
class NormalizedText:
    """The views of one prompt; see the module docstring. Strings hold tokens joined by one space."""

    spaced: str
    joined: str
    skeleton_spaced: str
    skeleton_joined: str
    runs: tuple[str, ...]
    ages: str


EMPTY = NormalizedText("", "", "", "", (), "")


def normalize(text: str) -> NormalizedText:
    """Fold ``text`` and build every view the moderation rules match against."""
    decomposed = _decompose(text)
    with_weights = decomposed.translate(_FOLD)
    base = _strip_weights(decomposed).translate(_FOLD) if ":" in decomposed else with_weights
    tokens = base.split()
    if "BREAK" in text:
        # A1111's chunk separator; dropping it keeps "little BREAK girl" adjacent.
        tokens = [t for t in tokens if t != "break"]
    if "@" in base:
        tokens = [t.lstrip("@") for t in tokens]
    base = " ".join(tokens)

    spaced = " ".join(base.translate(_JOINERS_TO_SPACE).split())
    unglued = base.translate(_JOINERS_DELETE).split()
    if "|" in base:
        # "|" may be a leet "l" (lo|i) or A1111's alternation (l|o|l|i, [loli|woman]): keep the
        # token whole for the first reading and follow it with its pieces for the second.
        unglued = [piece for token in unglued for piece in _with_alternatives(token)]
    joined = " ".join(unglued)
    runs: list[str] = []
    if " x x " in f" {joined.translate(_SHAPE)} ":
        joined_tokens, runs = _glue_single_characters(unglued)
        joined = " ".join(joined_tokens)
    return NormalizedText(
        spaced=spaced,
        joined=joined,
        skeleton_spaced=spaced.translate(_SKELETON),
        skeleton_joined=joined.translate(_SKELETON),
        runs=tuple(r.translate(_SKELETON) for r in runs),
        ages=_age_view(_fold_marking_tag_ends(decomposed)) if _may_hold_age(with_weights) else "",
    )


class _ShapeTable(dict[int, str]):
    """Maps every character but the space to ``x``: two one-character tokens in a row then read
    ``" x x "``, which ``str.find`` spots without a Python loop over the tokens."""

    def __missing__(self, cp: int) -> str:
        self[cp] = "x"
        return "x"


_SHAPE = _ShapeTable({ord(" "): " "})


def _with_alternatives(token: str) -> list[str]:
    if "|" not in token:
        return [token]
    return [*filter(None, token.split("|")), token]


def _glue_single_characters(tokens: list[str]) -> tuple[list[str], list[str]]:
    """Glue runs of two or more one-character tokens (``l o l i`` -> ``loli``)."""
    out: list[str] = []
    runs: list[str] = []
    run: list[str] = []
    for token in tokens:
        if len(token) == 1:
            run.append(token)
            continue
        if run:
            _flush_run(run, out, runs)
        out.append(token)
    if run:
        _flush_run(run, out, runs)
    return out, runs


def _flush_run(run: list[str], out: list[str], runs: list[str]) -> None:
    if len(run) >= 2:
        glued = "".join(run)
        out.append(glued)
        runs.append(glued)
    else:
        out.append(run[0])
    run.clear()


def _may_hold_age(folded: str) -> bool:
    # "year" lets a bare "twelve years," (no digit) reach the ages view's tag-end rule.
    return any(d in folded for d in _DIGITS) or "year" in folded


def _fold_marking_tag_ends(decomposed: str) -> str:
    """Fold ``decomposed`` keeping each comma that ends a tag as a ``,`` token, so the ages view can tell
    ``12 years,`` (a tag: an age) from ``12 years later``. A comma between digits is a thousands
    separator (``1,000``) and splits like any other punctuation."""
    if "," not in decomposed:
        return decomposed.translate(_FOLD)
    parts = decomposed.split(",")
    pieces = [parts[0].translate(_FOLD)]
    for before, part in pairwise(parts):
        pieces.append(" " if before[-1:].isdigit() and part[:1].isdigit() else " , ")
        pieces.append(part.translate(_FOLD))
    return "".join(pieces)


def _age_view(base: str) -> str:
    text = base.translate(_AGE_JOINERS_TO_SPACE)
    dots = text.count(".")
    # A decimal stays one token that can never read as an age: the weight in "(mature age:1.5)"
    # is not "age 1 5". Any other dot splits ("15 y.o."). Few dots: walk them; many: let
    # str.replace mark digit-dot-digit in C.
    if dots > _MANY_DOTS:
        for digit in digits:
            text = text.replace(digit + ".", digit + "\x01")
        for digit in digits:
            text = text.replace("\x01" + digit, "#" + digit)
        text = text.replace("\x01", " ").replace(".", " ")
    elif dots:
        parts = text.split(".")
        pieces = [parts[0]]
        for part in parts[1:]:
            pieces.append("#" if pieces[-1][-1:].isdigit() and part[:1].isdigit() else " ")
            pieces.append(part)
        text = "".join(pieces)
    return " ".join(text.split())
