"""Bearer-key authentication: the ``CurrentCaller`` dependency's check (api_service.deps)."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import HTTPException, Request, status
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase

SCHEME_NAME = "HTTPBearer"


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


class BearerKey(SecurityBase):
    """``Authorization: Bearer <key>`` checked against API_KEYS: the caller's fingerprint,
    or a 401 with ``WWW-Authenticate: Bearer``.

    A security scheme (FastAPI documents it, and every route that depends on it, as HTTP
    bearer) that also checks the key, in one dependency: FastAPI's ``HTTPBearer`` under a
    dependency checking its credentials would be two (docs/design.md, "API"). The header
    is read as ``HTTPBearer`` reads it: the scheme case-insensitive, the key after the
    first space, stripped.
    """

    def __init__(self) -> None:
        self.model = HTTPBearerModel(description="An API key from API_KEYS.")
        self.scheme_name = SCHEME_NAME

    async def __call__(self, request: Request) -> str:
        header = request.headers.get("authorization")
        scheme, _, key = (header or "").partition(" ")
        key = key.strip()
        if not scheme or not key or scheme.lower() != "bearer":
            raise _unauthorized("Authorization: Bearer <api key> is required")
        keyring: KeyRing = request.app.state.services.keyring
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
