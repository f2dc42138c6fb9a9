"""img2img inputs given as URLs: fetched with the same guard as webhooks (app.webhooks.targets).

The host is resolved once and every address it resolves to must be public (unless the operator
allows private ones for development); the connection goes to the checked address (the name
stays in Host and SNI), follows no redirect, reads no proxy settings, and stops reading at the
upload limit, so a URL can neither reach inside the deployment nor make the API buffer more than
an uploaded image could be.
"""

from __future__ import annotations

import httpx

from app.errors import InvalidRequest, PayloadTooLarge
from app.generation.uploads import MAX_UPLOAD_BYTES
from app.webhooks.targets import TargetRefused, resolve

USER_AGENT = "ponyserve-image-fetch/1.0"


def is_url(value: str) -> bool:
    return value[:8].lower().startswith(("https://", "http://"))


async def fetch(url: str, *, param: str, allow_private: bool, timeout: float,
                max_bytes: int = MAX_UPLOAD_BYTES) -> bytes:
    """The bytes behind ``url``; a 400 naming ``param`` if it is refused or does not answer 200, 413 if too big."""
    if not allow_private and not url.lower().startswith("https://"):
        raise InvalidRequest(f"'{param}' must be an https:// URL.", code="invalid_image_url", param=param)
    try:
        target = await resolve(url, allow_private=allow_private)
    except TargetRefused as exc:
        raise InvalidRequest(f"'{param}' cannot be fetched: {exc}".replace("webhooks go", "images come"),
                             code="invalid_image_url", param=param) from None
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False,
                                     headers={"user-agent": USER_AGENT}) as client, \
                client.stream("GET", target.pinned_url, headers={"host": target.host_header},
                              extensions=extensions) as response:
            if response.status_code != 200:
                raise InvalidRequest(f"'{param}' answered HTTP {response.status_code}, not 200.",
                                     code="image_url_unavailable", param=param)
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > max_bytes:
                    raise PayloadTooLarge(f"'{param}' is larger than {max_bytes // (1024 * 1024)} MiB.", param=param)
            return bytes(data)
    except httpx.HTTPError as exc:
        raise InvalidRequest(f"'{param}' could not be fetched ({type(exc).__name__}).", code="image_url_unavailable",
                             param=param) from None
