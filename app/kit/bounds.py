"""Integer bounds derived from the database columns a request value ends up in.

An integer the column cannot hold passes validation and then fails at INSERT (or, stored in a
JSON column and compared with an Integer column later, at every query): a 500 far from the
request that caused it. Request fields name the column they are bound for, and the bound follows
the column's type, so widening a column in a migration widens the API with it.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from sqlalchemy import BigInteger, Integer, Numeric, SmallInteger
from sqlalchemy.orm import QueryableAttribute

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
_INT16_MAX = 2**15 - 1


def column_max(column: QueryableAttribute[Any]) -> int:
    """The largest value the (integer) column ``column`` can store."""
    column_type = column.property.columns[0].type
    # Subclasses first: BigInteger and SmallInteger derive from Integer.
    if isinstance(column_type, BigInteger):
        return INT64_MAX
    if isinstance(column_type, SmallInteger):
        return _INT16_MAX
    if isinstance(column_type, Integer):
        return INT32_MAX
    raise TypeError(f"{column} is not an integer column")


def column_int(column: QueryableAttribute[Any], default: Any = None, *, ge: int | None = None,
               le: int | None = None, description: str | None = None) -> Any:
    """``Field`` for a request integer stored in ``column``: at most the column's maximum (or ``le``)
    and at least ``ge``, or the column's minimum when ``ge`` is None."""
    top = column_max(column) if le is None else min(le, column_max(column))
    bottom = -top - 1 if ge is None else ge
    return Field(default=default, ge=bottom, le=top, description=description)


def column_decimal(column: QueryableAttribute[Any], default: Any = None, *, ge: float | None = None,
                   gt: float | None = None, description: str | None = None) -> Any:
    """``Field`` for a request decimal stored in the ``NUMERIC(p, s)`` column ``column``: at most p digits,
    s of them after the point (a larger value is a "numeric field overflow" at INSERT)."""
    column_type = column.property.columns[0].type
    if not isinstance(column_type, Numeric) or column_type.precision is None:
        raise TypeError(f"{column} is not a NUMERIC(p, s) column")
    return Field(default=default, ge=ge, gt=gt, max_digits=column_type.precision,
                 decimal_places=column_type.scale, description=description)
