"""Reading A1111 infotext back (``/sdapi/v1/png-info``): the text our images (and A1111's) embed.

The layout is A1111's: the prompt, an optional ``Negative prompt:`` line, then one line of
``Key: value`` pairs where values holding separators are JSON-quoted.
"""

from __future__ import annotations

import contextlib
import io
import json
import re

from PIL import Image

from app.runtime.encoding import read_parameters

# One "Key: value" of the settings line; a value is a JSON string or runs to the next comma.
_PAIR = re.compile(r'\s*([\w ,/+-]+?):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')
_SETTINGS_LINE = re.compile(r"^(?:\s*[\w ,/+-]+?:\s*(?:\"(?:\\.|[^\\\"])*\"|[^,]*)(?:,|$)){3,}$")


def parse(text: str) -> dict[str, str]:
    """A1111's ``parse_generation_parameters``, for the fields we and A1111 write: ``Prompt``,
    ``Negative prompt`` and every ``Key: value`` of the settings line (values as written)."""
    lines = text.strip("\n").split("\n")
    settings: dict[str, str] = {}
    if lines and _SETTINGS_LINE.match(lines[-1]):
        for key, value in _PAIR.findall(lines.pop()):
            if value.startswith('"'):
                with contextlib.suppress(json.JSONDecodeError):
                    value = json.loads(value)
            settings[key.strip()] = value.strip() if isinstance(value, str) else str(value)
    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    return {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative), **settings}


def text_items(data: bytes) -> dict[str, str]:
    """Every text item of the image besides ``parameters`` (PNG text chunks, the XMP packet), as A1111's
    ``items``; binary values are left out."""
    with Image.open(io.BytesIO(data)) as image:
        items = {str(k): v for k, v in image.info.items() if isinstance(v, str) and k != "parameters"}
        xmp = image.info.get("xmp")
    if isinstance(xmp, bytes):
        items["xmp"] = xmp.decode("utf-8", errors="replace")
    return items


def read(data: bytes) -> tuple[str, dict[str, str]]:
    """The image's infotext ("" when it has none) and its other text items."""
    return read_parameters(data) or "", text_items(data)
