"""Bearer-key authentication."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from fastapi import HTTPException, Request, status

SCHEME_NAME = "HTTPBearer"
SECURITY_SCHEME: dict[str, Any] = {
    "type": "http",
    "scheme": "bearer",
    "description": "An API key from API_KEYS.",
}


class KeyRing:
    """The accepted keys. A caller is known by a fingerprint of its key, never the key."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = [key.encode() for key in keys]

    def fingerprint_of(self, presented: str) -> str | None:
        candidate = presented.encode()
        match = False
        # Compare against every key, each in constant time, so timing tells nothing.
        for key in self._keys:
            match |= hmac.compare_digest(candidate, key)
        return fingerprint(presented) if match else None


def fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def authenticated_caller(request: Request) -> str:
    """The fingerprint of the key in ``Authorization: Bearer <key>``, or a 401.

    Read as FastAPI's ``HTTPBearer`` reads it (the scheme case-insensitive, the key
    after the first space, stripped). A plain function, not a dependency: the hot routes solve
    no dependencies (api_service.request_inputs says why).
    """
    header = request.headers.get("authorization")
    scheme, _, key = (header or "").partition(" ")
    key = key.strip()
    if not scheme or not key or scheme.lower() != "bearer":
        raise _unauthorized("Authorization: Bearer <api key> is required")
    keyring: KeyRing = request.app.state.keyring
    owner = keyring.fingerprint_of(key)
    if owner is None:
        raise _unauthorized("invalid API key")
    return owner


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=message,
        headers={"WWW-Authenticate": "Bearer"},
    )
