"""The one interface every image store offers, whatever holds the bytes.

Methods block (file or network I/O): callers on the event loop run them in a thread
(``asyncio.to_thread``). Implementations are safe to call from several threads at once.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


class ImageNotFoundError(FileNotFoundError):
    """``get`` of a key that holds no image (never written, or deleted)."""

    def __init__(self, key: str, where: str) -> None:
        super().__init__(f"no image is stored under {key!r} in {where}")
        self.key = key


@runtime_checkable
class ImageStore(Protocol):
    def put(self, key: str, data: bytes) -> None:
        """Stores ``data`` under ``key``, replacing what was there; readers never see a partial image."""
        ...

    def get(self, key: str) -> bytes:
        """The bytes under ``key``; raises ``ImageNotFoundError`` (a ``FileNotFoundError``) when there are none."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Removes ``key``; a key that holds nothing is fine (idempotent)."""
        ...

    def presigned_url(self, key: str, ttl_seconds: int) -> str | None:
        """A URL that serves the image without our credentials for ``ttl_seconds``, or None when this
        store cannot hand out such links (the local directory): then the API streams the bytes."""
        ...
