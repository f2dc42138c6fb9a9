"""Limit/offset paging for admin listings."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query
from pydantic import BaseModel

from app.kit.bounds import INT64_MAX


class Page(BaseModel):
    limit: int
    offset: int


def _page(
    limit: Annotated[int, Query(ge=1, le=500, description="Rows per page")] = 50,
    # OFFSET is a BIGINT in Postgres: a larger value is a database error, not an empty page.
    offset: Annotated[int, Query(ge=0, le=INT64_MAX, description="Rows to skip")] = 0,
) -> Page:
    return Page(limit=limit, offset=offset)


PageDep = Annotated[Page, Depends(_page)]
