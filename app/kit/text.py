"""The one text policy for request input: no NUL and no C0 control characters but tab, LF and CR.

Postgres refuses NUL in text columns (a 500 at INSERT time), and the other C0 controls are
never legitimate in prompts, names or ids — they only smuggle terminal escapes into logs,
response headers and CSV exports. Every request body model derives from ``RequestModel``, so
every string it carries (nested lists and dicts and, for A1111's open models, unknown keys
too) is checked once, with the caller's field named (app.kit.request); app.kit.input_policy
applies the same rule to the path and the query string.
"""

from __future__ import annotations

import re
from typing import Any

# C0 controls except \t (0x09), \n (0x0A) and \r (0x0D); DEL (0x7F) too, for the same reasons.
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Stated in the OpenAPI document, so schema-driven clients and fuzzers know what is valid.
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"


def forbidden_character(value: str) -> str | None:
    """The first character the policy refuses in ``value``, or None."""
    match = _FORBIDDEN.search(value)
    return match.group(0) if match else None


def refuse_control_characters(value: Any) -> None:
    """Raises ValueError when ``value`` (or any string nested in it, keys included) breaks the policy."""
    if isinstance(value, str):
        bad = forbidden_character(value)
        if bad is not None:
            raise ValueError(f"must not contain control character U+{ord(bad):04X}")
    elif isinstance(value, dict):
        for key, item in value.items():
            refuse_control_characters(key)
            refuse_control_characters(item)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            refuse_control_characters(item)
    # Nested RequestModels validated themselves; numbers and booleans carry no text.


def document_text_policy(schema: Any) -> None:
    """Adds TEXT_PATTERN to every plain string in ``schema`` (a field with a pattern, enum or format keeps it)."""
    if isinstance(schema, dict):
        if schema.get("type") == "string" and not {"pattern", "enum", "const", "format"} & schema.keys():
            schema["pattern"] = TEXT_PATTERN
        for key, item in schema.items():
            if key not in ("examples", "default", "example", "$defs"):
                document_text_policy(item)
    elif isinstance(schema, list):
        for item in schema:
            document_text_policy(item)
