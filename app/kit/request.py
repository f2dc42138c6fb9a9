"""``RequestModel``: the base of every request body, so input rules hold everywhere at once.

- The text policy (app.kit.text): no NUL or other C0 control characters in any string.
- Strict numbers: ``true`` is not 1 and ``"5"`` is not 5. Pydantic's lax mode coerces both,
  so ``"steps": true`` used to run one step; a client sending that has a bug worth hearing about.
  (Model-wide ``strict=True`` is not an option: FastAPI validates parsed JSON in Python mode,
  where strict also refuses ISO strings for datetimes.)
"""

from __future__ import annotations

import types
import typing
from typing import Any, Union

from pydantic import BaseModel, Field, GetJsonSchemaHandler, ValidationInfo, field_validator, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from app.kit.bounds import INT64_MAX
from app.kit.text import document_text_policy, refuse_control_characters

_NUMBERS = (int, float)


def _accepts(annotation: Any) -> set[Any]:
    """The plain types an annotation admits at its top level (``int | None`` -> {int, NoneType})."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _accepts(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return set().union(*(_accepts(arg) for arg in typing.get_args(annotation)))
    return {origin or annotation}


class RequestModel(BaseModel):
    """Base of every request body: the text policy and strict numbers for all its fields."""

    @field_validator("*", mode="before")
    @classmethod
    def _strict_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # No column here is wider than BIGINT: a larger integer can only fail later, at the database.
        if type(value) is int and not -INT64_MAX - 1 <= value <= INT64_MAX:
            raise ValueError("is beyond the 64-bit integer range")
        if not isinstance(value, (bool, str)) or info.field_name is None:
            return value
        accepted = _accepts(cls.model_fields[info.field_name].annotation)
        if isinstance(value, bool) and bool not in accepted and accepted & set(_NUMBERS):
            raise ValueError("must be a number, not a boolean")
        if isinstance(value, str) and str not in accepted and accepted and accepted <= {int, float, type(None)}:
            raise ValueError("must be a JSON number, not a string")
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _text_policy(cls, value: Any) -> Any:
        refuse_control_characters(value)
        return value

    @model_validator(mode="after")
    def _extra_text_policy(self) -> RequestModel:
        # Unknown keys of models with extra="allow" (A1111) skip field validators; they are echoed back.
        if self.__pydantic_extra__:
            refuse_control_characters(self.__pydantic_extra__)
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        json_schema = handler(core_schema)
        document_text_policy(handler.resolve_ref_schema(json_schema))
        return json_schema


def omittable(**constraints: Any) -> Any:
    """``Field`` for a PATCH field whose column cannot be empty: it may be left out (so the default is
    None, meaning "unchanged"), but its type has no null, so an explicit ``null`` is refused."""
    return Field(default=None, **constraints)
