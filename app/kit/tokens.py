"""API key tokens: ``ps_<lookup>_<secret><checksum>``.

- ``lookup`` (8 chars) is stored in clear and indexed, so authentication is one
  indexed read, never a scan.
- ``secret`` carries 190 bits of entropy; only a SHA-256 of the whole token is
  stored. A fast hash is right here (unlike passwords): the input is random, not
  guessable, so there is nothing for a slow hash to protect.
- ``checksum`` (CRC32, base62) rejects typos and scraped garbage without a
  database round trip, and lets secret scanners recognise our keys.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import zlib
from dataclasses import dataclass

ALPHABET = string.digits + string.ascii_letters
TOKEN_PREFIX = "ps"
_LOOKUP_LEN = 8
_SECRET_LEN = 32
_CHECKSUM_LEN = 6


def _base62(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 62)
        out.append(ALPHABET[r])
    return "".join(reversed(out))


def _random(n: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(n))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECKSUM_LEN)


@dataclass(frozen=True)
class NewToken:
    token: str
    prefix: str
    hash: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def generate_token() -> NewToken:
    lookup = _random(_LOOKUP_LEN)
    body = f"{TOKEN_PREFIX}_{lookup}_{_random(_SECRET_LEN)}"
    token = body + _checksum(body)
    return NewToken(token=token, prefix=f"{TOKEN_PREFIX}_{lookup}", hash=hash_token(token))


def parse_prefix(token: str) -> str | None:
    """The stored lookup prefix of a well-formed token with a valid checksum, else None."""
    parts = token.split("_")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or len(parts[1]) != _LOOKUP_LEN:
        return None
    tail = parts[2]
    if len(tail) != _SECRET_LEN + _CHECKSUM_LEN or any(c not in ALPHABET for c in token[3:].replace("_", "")):
        return None
    body = token[: -_CHECKSUM_LEN]
    if not hmac.compare_digest(_checksum(body), token[-_CHECKSUM_LEN:]):
        return None
    return f"{TOKEN_PREFIX}_{parts[1]}"


def token_matches(token: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_token(token), stored_hash)
