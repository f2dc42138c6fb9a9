"""Image bytes in an S3 bucket (AWS or an S3-compatible server: MinIO, SeaweedFS, Ceph RGW, …).

API replicas and GPU workers then share nothing but Postgres and the bucket. Credentials and region
come from boto3's default chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN,
AWS_REGION or AWS_DEFAULT_REGION, a profile, an instance or pod role).
"""

from __future__ import annotations

import mimetypes
from pathlib import PurePosixPath
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from app.storage.base import ImageNotFoundError

# SigV4 presigned URLs live at most seven days.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600

_CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp"}
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})


def content_type_for(key: str) -> str:
    ext = PurePosixPath(key).suffix.lstrip(".").lower()
    return _CONTENT_TYPES.get(ext) or mimetypes.guess_type(key)[0] or "application/octet-stream"


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3ImageStore:
    """One boto3 client for the process; boto3 clients (unlike sessions and resources) are thread-safe,
    so the ``asyncio.to_thread`` callers share it."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 client: Any | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.lstrip("/")
        if self.prefix and not self.prefix.endswith("/"):
            self.prefix += "/"
        self.endpoint_url = endpoint_url
        if client is None:
            # AWS: virtual-hosted URLs name the bucket's region (botocore's "auto" presigns for the global
            # s3.amazonaws.com host, which redirects for buckets outside us-east-1); a dotted bucket name
            # does not match S3's TLS certificate that way, so it goes path-style.
            s3_options: dict[str, Any] = {"addressing_style": "path" if "." in bucket else "virtual"}
            extra: dict[str, Any] = {}
            if endpoint_url is not None:
                # S3-compatible servers: path-style needs no wildcard DNS for bucket subdomains, and
                # checksums only where the API requires them (botocore >= 1.36 adds CRC32 trailers to
                # every upload by default, which several servers reject).
                s3_options["addressing_style"] = "path"
                if "request_checksum_calculation" in Config.OPTION_DEFAULTS:  # botocore < 1.36 lacks them
                    extra = {"request_checksum_calculation": "when_required",
                             "response_checksum_validation": "when_required"}
            # s3v4 explicitly: botocore still presigns with SigV2 by default (refused by newer regions).
            config = Config(signature_version="s3v4", s3=s3_options, connect_timeout=5, read_timeout=30,
                            retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=32, **extra)
            # A session of its own: the module-level default session is not thread-safe to create clients from.
            client = boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)
        self._client = client

    def object_key(self, key: str) -> str:
        if not key or key.startswith("/"):
            raise ValueError(f"invalid storage key: {key!r}")
        return f"{self.prefix}{key}"

    def _where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def put(self, key: str, data: bytes) -> None:
        """A single PutObject: S3 makes the object visible whole or not at all."""
        self._client.put_object(Bucket=self.bucket, Key=self.object_key(key), Body=data,
                                ContentType=content_type_for(key))

    def get(self, key: str) -> bytes:
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if _error_code(exc) in _MISSING:
                raise ImageNotFoundError(key, self._where()) from exc
            raise
        body = response["Body"]
        try:
            data: bytes = body.read()
        finally:
            body.close()
        return data

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            # Without s3:ListBucket, S3 answers 403 (not 404) for a missing key: that stays an error.
            if _error_code(exc) in _MISSING:
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        # DeleteObject of a missing key succeeds (204): idempotent by the API's own contract.
        self._client.delete_object(Bucket=self.bucket, Key=self.object_key(key))

    def presigned_url(self, key: str, ttl_seconds: int) -> str | None:
        """A GET URL signed locally (no request to the server); it works for ``ttl_seconds``, or until
        the signing credentials expire if they are temporary (STS, instance or pod roles)."""
        ttl = max(1, min(int(ttl_seconds), MAX_PRESIGN_SECONDS))
        url: str = self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.object_key(key),
                                  "ResponseContentType": content_type_for(key)},
            ExpiresIn=ttl)
        return url
