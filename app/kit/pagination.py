"""Limit/offset paging for admin listings."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query
from pydantic import BaseModel


class Page(BaseModel):
    limit: int
    offset: int


def _page(
    limit: Annotated[int, Query(ge=1, le=500, description="Rows per page")] = 50,
    offset: Annotated[int, Query(ge=0, description="Rows to skip")] = 0,
) -> Page:
    return Page(limit=limit, offset=offset)


PageDep = Annotated[Page, Depends(_page)]
