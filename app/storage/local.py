"""Image bytes on the local filesystem (the embedded default and single-host deployments)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from app.storage.base import ImageNotFoundError


class LocalImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ValueError(f"storage key escapes the image root: {key!r}")
        return path

    def put(self, key: str, data: bytes) -> None:
        """Atomic: a reader never sees a half-written image, even if the worker dies mid-write."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ImageNotFoundError(key, str(self.root)) from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def presigned_url(self, key: str, ttl_seconds: int) -> str | None:
        """A directory hands out no links of its own: the API streams the bytes."""
        return None
