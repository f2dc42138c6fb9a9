"""Prompt moderation engine: pure, fast, and free of web or database imports.

Public API
==========

``PromptPolicy.build(*, extra_block_terms=(), allow_terms=(), extra_block_files=(), allow_files=(),
optouts=(), max_prompt_chars=4000) -> PromptPolicy``
    Build once at startup from the built-in word lists (``app/moderation/wordlists/*.txt``)
    plus the operator's extra block/allow terms or files. Immutable and thread-safe.
    Raises ``WordlistError`` for an unreadable list file and ``ValueError`` for an allow
    term that would exempt a CSAM-guard term.

``PromptPolicy.with_optouts(optouts) -> PromptPolicy``
    The same policy with another artist opt-out list (a sequence of ``OptOutEntry`` or a
    prebuilt ``OptOutMatcher``). Only the opt-out automaton is rebuilt; unchanged entries
    return the same policy object. Poll the registry, call this, swap the reference.

``PromptPolicy.check(prompt, negative_prompt="", *, nsfw_capable_model=False,
max_rating="explicit") -> Decision``
    Checks, in order, first failure wins: prompt or negative prompt longer than
    ``max_prompt_chars`` (``prompt_too_long``) -> CSAM guard (``csam``, always on) ->
    opted-out artist in the prompt (``artist_optout``, with ``optout_id``) -> built-in or
    operator blocklist (``blocklist``) -> the account's ``max_rating`` (``rating_violation``).

``Decision(allowed, category, rule, matched, optout_id, rating_cap)``
    ``category`` is a :class:`Category` (``csam``, ``artist_optout``, ``blocklist``,
    ``rating_violation``, ``prompt_too_long``) or ``None`` when allowed. ``rule`` (e.g.
    ``csam.explicit_age``) and ``matched`` are for the incident log only — a refused caller
    gets the generic ``content_policy_violation`` error and never the matched terms.
    ``rating_cap`` is ``"safe"`` on an allowed prompt that mentions a minor: generate it
    with ``apply_rating_tags(..., stricter_rating(max_rating, decision.rating_cap))``.

``apply_rating_tags(prompt, negative_prompt, max_rating) -> tuple[str, str]``
    Pony-family models only: ``rating_safe`` (+ ``rating_explicit, rating_questionable`` in
    the negative) for ``safe``, ``rating_questionable`` (+ ``rating_explicit``) for
    ``questionable``, nothing for ``explicit``. Never duplicates a tag already present.

``normalize(text) -> NormalizedText``
    The folded views every rule matches against (see :mod:`app.moderation.normalize`).

``OptOutEntry(id, name, aliases=(), require_context=False)``, ``OptOutMatcher.build(entries)``,
``OptOutMatcher.find(prompt) -> OptOutHit | None``, ``is_matchable_artist_name(name)``
    The artist opt-out matcher on its own, e.g. to validate registry input or to build the
    matcher once and share it between policies.

``read_wordlist(path)``, ``parse_wordlist(text)``, ``WordlistError``
    The word-list file format, for validating an operator's files at startup.

Behaviour the rules guarantee
=============================

* Every rule sees the normalised prompt: NFKC, case folding, no diacritics, Cyrillic/Greek/
  small-capital/enclosed look-alikes mapped to Latin, zero-width characters removed, leetspeak
  folded (ages keep their digits), ``_ - .`` and spaced-out letters joined (``l o l i``,
  ``l.o.l.i``), and A1111 syntax — ``(word:1.2)``, ``((word))``, ``[word]``, ``[a|b]``,
  ``[a:b:n]``, ``BREAK``, ``<lora:name:w>``, ``<lyco:…>``, ``<hypernet:…>``,
  ``embedding:name`` — unwrapped so its contents are checked.
* Matching is whole-token and linear-time (Aho-Corasick; no regular expressions), so
  ``Ann`` never matches ``announcement`` and no prompt can make a check slow.
* Only the positive prompt is searched for blocked, sexual, youth, artist and blocklist
  terms; the negative prompt is searched for steering: adult terms there (``adult, mature``)
  are a youth signal, clothing/censor/``rating_safe`` terms a nudity signal.
* A youth term or minor age alone is allowed (with ``rating_cap="safe"``); with an explicit
  (``nude``) or sexualising (``lingerie``) term, a ``rating_explicit`` / ``rating_questionable``
  tag or nudity steering in the negative prompt it blocks; on an NSFW-capable model any
  suggestive term (``bikini``) is enough. Always-blocked terms (``loli``, ``shota``, ``cp``,
  ``jailbait``, ``pedo``…) block on their own.
* The word lists are plain-text files in ``app/moderation/wordlists/`` (one term per line,
  ``#`` comments); each file's header says what its terms do. Allow phrases add context
  (``kid goat``) and never exempt a CSAM-guard term; ``csam_exceptions.txt`` holds the few
  reviewed names that contain an always-blocked word (``shota aizawa``).

Wiring (for the generation service)
===================================

Build one policy at startup (operator files from settings), keep it in app state, and swap
in ``policy.with_optouts(entries)`` whenever the opt-out registry changes. Per request::

    prompt, negative_prompt = spec.revise_prompt(prompt), spec.revise_negative_prompt(negative_prompt)
    decision = policy.check(prompt, negative_prompt, nsfw_capable_model=spec.nsfw_capable,
                            max_rating=account.max_rating)
    if not decision.allowed:
        # incident row: decision.category, decision.rule, decision.matched, decision.optout_id
        raise ContentPolicyViolation()          # 400, code "content_policy_violation"
    if spec.family is Pony:
        prompt, negative_prompt = apply_rating_tags(
            prompt, negative_prompt, stricter_rating(account.max_rating, decision.rating_cap))

Check the prompts the pipeline will actually receive (after the model's prefix/suffix and
default negative prompt): a template's ``rating_explicit`` is as much a sexual signal as the
caller's. Rating tags are added after the check; they only ever steer towards safer output.
"""

from app.moderation.normalize import NormalizedText, normalize
from app.moderation.optout_matcher import OptOutEntry, OptOutHit, OptOutMatcher, is_matchable_artist_name
from app.moderation.policy import DEFAULT_MAX_PROMPT_CHARS, Category, Decision, PromptPolicy
from app.moderation.ratings import RATINGS, Rating, apply_rating_tags, stricter_rating
from app.moderation.wordlists import WordlistError, parse_wordlist, read_wordlist

__all__ = [
    "DEFAULT_MAX_PROMPT_CHARS",
    "RATINGS",
    "Category",
    "Decision",
    "NormalizedText",
    "OptOutEntry",
    "OptOutHit",
    "OptOutMatcher",
    "PromptPolicy",
    "Rating",
    "WordlistError",
    "apply_rating_tags",
    "is_matchable_artist_name",
    "normalize",
    "parse_wordlist",
    "read_wordlist",
    "stricter_rating",
]
