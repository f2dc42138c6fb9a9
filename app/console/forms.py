"""From HTML form fields (all text) to the typed values the API's own request models validate.

A form sends every field, as text; the request models are strict (``"5"`` is not 5). Each field
is converted by what its model field accepts, an empty box meaning "none" where the field takes
null, and then the API's model validates it, so the console accepts exactly what the API accepts.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar, Union

from pydantic import BaseModel, ValidationError

from app.errors import InvalidRequest


class FormProblem(InvalidRequest):
    """A field the form cannot take; ``param`` names it, so the page can point at it."""


def _accepted(annotation: Any) -> set[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _accepted(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return set().union(*(_accepted(arg) for arg in typing.get_args(annotation)))
    if origin is typing.Literal:
        return {str}
    return {origin or annotation}


def _convert(name: str, raw: str, accepted: set[Any]) -> Any:
    text = raw.strip()
    if text == "":
        if type(None) in accepted:
            return None
        if str in accepted:
            return ""
        raise FormProblem(f"'{name}' cannot be empty.", code="invalid_value", param=name)
    if int in accepted:
        try:
            return int(text.replace(",", "").replace("_", ""))
        except ValueError:
            raise FormProblem(f"'{name}' must be a whole number.", code="invalid_value", param=name) from None
    if float in accepted:
        try:
            return float(text)
        except ValueError:
            raise FormProblem(f"'{name}' must be a number.", code="invalid_value", param=name) from None
    if list in accepted:
        return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]
    return text


def fields(model: type[BaseModel], form: Mapping[str, Any], names: Iterable[str], *,
           checkboxes: Iterable[str] = (), omit_blank: bool = False) -> dict[str, Any]:
    """The named fields of ``form`` converted for ``model``. A checkbox is true when sent, false when not.
    With ``omit_blank``, an empty box is left out (the model's default applies) instead of meaning null."""
    boxes = set(checkboxes)
    values: dict[str, Any] = {}
    for name in names:
        if name in boxes:
            values[name] = name in form
            continue
        raw = form.get(name)
        if not isinstance(raw, str) or (omit_blank and not raw.strip()):
            continue
        values[name] = _convert(name, raw, _accepted(model.model_fields[name].annotation))
    return values


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], values: Mapping[str, Any]) -> M:
    """``model`` built from ``values``, its first complaint turned into a 400 naming the field."""
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first.get("loc", ())) or None
        message = first.get("msg", "Invalid value.")
        raise FormProblem(f"'{param}': {message}." if param else f"{message}.", code="invalid_value",
                          param=param) from None


def text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""
