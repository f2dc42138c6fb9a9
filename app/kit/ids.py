"""Public identifiers: a short type prefix and a random part, so an id says what it names."""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"
