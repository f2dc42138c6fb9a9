"""Builds the image store the settings ask for: a bucket (``storage_url``) or the local images dir."""

from __future__ import annotations

from app.config import Settings
from app.storage.base import ImageStore
from app.storage.local import LocalImageStore


def parse_storage_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → ``("bucket", "some/prefix/")``; no prefix → ``""``."""
    scheme, sep, rest = url.partition("://")
    if scheme != "s3" or not sep:
        raise ValueError(f"storage_url must look like s3://bucket/prefix, not {url!r}")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"storage_url names no bucket: {url!r}")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def open_image_store(settings: Settings) -> ImageStore:
    """The store every API process and worker of one deployment must agree on."""
    if settings.storage_url is None:
        return LocalImageStore(settings.resolved_images_dir)
    from app.storage.s3 import S3ImageStore  # boto3 only where object storage is configured

    bucket, prefix = parse_storage_url(settings.storage_url)
    return S3ImageStore(bucket, prefix, endpoint_url=settings.s3_endpoint_url)
