"""What a running API process holds: built once at start-up, handed to routes as a dependency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app.config import Settings
from app.db import Database
from app.generation.catalog import ModelCatalog
from app.generation.service import Presenter
from app.moderation.service import Moderator
from app.observability.fleet import FleetSnapshot
from app.queue.notify import JobEvents
from app.storage.local import LocalImageStore


@dataclass
class AppContext:
    settings: Settings
    db: Database
    catalog: ModelCatalog
    events: JobEvents
    store: LocalImageStore
    presenter: Presenter
    fleet: FleetSnapshot
    moderation: Moderator


def _context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


ContextDep = Annotated[AppContext, Depends(_context)]


def base_url(request: Request) -> str:
    return str(request.base_url)
