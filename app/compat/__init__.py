"""AUTOMATIC1111-compatible endpoints (``/sdapi/v1/...``) over the native generation service."""
