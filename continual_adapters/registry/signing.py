"""Optional HMAC signatures over the registry fields that a person could otherwise rewrite.

A bundle's sha256 protects the file, but it lives in a row: whoever can edit the database can
replace a bundle and its recorded hash together, or edit a recorded score and its predictions
hash. With a key kept outside the registry (environment variable ``CADAPT_REGISTRY_KEY``), the
registry signs each task's critical fields with HMAC-SHA256 whenever they change, and
verification recomputes the signature. Without the key nothing is signed or checked.

The functions here are pure: the caller collects the fields, this module only fixes their
canonical byte form and the MAC, so the same fields always give the same signature on any
database backend.
"""

import hashlib
import hmac
import json
import os
from typing import Any

from continual_adapters.core.errors import ConfigError

KEY_ENV = "CADAPT_REGISTRY_KEY"
MIN_KEY_CHARS = 16
# Bound into every MAC so a signature made for something else can never pass as a task's.
DOMAIN = "cadapt-registry-task-v1"


def registry_key() -> bytes | None:
    """The key from the environment, or None; a short key is refused rather than silently weak."""
    value = os.environ.get(KEY_ENV)
    if not value:
        return None
    if len(value) < MIN_KEY_CHARS:
        raise ConfigError(f"{KEY_ENV} must be at least {MIN_KEY_CHARS} characters")
    return value.encode("utf-8")


def canonical(fields: dict[str, Any]) -> bytes:
    """Sorted keys, no whitespace, ASCII only: the bytes a JSON round trip through any database gives back."""
    return json.dumps(
        {"domain": DOMAIN, "fields": fields}, sort_keys=True, separators=(",", ":"), ensure_ascii=True
    ).encode("ascii")


def sign(key: bytes, fields: dict[str, Any]) -> str:
    return hmac.new(key, canonical(fields), hashlib.sha256).hexdigest()


def verify(key: bytes, fields: dict[str, Any], signature: str | None) -> bool:
    """Constant-time comparison, so a forger learns nothing from how long a rejection took."""
    return signature is not None and hmac.compare_digest(sign(key, fields), signature)
