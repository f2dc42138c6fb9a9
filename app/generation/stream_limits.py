"""Caps on open event streams, per API key and per process, so one tenant cannot crowd out the rest.

An idle stream holds no database connection (it sleeps on the process's notification hub), but
every open stream re-reads its job now and then and holds a socket; without a cap one key with
hundreds of streams turns those reads into a queue every other tenant's requests wait in.
Counts are per process: each API replica enforces its own share.
"""

from __future__ import annotations

import weakref
from collections import Counter

from app.errors import RateLimited


class StreamTicket:
    """One open stream's place; released once, however the stream ends."""

    def __init__(self, limits: StreamLimits, key_id: str) -> None:
        self._limits: StreamLimits | None = limits
        self._key_id = key_id

    def release(self) -> None:
        if self._limits is not None:
            self._limits._release(self._key_id)
            self._limits = None

    def bind(self, owner: object) -> None:
        """Releases the ticket when ``owner`` (the stream's iterator) is collected, in case the
        server drops a response before ever iterating it (its ``finally`` would never run)."""
        weakref.finalize(owner, self.release)


class StreamLimits:
    def __init__(self, *, per_key: int, per_process: int) -> None:
        self.per_key = per_key
        self.per_process = per_process
        self._open: Counter[str] = Counter()

    @property
    def open_streams(self) -> int:
        return sum(self._open.values())

    def acquire(self, key_id: str) -> StreamTicket:
        """A ticket for one more stream of ``key_id``, or 429 when the key or the process is at its cap."""
        if self._open[key_id] >= self.per_key:
            raise RateLimited(f"This key already has {self._open[key_id]} open event streams (limit {self.per_key}); "
                              "close one, or poll GET /v1/generations/{id}.", code="too_many_streams",
                              headers={"Retry-After": "5"})
        if self.open_streams >= self.per_process:
            raise RateLimited("This server has as many open event streams as it serves; retry shortly or poll "
                              "GET /v1/generations/{id}.", code="too_many_streams", headers={"Retry-After": "5"})
        self._open[key_id] += 1
        return StreamTicket(self, key_id)

    def _release(self, key_id: str) -> None:
        self._open[key_id] -= 1
        if self._open[key_id] <= 0:
            del self._open[key_id]
